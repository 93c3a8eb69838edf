"""The capture bundle (docs/contracts.md §1): files laid out like the corpus + manifest.json.

A bundle is assembled in a temp directory next to its final path and renamed into place only
when complete; a failed run still gets renamed, but with status "failed", the reason and the
logs, so nothing half-written ever looks like a good capture.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import re
import tarfile
from pathlib import Path

from analyzer.atomic import atomic_file


def sha256_file(path: str | os.PathLike, bufsize: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (bundle traces can be hundreds of MiB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


SCHEMA_VERSION = 1
EXPECTED = ("trace.dat", "manifest.json", "uname.txt", "cmdline.txt", "dmesg-start.txt",
            "dmesg-end.txt", "zoneinfo-start.txt", "zoneinfo-end.txt", "pagetypeinfo-start.txt",
            "pagetypeinfo-end.txt", "stats-end.txt", "console.log")


def utcnow() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_stats(text: str) -> dict[str, dict[str, int]]:
    """`== .../cpuN` + per_cpu stats blocks -> {cpuN: {entries, overrun, commit overrun, dropped events}}."""
    out: dict[str, dict[str, int]] = {}
    cur = None
    for line in text.splitlines():
        m = re.match(r"^==\s+\S*?(cpu\d+)", line)
        if m:
            cur = out.setdefault(m.group(1), {})
            continue
        m = re.match(r"^([a-z ]+):\s+(\d+)\s*$", line)
        if cur is not None and m:
            cur[m.group(1)] = int(m.group(2))
    return out


def lost_events(stats: dict[str, dict[str, int]]) -> dict[str, int]:
    """Events the ring buffer lost per CPU: overwritten (overrun) + commit overrun + dropped."""
    return {cpu: v.get("overrun", 0) + v.get("commit overrun", 0) + v.get("dropped events", 0)
            for cpu, v in sorted(stats.items(), key=lambda kv: int(kv[0][3:]))}


def file_hashes(d: Path) -> dict[str, str]:
    out = {}
    for p in sorted(d.rglob("*")):
        if p.is_file() and p.name != "manifest.json":
            out[str(p.relative_to(d))] = sha256_file(p)
    return out


def write_manifest(d: Path, manifest: dict) -> dict:
    manifest = dict(manifest)
    manifest["files"] = file_hashes(d)
    with atomic_file(str(d / "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=False)
        f.write("\n")
    return manifest


def validate(d: Path) -> list[str]:
    """Problems with a bundle directory (empty list = complete and consistent)."""
    probs = []
    mf = d / "manifest.json"
    if not mf.exists():
        return ["manifest.json missing"]
    m = json.loads(mf.read_text())
    for k in ("schema_version", "status", "failure", "kernel", "cmdline", "scenario", "qemu",
              "started", "finished", "lost_events", "guest_exit", "console_problems", "files"):
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
