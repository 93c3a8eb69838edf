"""Kernel configuration for `build:` specs: base config + shipped fragment + user fragment.

kconfig silently drops a requested option whose dependencies are not met (9P_FS without INET,
KPROBES without MODULES...), and the build then succeeds with a kernel that cannot capture
anything.  So every line asked for is compared with the final .config, and each dropped option
is named with the `depends on` of its Kconfig entry and which of those symbols are off.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import CollectError

KCONFIG_DIR = Path(__file__).resolve().parents[2] / "qemu" / "kconfig"
# Debian arch -> (shipped fragment, kernel ARCH=, image target, image path under O=)
ARCH_BUILD = {
    "amd64": ("x86_64.config", "x86", "bzImage", "arch/x86/boot/bzImage"),
    "arm64": ("arm64.config", "arm64", "Image", "arch/arm64/boot/Image"),
}
BASES = ("tinyconfig", "defconfig")


class KconfigError(CollectError):
    """A requested option did not survive olddefconfig, or a fragment/base cannot be read."""


@dataclass(frozen=True)
class ConfigPlan:
    """What the .config is made from; `digest` keys the build dir and the image cache."""

    arch: str
    base: str                     # tinyconfig | defconfig | absolute path of a .config
    fragments: tuple[Path, ...]   # shipped fragment first, then the user's
    digest: str

    def requested(self) -> dict[str, str]:
        """{SYMBOL: value} asked for by the fragments, later fragments winning ("n" = not set)."""
        out: dict[str, str] = {}
        for f in self.fragments:
            out.update(parse_fragment(f.read_text(errors="replace")))
        return out


def parse_fragment(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*CONFIG_([A-Za-z0-9_]+)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip().strip('"')
            continue
        m = re.match(r"^\s*#\s*CONFIG_([A-Za-z0-9_]+) is not set", line)
        if m:
            out[m.group(1)] = "n"
    return out


def plan(arch: str, base: str, user_fragment: str) -> ConfigPlan:
    """Resolve the base and fragments to files and hash their contents (not their names)."""
    shipped = KCONFIG_DIR / ARCH_BUILD[arch][0]
    frags = [shipped]
    if user_fragment:
        uf = Path(user_fragment).expanduser().resolve()
        if not uf.is_file():
            raise KconfigError(f"config fragment {user_fragment} does not exist")
        if not parse_fragment(uf.read_text(errors="replace")):
            raise KconfigError(f"config fragment {uf}: no CONFIG_X=... or '# CONFIG_X is not set' lines")
        frags.append(uf)
    h = hashlib.sha256()
    if base in BASES:
        h.update(b"base:" + base.encode() + b"\0")
        base_id = base
    else:
        bf = Path(base).expanduser().resolve()
        if not bf.is_file():
            raise KconfigError(f"base config {base} does not exist (base=tinyconfig|defconfig|FILE)")
        h.update(b"basefile:" + bf.read_bytes() + b"\0")
        base_id = str(bf)
    for f in frags:
        h.update(b"frag:" + f.read_bytes() + b"\0")
    h.update(b"arch:" + arch.encode())
    return ConfigPlan(arch=arch, base=base_id, fragments=tuple(frags), digest=h.hexdigest())


def fragment_text(p: ConfigPlan) -> str:
    """The merged request as one text (for the manifest and the image cache entry)."""
    return "".join(f"# --- {f.name}\n" + f.read_text(errors="replace") for f in p.fragments)


def dropped(requested: dict[str, str], final: dict[str, str]) -> dict[str, tuple[str, str]]:
    """{SYMBOL: (asked, got)} for every requested value the final .config does not have."""
    out = {}
    for sym, want in requested.items():
        got = final.get(sym, "n")
        if want != got:
            out[sym] = (want, got)
    return out


# -- Kconfig lookup ------------------------------------------------------------------------
_ENTRY = re.compile(r"^\s*(?:menu)?config\s+([A-Za-z0-9_]+)\s*$")
_ATTR_END = re.compile(r"^\s*(?:(?:menu)?config|choice|endchoice|menu|endmenu|if|endif|source|comment)\b")


def kconfig_depends(srctree: Path, karch: str, symbols: set[str]) -> dict[str, list[str]]:
    """{SYMBOL: ["A && B", ...]} from the `depends on` lines of each symbol's Kconfig entries.

    Only the entry's own lines are read (not the enclosing menu/if); entries under other
    architectures' arch/ directories are skipped."""
    out: dict[str, list[str]] = {s: [] for s in symbols}
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(srctree):
        rel = os.path.relpath(dirpath, srctree)
        if rel == "arch":
            dirnames[:] = [d for d in dirnames if d == karch]
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in ("Documentation", "tools")]
        for fn in filenames:
            if not fn.startswith("Kconfig"):
                continue
            try:
                lines = open(os.path.join(dirpath, fn), encoding="utf-8", errors="replace").read().splitlines()
            except OSError:
                continue
            cur: str | None = None
            for line in lines:
                m = _ENTRY.match(line)
                if m:
                    cur = m.group(1) if m.group(1) in symbols else None
                    if cur:
                        found.add(cur)
                    continue
                if cur is None:
                    continue
                if _ATTR_END.match(line) or re.match(r"^\s*(?:---)?help(?:---)?\s*$", line):
                    cur = None          # help text may say "depends on" too
                    continue
                d = re.match(r"^\s*depends\s+on\s+(.*?)\s*(?:#.*)?$", line)
                if d and d.group(1) not in out[cur]:
                    out[cur].append(d.group(1))
    return {s: v for s, v in out.items() if s in found} | {s: ["<no such symbol>"] for s in symbols - found}


def unmet(expr: str, final: dict[str, str]) -> list[str]:
    """Symbols of a `depends on` expression whose state works against it: `X` that is off,
    `!X` that is on ("X=n", "X=y")."""
    out = []
    for neg, name in re.findall(r"(!?)\s*\b([A-Z][A-Z0-9_]*[A-Z0-9])\b", expr):
        val = final.get(name, "n") or "n"
        on = val not in ("n",)
        if (on and neg) or (not on and not neg):
            item = f"{name}={val}"
            if item not in out:
                out.append(item)
    return out


def explain_dropped(srctree: Path, karch: str, drops: dict[str, tuple[str, str]],
                    final: dict[str, str]) -> str:
    """One line: 'CONFIG_9P_FS=y is n (depends on NET && NET_9P; off: NET), ...'."""
    deps = kconfig_depends(srctree, karch, set(drops))
    parts = []
    for sym, (want, got) in drops.items():
        asked = f"CONFIG_{sym}=" + want if want != "n" else f"'# CONFIG_{sym} is not set'"
        d = deps.get(sym, [])
        if d == ["<no such symbol>"]:
            parts.append(f"{asked} (no such symbol in this kernel's Kconfig)")
            continue
        off = [u for e in d for u in unmet(e, final)]
        why = f"depends on {' && '.join(f'({e})' if '||' in e else e for e in d)}" if d \
            else "no 'depends on' of its own (check its menu/if block, `select`s or range)"
        if off:
            why += f"; off: {', '.join(dict.fromkeys(off))}"
        parts.append(f"{asked} became {got} ({why})")
    return "; ".join(parts)
