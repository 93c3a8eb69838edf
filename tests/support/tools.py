"""`requires_tool`: the one way a test says it needs an external program (see tests/conftest.py)."""
from __future__ import annotations

import os
import shutil
from typing import Iterable

import pytest


def missing_tools(names: Iterable[str]) -> list[str]:
    """The names that are neither on PATH nor an executable absolute path."""
    out = []
    for n in names:
        ok = os.access(n, os.X_OK) if os.path.isabs(n) else shutil.which(n) is not None
        if not ok:
            out.append(n)
    return out


def requires_tool(*names: str) -> pytest.MarkDecorator:
    """Mark a test (or, as `pytestmark`, a module) as needing these programs."""
    return pytest.mark.requires_tool(*names)
