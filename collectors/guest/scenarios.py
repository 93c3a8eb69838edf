"""Scenarios: guest shell scripts in qemu/scenarios/ (or any file a user points at).

Each script starts with `# mtaudit: key=value ...` header lines the host reads to size the VM:
memory (MiB), smp, timeout (s of wall time for the scenario phase under TCG), buffer_mb (per-CPU
ring buffer), phases (for progress), cmdline (extra kernel parameters, repeatable),
requires (CONFIG_* the scenario needs besides the collector's own).
"""
from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CollectError

SCENARIO_DIR = Path(__file__).resolve().parents[2] / "qemu" / "scenarios"
DEFAULTS = {"memory": 1024, "smp": 2, "timeout": 300, "buffer_mb": 32, "phases": 0}


@dataclass
class Scenario:
    name: str
    path: Path
    text: bytes
    memory: int = 1024
    smp: int = 2
    timeout: int = 300
    buffer_mb: int = 32
    phases: int = 0
    cmdline: list[str] = field(default_factory=list)
    requires: list[str] = field(default_factory=list)
    builtin: bool = True

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text).hexdigest()


def available() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.sh"))


def load(name_or_path: str) -> Scenario:
    """A built-in scenario by name, or a script file by path (added to the initramfs per run)."""
    p = Path(name_or_path)
    builtin = False
    if "/" not in name_or_path and not name_or_path.endswith(".sh"):
        p = SCENARIO_DIR / f"{name_or_path}.sh"
        builtin = True
        if not p.is_file():
            raise CollectError(f"unknown scenario {name_or_path!r} (available: {', '.join(available())}; "
                               "or pass a path to a .sh script)")
    elif not p.is_file():
        raise CollectError(f"scenario script {p} does not exist")
    name = p.stem
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise CollectError(f"scenario name {name!r}: use letters, digits, '-', '_', '.'")
    text = p.read_bytes()
    sc = Scenario(name=name, path=p.resolve(), text=text, builtin=builtin)
    for line in text.decode(errors="replace").splitlines():
        m = re.match(r"^#\s*mtaudit:\s*(.*)$", line)
        if not m:
            continue
        for tok in shlex.split(m.group(1)):
            key, eq, val = tok.partition("=")
            if not eq:
                raise CollectError(f"{p}: header token {tok!r} is not key=value")
            if key in ("memory", "smp", "timeout", "buffer_mb", "phases"):
                try:
                    setattr(sc, key, int(val))
                except ValueError:
                    raise CollectError(f"{p}: {key}={val!r} is not an integer") from None
            elif key == "cmdline":
                sc.cmdline += val.split()
            elif key == "requires":
                sc.requires += [v for v in val.replace(",", " ").split() if v]
            else:
                raise CollectError(f"{p}: unknown header key {key!r}")
    return sc
