"""Reading a capture's files: text snapshots (refusing binary data) and `.tar.zst` archives."""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile

from ..bundle import CaptureError


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CaptureError(f"{path}: {e.strerror or e}") from None
    if b"\0" in data[:4096]:
        raise CaptureError(f"{path}: binary data where a text snapshot was expected")
    return data.decode("utf-8", "replace")


def _extract_archive(path: str) -> tuple[str, str]:
    """Extract a .tar.zst into a temp dir; return (tempdir, capture dir inside it)."""
    import zstandard
    tmp = tempfile.mkdtemp(prefix="mtaudit-capture-")
    try:
        with open(path, "rb") as f:
            reader = zstandard.ZstdDecompressor().stream_reader(f)
            with tarfile.open(fileobj=reader, mode="r|") as tf:
                tf.extractall(tmp, filter="data")
    except (zstandard.ZstdError, tarfile.TarError, OSError, EOFError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CaptureError(f"{path}: not a readable .tar.zst capture: {e}") from None
    for root, _dirs, files in os.walk(tmp):
        if "trace.dat" in files:
            return tmp, root
    shutil.rmtree(tmp, ignore_errors=True)
    raise CaptureError(f"{path}: archive holds no trace.dat")
