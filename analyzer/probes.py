"""The ground-truth kprobes: ONE definition of which probes to install on a kernel.

Why one definition: the guest /init (collector), the live recorder and the model must agree on
what a probe record means.  The probes are chosen from the symbols the kernel actually has
(/proc/kallsyms), never from a version number, because the writer functions are compiler
artefacts (inlining, `.constprop.N` clones) that a version does not pin down.

Two schemes exist (analyzer/kernels.py has the boundary and its commit):

* "mask" (up to 6.16): every pageblock flag write goes through the global
  `set_pfnblock_flags_mask(page, flags, pfn, mask)`; migratetype writes are those with
  `mask == 7` (mask 8 is compaction's skip bit).  Isolation is a write of MIGRATE_ISOLATE.
* "isolate-bit" (from 6.17): migratetype writes go through the static
  `__set_pfnblock_flags_mask`, which GCC emits as the clone `__set_pfnblock_flags_mask.constprop.N`
  taking (pfn, flags), or un-cloned with (page, pfn, flags, mask); `flags & 0x10` is the isolate
  bit set in the same write (memory hot-add).  Isolation is a separate pageblock bit (bit 4)
  set/cleared by `set_pfnblock_bit` / `clear_pfnblock_bit(page, pfn, bit)`; bit 3 is
  compaction's skip bit, so those probes are filtered to `bit == 4`.  Their pfn may be any pfn
  inside the block (readers align it down).

`choose()` is the Python side (the live recorder); `shell_chooser()` renders the same table as a
POSIX-sh function for the guest /init, which has no Python (written into the initramfs as
mtaudit/probes.sh).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

SCHEME_MASK = "mask"
SCHEME_ISOLATE_BIT = "isolate-bit"
ISOLATE_BIT = 4                 # PB_migrate_isolate
ISOLATE_FLAG = 1 << ISOLATE_BIT  # the isolate bit inside a (pfn, flags) write
MIGRATETYPE_MASK = 7
# The marker line /init writes into the trace when the probes are live (the model's "live from").
MARKER = "pb/setmt kprobe active"

# Argument registers of the first four integer arguments (entry of the function).
ARG_REGS = {
    "aarch64": ("%x0", "%x1", "%x2", "%x3"),
    "x86_64": ("%di", "%si", "%dx", "%cx"),
}
_ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64"}

OLD_SYMBOL = "set_pfnblock_flags_mask"
NEW_SYMBOL = "__set_pfnblock_flags_mask"
CLONE_RE = r"__set_pfnblock_flags_mask\.(constprop|isra)\.[0-9]+"
BIT_SYMBOLS = ("set_pfnblock_bit", "clear_pfnblock_bit")


@dataclass(frozen=True)
class Probe:
    """One kprobe event: `p:<event> <symbol> <args>` plus its filter (None: every call counts)."""

    event: str          # "pb/setmt"
    symbol: str
    args: tuple[tuple[str, int, str], ...]   # (field name, argument index, fetch type)
    filter: str | None
    role: str           # "migratetype" | "isolate-set" | "isolate-clear"

    def definition(self, arch: str) -> str:
        regs = ARG_REGS[_norm(arch)]
        fetch = " ".join(f"{name}={regs[i]}:{typ}" for name, i, typ in self.args)
        return f"p:{self.event} {self.symbol} {fetch}"

    def as_dict(self, arch: str) -> dict:
        return {"event": self.event, "symbol": self.symbol, "definition": self.definition(arch),
                "filter": self.filter, "role": self.role}


@dataclass(frozen=True)
class Plan:
    """The probes for one kernel, or why there are none."""

    scheme: str | None
    probes: tuple[Probe, ...]
    reason: str = ""

    def __bool__(self) -> bool:
        return bool(self.probes)


def _norm(arch: str) -> str:
    a = _ARCH_ALIASES.get(arch, arch)
    if a not in ARG_REGS:
        raise ValueError(f"no kprobe argument registers known for architecture {arch!r}")
    return a


# -- the table ------------------------------------------------------------------------------
def old_probes() -> tuple[Probe, ...]:
    return (Probe("pb/setmt", OLD_SYMBOL, (("page", 0, "x64"), ("flags", 1, "u64"), ("pfn", 2, "x64"),
                                           ("mask", 3, "u64")), "mask == 7", "migratetype"),)


def new_probes(setmt_symbol: str) -> tuple[Probe, ...]:
    if setmt_symbol == NEW_SYMBOL:        # un-cloned: (page, pfn, flags, mask); mask is 0x17 (or 7)
        setmt = Probe("pb/setmt", setmt_symbol, (("page", 0, "x64"), ("pfn", 1, "x64"), ("flags", 2, "x64"),
                                                 ("mask", 3, "x64")), None, "migratetype")
    else:                                 # GCC clone with page and mask dropped: (pfn, flags)
        setmt = Probe("pb/setmt", setmt_symbol, (("pfn", 0, "x64"), ("flags", 1, "x64")), None, "migratetype")
    bit = (("pfn", 1, "x64"), ("bit", 2, "u32"))  # (page, pfn, pb_bit); the enum is 32-bit
    return (setmt,
            Probe("pb/setiso", "set_pfnblock_bit", bit, f"bit == {ISOLATE_BIT}", "isolate-set"),
            Probe("pb/clriso", "clear_pfnblock_bit", bit, f"bit == {ISOLATE_BIT}", "isolate-clear"))


def kallsyms_names(text: str) -> set[str]:
    """Symbol names of a /proc/kallsyms text (addresses and module tags ignored)."""
    out = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            out.add(parts[2])
    return out


def choose(names: Iterable[str]) -> Plan:
    """The probes this kernel's symbols allow (the same decision probes.sh makes)."""
    names = set(names)
    if OLD_SYMBOL in names:
        return Plan(SCHEME_MASK, old_probes())
    clones = sorted(n for n in names if re.fullmatch(CLONE_RE, n))
    setmt = NEW_SYMBOL if NEW_SYMBOL in names else (clones[0] if clones else None)
    if setmt and all(s in names for s in BIT_SYMBOLS):
        return Plan(SCHEME_ISOLATE_BIT, new_probes(setmt))
    missing = [OLD_SYMBOL] if not setmt else [s for s in BIT_SYMBOLS if s not in names]
    return Plan(None, (), f"no ground-truth probe: {', '.join(missing)} not in /proc/kallsyms "
                          f"(neither {OLD_SYMBOL} nor {NEW_SYMBOL}[.constprop.N] with set/clear_pfnblock_bit)")


# -- the guest's copy -------------------------------------------------------------------------
def _sh_lines(probes: tuple[Probe, ...], arch: str, sym_var: str | None = None) -> list[str]:
    out = []
    for p in probes:
        d = p.definition(arch)
        if sym_var and p.role == "migratetype":
            d = d.replace(f" {p.symbol} ", f" ${sym_var} ", 1)
        out.append(f'    echo "{d}|{p.filter or ""}|{p.role}"')
    return out


def shell_chooser() -> str:
    """probes.sh: `pb_choose ARCH KALLSYMS` prints `DEFINITION|FILTER|ROLE` lines (none: no probe).

    Generated from the table above, so the guest and the Python side cannot drift apart."""
    lines = ["# Generated by analyzer/probes.py (shell_chooser): edit the table there, not here.",
             "# pb_choose ARCH KALLSYMS -> one 'DEFINITION|FILTER|ROLE' line per ground-truth probe.",
             "pb_choose() {", '  case "$1" in']
    for arch in ARG_REGS:
        lines.append(f"  {arch})")
        lines.append(f"    if grep -q ' {OLD_SYMBOL}$' \"$2\"; then")
        lines += ["  " + x for x in _sh_lines(old_probes(), arch)]
        lines.append("      return 0")
        lines.append("    fi")
        lines.append(f"    grep -q ' {BIT_SYMBOLS[0]}$' \"$2\" && grep -q ' {BIT_SYMBOLS[1]}$' \"$2\" || return 0")
        lines.append(f"    if grep -q ' {NEW_SYMBOL}$' \"$2\"; then")
        lines += ["  " + x for x in _sh_lines(new_probes(NEW_SYMBOL), arch)]
        lines.append("      return 0")
        lines.append("    fi")
        lines.append(f"    PB_SYM=$(awk '$3 ~ /^{CLONE_RE}$/ {{print $3}}' \"$2\" | sort | head -n 1)")
        lines.append('    [ -n "$PB_SYM" ] || return 0')
        lines += _sh_lines(new_probes("PB_CLONE"), arch, sym_var="PB_SYM")
        lines.append("    ;;")
    lines += ["  esac", "}", ""]
    return "\n".join(lines)
