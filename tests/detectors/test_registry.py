"""The detector registry is the one place a detector's id, order, severity, plot marker and
needed events live: every report reads it, so S6 and A1 show up everywhere S1..S5 do."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from analyzer.detectors import ALL, MODEL_WARNING, missing_events, report_order
from analyzer.detectors.registry import DetectorInfo, FindingKind
from analyzer.report import html as rhtml, plots


def test_report_order_and_markers_cover_every_detector():
    assert report_order() == ["S1", "S1a", "S1b", "S2", "S3", "S4", "S5", "S6", "A1", "MW"]
    marks = plots.detector_markers()
    assert list(marks) == ["S1a", "S1b", "S2", "S3", "S4", "S5", "S6", "A1", "MW"]
    assert len(set(marks.values())) == len(marks)              # one shape per finding id
    assert [m.INFO.order for m in ALL] == sorted(m.INFO.order for m in ALL)


def test_declarations_are_checked():
    with pytest.raises(ValueError, match="severity"):
        DetectorInfo(id="X", meaning="m", kernels="all", severity="urgent", order=1,
                     findings=(FindingKind("X", "o"),))
    with pytest.raises(ValueError, match="no finding ids"):
        DetectorInfo(id="X", meaning="m", kernels="all", severity="high", order=1, findings=())


def test_needed_events_are_typed_data():
    """A detector's needs are the declared tuple, not a module attribute looked up by name."""
    s1 = next(m for m in ALL if m.INFO.id == "S1")
    s3 = next(m for m in ALL if m.INFO.id == "S3")
    a1 = next(m for m in ALL if m.INFO.id == "A1")

    class _Model:
        events = {"mm_page_alloc": pa.table({"x": [1]})}
    assert missing_events(s1, _Model()) == ["mm_page_pcpu_drain"]
    assert missing_events(s3, _Model()) == [" or ".join(s3.INFO.needs_any)]
    assert missing_events(a1, _Model()) == [] and a1.INFO.status_without_input == "no snapshots"


class _An:
    """The parts of an Analysis the comparison table and the timeline read."""

    def __init__(self, dets: list[str]) -> None:
        self.detectors = pd.DataFrame({"id": [m.INFO.id for m in ALL] + [MODEL_WARNING.id],
                                       "applies": True, "count": 0,
                                       "severity": [m.INFO.severity for m in ALL] + ["info"]})
        n = len(dets)
        self.findings = pd.DataFrame({"detector": dets, "block": np.arange(n) + 100,
                                      "ts": np.arange(n) * 10 + 5, "pfn": (np.arange(n) + 100) << 9})


def test_html_comparison_lists_s6_and_a1_in_registry_order():
    a, b = _An(["S6", "A1", "S1a"]), _An(["X9", "S1b"])
    ids = rhtml.comparison_ids(rhtml._count_map(a), rhtml._count_map(b))
    assert ids == ["S1", "S1a", "S1b", "S2", "S3", "S4", "S5", "S6", "A1", "MW", "X9"]


def test_help_is_generated_from_the_registry():
    p = subprocess.run([sys.executable, "-m", "analyzer.cli", "analyze", "--help"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0
    flat = "".join(p.stdout.split())                    # argparse wraps lines (also at hyphens)
    for m in ALL:
        assert "".join(f"{m.INFO.id} {m.INFO.meaning}".split()) in flat
    p = subprocess.run([sys.executable, "-m", "analyzer.cli", "--version"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and p.stdout.startswith("mtaudit ")
