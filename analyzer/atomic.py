"""Atomic output: write to a temp name in the same directory, then rename.

A crash or Ctrl-C never leaves a half-written file or directory that looks complete.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str, mode: str = "wb") -> Iterator:
    d = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=d)
    try:
        # mkstemp makes 0600 files; outputs are ordinary files, so honour the umask instead.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str) -> Iterator[str]:
    """Yield a temp directory; on success it replaces `path` (old content removed)."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=parent)
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if os.path.exists(path):
            old = path + ".old-" + str(os.getpid())
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
