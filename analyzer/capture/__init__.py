"""Capture metadata: what the trace alone cannot tell the model.

A trace.dat has the page-allocator events but not the memory layout they happen
in: pageblock order, zone spans, where the CMA areas are, what /proc/pagetypeinfo
said before and after.  `load_capture()` reads those from a capture directory (the
bundle layout of docs/contracts.md section 1), a `.tar.zst` of one, or nothing at all
(a bare trace file), and records in `CaptureMeta.unknowns` everything it had to
assume, so the report can say how far the conclusions reach.
"""
from __future__ import annotations

from ..bundle import CaptureError
from .load import load_capture
from .meta import check_extents, guess_arch
from .parsers import parse_cma_override, parse_dmesg_cma, parse_dmesg_zones, parse_pagetypeinfo, parse_zoneinfo
from .schema import DEFAULT_PAGE_SIZE, DEFAULT_PAGEBLOCK_ORDER, MAX_SPAN_BLOCKS, PFN_LIMIT, CaptureMeta, PageTypeInfo

__all__ = ["CaptureError", "CaptureMeta", "PageTypeInfo", "DEFAULT_PAGE_SIZE", "DEFAULT_PAGEBLOCK_ORDER",
           "MAX_SPAN_BLOCKS", "PFN_LIMIT", "load_capture", "check_extents", "guess_arch", "parse_cma_override",
           "parse_dmesg_cma", "parse_dmesg_zones", "parse_pagetypeinfo", "parse_zoneinfo"]
