"""What to trace on this kernel: the collectors' event list and the ground-truth probes.

One definition for guest and host: the tracepoints are `collectors.collect.EVENTS`, the
set_pfnblock_flags_mask kprobe is the one the guest's /init creates (same group/name,
fetch args per architecture, filter `mask == 7`).  Another module may choose the probes
per kernel; it hands its list to `install_probes` (the seam), nothing else changes.
"""
from __future__ import annotations

import fnmatch
import os
import platform
from dataclasses import dataclass

from ..collect import EVENTS
from ..errors import CollectError
from ..guest.qemu import machine_profile

# machine profile (qemu/machines/NAME.json) of each `uname -m`: its kprobe_args are the fetch
# args of set_pfnblock_flags_mask(page, flags, pfn, mask) that collect's guests use
_PROFILE = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True)
class Probe:
    """One kprobe event: `p:GROUP/NAME SYMBOL ARGS`, enabled with FILTER."""

    group: str
    name: str
    symbol: str
    args: str
    filter: str = ""

    @property
    def event(self) -> str:
        return f"{self.group}:{self.name}"

    @property
    def definition(self) -> str:
        return f"p:{self.group}/{self.name} {self.symbol} {self.args}".strip()


def default_probes(machine: str | None = None) -> list[Probe]:
    """The ground-truth probe the guests use (pb/setmt on set_pfnblock_flags_mask, mask == 7)."""
    name = _PROFILE.get(machine or platform.machine())
    try:
        regs = machine_profile(name)["kprobe_args"] if name else None
    except (CollectError, KeyError):
        regs = None
    return [Probe("pb", "setmt", "set_pfnblock_flags_mask", regs, "mask == 7")] if regs else []


def have_symbol(symbol: str) -> bool:
    """Whether the kernel has `symbol` (kprobes need it; inlined functions are not there)."""
    try:
        with open("/proc/kallsyms") as f:
            return any(line.rstrip("\n").split(" ")[2:3] == [symbol] for line in f)
    except OSError:
        return False


def available_events(events_dir: str, wanted: tuple[str, ...] = EVENTS) -> list[str]:
    """The `system:event` names of `wanted` (globs allowed) that this kernel has, in order."""
    out: list[str] = []
    for w in wanted:
        system, _, name = w.partition(":")
        sdir = os.path.join(events_dir, system)
        if not os.path.isdir(sdir):
            continue
        for ev in sorted(os.listdir(sdir)):
            if fnmatch.fnmatchcase(ev, name) and os.path.isfile(os.path.join(sdir, ev, "format")):
                full = f"{system}:{ev}"
                if full not in out:
                    out.append(full)
    return out
