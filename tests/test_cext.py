"""The C extensions load by one rule (analyzer/cext.py): MTAUDIT_NO_CEXT=1 disables them,
MTAUDIT_REQUIRE_CEXT=1 (CI) makes a missing one an error instead of a silent numpy fallback."""
from __future__ import annotations

import pytest

from analyzer import cext

pytestmark = pytest.mark.cext   # run again on the numpy paths (scripts/test)


def test_require_turns_a_missing_extension_into_an_error(monkeypatch):
    monkeypatch.delenv("MTAUDIT_NO_CEXT", raising=False)
    monkeypatch.delenv("MTAUDIT_REQUIRE_CEXT", raising=False)
    assert cext.load("analyzer.no_such_extension") is None            # optional: numpy path
    monkeypatch.setenv("MTAUDIT_REQUIRE_CEXT", "1")
    with pytest.raises(cext.MissingExtension, match="analyzer.no_such_extension"):
        cext.load("analyzer.no_such_extension")
    monkeypatch.setenv("MTAUDIT_NO_CEXT", "1")                         # explicitly disabled wins
    assert cext.load("analyzer.model._pair") is None and not cext.required()


def test_extensions_in_use_match_the_environment():
    """Under MTAUDIT_REQUIRE_CEXT=1 both are loaded; under MTAUDIT_NO_CEXT=1 neither is."""
    import os

    from analyzer.model import pcp, timeline
    from analyzer.readers import perfdata_walk, tracedat_pages
    mods = (pcp._cpair, timeline._cpair, tracedat_pages._cwalk, perfdata_walk._cwalk)
    if os.environ.get("MTAUDIT_NO_CEXT"):
        assert mods == (None, None, None, None)
    elif cext.required():
        assert all(m is not None for m in mods)
        assert {m.__name__ for m in mods} == {"analyzer.model._pair", "analyzer.readers._walk",
                                              "analyzer.readers._perfwalk"}
    else:
        pytest.skip("neither MTAUDIT_REQUIRE_CEXT=1 nor MTAUDIT_NO_CEXT=1: either state is allowed")
