"""Content-addressed cache under ~/.cache/mtaudit (or $MTAUDIT_CACHE, $XDG_CACHE_HOME/mtaudit).

Entries are written atomically and keyed by a hash of their inputs, so several runs (or several
users of one cache) can share it; an exclusive flock guards the slow steps that mutate state.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path
from typing import Iterator

from analyzer.bundle import sha256_file  # noqa: F401 -- re-exported: the cache and the bundles hash alike


def cache_root() -> Path:
    env = os.environ.get("MTAUDIT_CACHE")
    if env:
        root = Path(env)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = Path(xdg) / "mtaudit"
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on `path` (created if needed) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
