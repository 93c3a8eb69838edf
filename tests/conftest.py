"""Skips that would hide a broken CI setup are failures under MTAUDIT_REQUIRE_TOOLS=1.

`scripts/setup --test` installs every tool the tests use (trace-cmd, QEMU, chromium, cpio, ...),
so in `scripts/test` (which sets MTAUDIT_REQUIRE_TOOLS=1) a test skipped because a tool or a
build product is missing means the setup is broken: it fails instead of leaving CI green.
Skips for real reasons (a native arm64 host, one host core, the numpy pass) stay skips.
"""
from __future__ import annotations

import os
import re

import pytest

MISSING = re.compile(r"not installed|not built|not found|needs (?:qemu|trace-cmd|cpio|chromium|perf)", re.I)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.skipped or os.environ.get("MTAUDIT_REQUIRE_TOOLS") != "1":
        return
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    if MISSING.search(reason) and not (os.environ.get("MTAUDIT_NO_CEXT") and "not built" in reason):
        rep.outcome = "failed"
        rep.longrepr = f"skipped for a missing tool under MTAUDIT_REQUIRE_TOOLS=1 (scripts/setup --test " \
                       f"installs it): {reason}"
