"""Shared test machinery: real fixtures analyzed once per run, and tools that must be there.

- `analyzed`: a session fixture, `analyzed("bundles/NAME")` -> the Analysis of fixtures/NAME,
  computed once for the whole run however many modules ask (real captures take seconds each).
- `@requires_tool("trace-cmd", ...)` (tests/support/tools.py): skips a test when a tool is
  missing, or fails it under MTAUDIT_REQUIRE_TOOLS=1 (scripts/test), where `scripts/setup --test`
  has installed every tool, so a missing one means the setup is broken, not that the test may
  pass silently.  Skips for real reasons (a native arm64 host, one host core, the numpy pass)
  stay plain skips.
- `-m cext` selects the tests of the code the C extensions speed up (scripts/test runs them
  again on the numpy paths).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest

from support.tools import missing_tools

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("requires_tool"):
        missing = missing_tools(mark.args)
        if not missing:
            continue
        msg = f"needs {', '.join(missing)} (not installed; scripts/setup --test installs it)"
        if os.environ.get("MTAUDIT_REQUIRE_TOOLS") == "1":
            pytest.fail(f"missing tool under MTAUDIT_REQUIRE_TOOLS=1: {msg}", pytrace=False)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def analyzed() -> Callable[[str], Any]:
    """fixtures-relative path -> its Analysis, each computed once per test run (read-only: share it)."""
    cache: dict[str, Any] = {}

    def get(rel: str) -> Any:
        if rel not in cache:
            from analyzer.analysis import analyze
            cache[rel] = analyze(str(FIXTURES / rel))
        return cache[rel]
    return get
