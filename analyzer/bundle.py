"""The capture bundle (docs/contracts.md §1): its file names, manifest, stats and trace check.

The one definition of the format, used by `mtaudit collect` (which writes bundles), the
analyzer (which reads them, analyzer/capture/) and the regression harness.  A bundle is
assembled in a temp directory next to its final path and renamed into place only when
complete; a failed run still gets renamed, but with status "failed", the reason and the logs,
so nothing half-written ever looks like a good capture.

Per-CPU counts are keyed "cpuN" everywhere (manifest, memory, JSON), like the ring buffer's
per_cpu/cpuN directories; a hand-written manifest may say "N", read as "cpuN".
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyzer.atomic import atomic_file
from analyzer.errors import MtauditError
from analyzer.readers.tracedat_header import MAGIC as TRACEDAT_MAGIC

SCHEMA_VERSION = 1            # of manifest.json; a reader refuses any other (docs/contracts.md §1)

TRACE = "trace.dat"
PERF_TRACE = "perf.data"      # `mtaudit record --backend perf` keeps perf.data in place of trace.dat
MANIFEST = "manifest.json"
STATS = "stats-end.txt"
# /proc snapshots and the like, read by the analyzer when present (all optional)
SNAPSHOTS = ("uname.txt", "cmdline.txt", "dmesg-start.txt", "dmesg-end.txt", "dmesg-cma.txt",
             "zoneinfo-start.txt", "zoneinfo-end.txt", "pagetypeinfo-start.txt",
             "pagetypeinfo-end.txt", STATS)
TEXT_FILES = SNAPSHOTS + (MANIFEST,)
# a user's own directory may hold single snapshots without -start/-end: read them as "end"
# (taken after the trace, the usual habit); a boot log without suffix is a boot log
ALIASES = {"pagetypeinfo.txt": "pagetypeinfo-end.txt", "zoneinfo.txt": "zoneinfo-end.txt",
           "dmesg.txt": "dmesg-start.txt", "dmesg.log": "dmesg-start.txt"}
# what a bundle written by `mtaudit collect` with status "ok" always holds
EXPECTED = (TRACE, MANIFEST, "uname.txt", "cmdline.txt", "dmesg-start.txt",
            "dmesg-end.txt", "zoneinfo-start.txt", "zoneinfo-end.txt", "pagetypeinfo-start.txt",
            "pagetypeinfo-end.txt", STATS, "console.log")
# manifest keys every collected bundle has (validate() reports the missing ones)
MANIFEST_KEYS = ("schema_version", "status", "failure", "kernel", "cmdline", "scenario", "qemu",
                 "started", "finished", "lost_events", "guest_exit", "console_problems", "files")


class CaptureError(MtauditError):
    """A capture directory/archive or one of its metadata files is unusable."""


def sha256_file(path: str | os.PathLike, bufsize: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (bundle traces can be hundreds of MiB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def is_trace_dat(path: str | os.PathLike) -> bool:
    """True when `path` starts with trace-cmd's magic (reads its first 10 bytes, not the trace)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(TRACEDAT_MAGIC)) == TRACEDAT_MAGIC
    except OSError:
        return False


# ----------------------------------------------------------------------------- stats
_STATS_HEAD = re.compile(r"^==\s*\S*?cpu(\d+)(?:/stats)?\s*$")   # == .../per_cpu/cpuN[/stats]
_LOST_KEYS = ("overrun", "commit overrun", "dropped events")


def cpu_key(cpu: int | str) -> str:
    """The one spelling of a per-CPU key: "cpuN" (accepts N, "N" or "cpuN")."""
    s = str(cpu)
    return s if s.startswith("cpu") else f"cpu{int(s)}"


def _by_cpu(d: dict[str, int]) -> dict[str, int]:
    return dict(sorted(d.items(), key=lambda kv: int(kv[0][3:])))


def parse_stats(text: str, path: str) -> dict[str, dict[str, int]]:
    """per_cpu/cpu*/stats blocks, each under a `== .../cpuN` header (stats-end.txt) ->
    {"cpuN": {"entries": n, "overrun": n, ...}}: every integer counter, by CPU number.

    The counters that say events were lost must be numbers under a header; anything else
    that is not an integer (timestamps like "oldest event ts") is not a counter and is skipped.
    """
    out: dict[str, dict[str, int]] = {}
    cur: dict[str, int] | None = None
    for ln, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        if m := _STATS_HEAD.match(s):
            cur = out.setdefault(cpu_key(m[1]), {})
            continue
        key, sep, val = s.partition(":")
        if not sep or not re.fullmatch(r"[a-z ]+", key):
            continue
        try:
            n = int(val.strip())
        except ValueError:
            if key in _LOST_KEYS:
                raise CaptureError(f"{path}: line {ln}: bad count {val.strip()!r}") from None
            continue
        if cur is None:
            if key in _LOST_KEYS:
                raise CaptureError(f"{path}: line {ln}: '{key}' before any '== .../cpuN' header")
            continue
        cur[key] = n
    return dict(sorted(out.items(), key=lambda kv: int(kv[0][3:])))


def lost_events(stats: dict[str, dict[str, int]]) -> dict[str, int]:
    """Events the ring buffer lost per CPU: overwritten (overrun) + commit overrun + dropped."""
    return {cpu: sum(v.get(k, 0) for k in _LOST_KEYS) for cpu, v in stats.items()}


# ----------------------------------------------------------------------------- manifest
@dataclass
class Manifest:
    """manifest.json, typed.  The informational keys (kprobe, events, guest_packages, timings,
    collector, ...) travel in `extra`, in the order they were given."""
    status: str = "ok"                          # "ok" | "failed"
    failure: str | None = None
    kernel: dict[str, Any] = field(default_factory=dict)
    cmdline: str | None = None
    scenario: dict[str, Any] = field(default_factory=dict)
    qemu: dict[str, Any] = field(default_factory=dict)
    started: str | None = None
    finished: str | None = None
    lost_events: dict[str, int] = field(default_factory=dict)   # "cpuN" -> events lost
    guest_exit: int | None = None
    console_problems: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)         # name -> sha256
    schema_version: int = SCHEMA_VERSION

    _TYPED = ("status", "failure", "kernel", "cmdline", "scenario", "qemu", "started", "finished",
              "lost_events", "guest_exit", "console_problems")

    def get(self, key: str, default: Any = None) -> Any:
        """A key of the JSON object, typed fields and informational ones alike (`collector`,
        `timings`, ...), for code that only reads one optional key."""
        return self.to_dict().get(key, default)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, keys in the contract's order (files last)."""
        out: dict[str, Any] = {"schema_version": self.schema_version}
        out.update({k: getattr(self, k) for k in self._TYPED})
        out.update(self.extra)
        out["files"] = dict(self.files)
        return out

    @classmethod
    def from_dict(cls, d: object, path: str) -> "Manifest":
        """Check and type a parsed manifest.json; one CaptureError line naming `path` otherwise."""
        if not isinstance(d, dict):
            raise CaptureError(f"{path}: bad JSON: top level is not an object")
        ver = d.get("schema_version")
        if ver is None:
            raise CaptureError(f"{path}: no schema_version (this mtaudit reads manifest "
                               f"schema_version {SCHEMA_VERSION})")
        if ver != SCHEMA_VERSION:
            raise CaptureError(f"{path}: manifest schema_version {ver!r}; this mtaudit reads "
                               f"{SCHEMA_VERSION} only")
        kinds: dict[str, type | tuple[type, ...]] = {
            "status": str, "failure": (str, type(None)), "kernel": dict, "cmdline": (str, type(None)),
            "scenario": dict, "qemu": dict, "started": (str, type(None)), "finished": (str, type(None)),
            "lost_events": dict, "guest_exit": (int, type(None)), "console_problems": list, "files": dict}
        for k, t in kinds.items():
            if k in d and d[k] is not None and not isinstance(d[k], t):
                raise CaptureError(f"{path}: manifest key {k} has the wrong type "
                                   f"({type(d[k]).__name__})")
        try:
            lost = _by_cpu({cpu_key(k): int(v) for k, v in (d.get("lost_events") or {}).items()})
        except (TypeError, ValueError):
            raise CaptureError(f"{path}: manifest lost_events is not {{cpuN: count}}") from None
        known = set(cls._TYPED) | {"schema_version", "files"}
        return cls(status=d.get("status") or "ok", failure=d.get("failure"),
                   kernel=dict(d.get("kernel") or {}), cmdline=d.get("cmdline"),
                   scenario=dict(d.get("scenario") or {}), qemu=dict(d.get("qemu") or {}),
                   started=d.get("started"), finished=d.get("finished"), lost_events=lost,
                   guest_exit=d.get("guest_exit"), console_problems=list(d.get("console_problems") or []),
                   extra={k: v for k, v in d.items() if k not in known},
                   files=dict(d.get("files") or {}), schema_version=ver)


def parse_manifest(text: str, path: str) -> Manifest:
    try:
        d = json.loads(text)
    except ValueError as e:
        raise CaptureError(f"{path}: bad JSON: {e}") from None
    return Manifest.from_dict(d, path)


def read_manifest(bundle: str | os.PathLike) -> Manifest | None:
    """The bundle directory's manifest, checked; None when it has none (a user's own directory)."""
    p = Path(bundle) / MANIFEST
    if not p.is_file():
        return None
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise CaptureError(f"{p}: unreadable: {e}") from None
    return parse_manifest(text, str(p))


def utcnow() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def file_hashes(d: Path) -> dict[str, str]:
    out = {}
    for p in sorted(d.rglob("*")):
        if p.is_file() and p.name != "manifest.json":
            out[str(p.relative_to(d))] = sha256_file(p)
    return out


def write_manifest(d: Path, manifest: Manifest) -> Manifest:
    """Hash every file of the bundle into the manifest and write it atomically (files last)."""
    manifest.files = file_hashes(d)
    with atomic_file(str(d / MANIFEST), "w") as f:
        json.dump(manifest.to_dict(), f, indent=1, sort_keys=False)
        f.write("\n")
    return manifest


def validate(d: Path) -> list[str]:
    """Problems with a bundle directory (empty list = complete and consistent)."""
    probs = []
    mf = d / MANIFEST
    if not mf.exists():
        return ["manifest.json missing"]
    m = json.loads(mf.read_text())
    try:
        Manifest.from_dict(m, str(mf))
    except CaptureError as e:
        probs.append(str(e))
    for k in MANIFEST_KEYS:
        if k not in m:
            probs.append(f"manifest key {k} missing")
    if m.get("status") == "ok":
        for f in EXPECTED:
            if not (d / f).exists():
                probs.append(f"{f} missing")
    for name, digest in m.get("files", {}).items():
        p = d / name
        if not p.exists():
            probs.append(f"{name} listed but missing")
        elif sha256_file(p) != digest:
            probs.append(f"{name} sha256 mismatch")
    return probs


def pack(d: Path) -> Path:
    """DIR -> DIR.tar.zst (deterministic member order), written atomically."""
    import zstandard
    out = d.with_name(d.name + ".tar.zst")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for p in sorted(d.rglob("*")):
            ti = tar.gettarinfo(str(p), arcname=f"{d.name}/{p.relative_to(d)}")
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            if p.is_file():
                with open(p, "rb") as f:
                    tar.addfile(ti, f)
            else:
                tar.addfile(ti)
    with atomic_file(str(out), "wb") as f:
        f.write(zstandard.ZstdCompressor(level=10).compress(buf.getvalue()))
    return out


def move_guest_files(share: Path, dest: Path) -> None:
    """Guest output (9p share) -> bundle root; names are the guest's, a few are ours."""
    for p in sorted(share.iterdir()):
        target = dest / p.name
        if p.name in ("manifest.json", "console.log"):
            target = dest / f"guest-{p.name}"
        os.replace(p, target)


def make_readable(d: Path) -> None:
    """mkdtemp/mkstemp create 0700/0600; a bundle is meant to be shared."""
    os.chmod(d, 0o755)
    for p in d.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
