"""What each detector declares about itself, as typed data read by everyone else.

A detector module provides `INFO: DetectorInfo`, `applies(kernel)` and `detect(model, kernel)`.
The console, the JSON summary, the HTML report, the plots and `mtaudit --help` all read
`INFO` (through `analyzer.detectors.ALL`), so adding a detector is one module plus its
tests: nothing else keeps a copy of its id, order, severity, plot marker or needed events.
"""
from __future__ import annotations

from dataclasses import dataclass

SEVERITIES = ("critical", "high", "medium", "low", "info")


@dataclass(frozen=True)
class FindingKind:
    """One finding id a detector emits (S1 emits S1a and S1b) and its plot marker."""
    id: str
    marker: str                      # a matplotlib marker, distinct per finding id (no colour needed)


@dataclass(frozen=True)
class DetectorInfo:
    id: str
    meaning: str
    kernels: str                     # which kernels it is about, in words
    severity: str                    # one of SEVERITIES
    order: int                       # report order (console, JSON, HTML, legend)
    findings: tuple[FindingKind, ...]
    needs: tuple[str, ...] = ()      # model event short names it cannot work without
    needs_any: tuple[str, ...] = ()  # ... at least one of these
    # status when it ran but had nothing to check (A1 without /proc snapshots); None: "checked"
    status_without_input: str | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"detector {self.id}: severity {self.severity!r} not in {SEVERITIES}")
        if not self.findings:
            raise ValueError(f"detector {self.id}: declares no finding ids")


# Not a detector of the kernel: findings where the model is unsure (a live-type print disagrees
# with a block type the model only inferred or observed).  S1 emits them.
MODEL_WARNING = DetectorInfo(
    id="MW", meaning="model warning: a live-type print disagrees with a block type the "
                     "model only inferred or observed (the model missed a retype; not a kernel bug)",
    kernels="all", severity="info", order=1000, findings=(FindingKind("MW", "X"),))
