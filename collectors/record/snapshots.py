"""The /proc and boot-log snapshots the analyzer reads, taken at the start and the end.

zoneinfo and pagetypeinfo are read back to back (pagetypeinfo, zoneinfo, pagetypeinfo) and
the pair is retaken when the two pagetypeinfo reads differ, so the free counts they hold
were read while pages did not move (at most a few tries; the manifest says whether they
agreed).  Files are created new inside the bundle directory (never through a symlink).
"""
from __future__ import annotations

import gzip
import os
import platform
import subprocess

PROC = {"zoneinfo": "/proc/zoneinfo", "pagetypeinfo": "/proc/pagetypeinfo", "meminfo": "/proc/meminfo",
        "buddyinfo": "/proc/buddyinfo"}
TRIES = 5


def write_new(dfd: int, name: str, data: bytes | str) -> None:
    """Create `name` in the directory `dfd` (fails if it exists or is a symlink)."""
    if isinstance(data, str):
        data = data.encode()
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dfd)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def dmesg() -> str:
    """The kernel log as `dmesg` prints it (CMA reservations, zone ranges)."""
    try:
        r = subprocess.run(["dmesg"], capture_output=True, text=True, errors="replace", timeout=30, check=False)
        if r.returncode == 0:
            return r.stdout
    except (OSError, subprocess.TimeoutExpired):
        pass
    return ""


def kernel_config() -> tuple[str, str | None]:
    """(config text, where it came from): /proc/config.gz, else /boot/config-RELEASE."""
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            return f.read(), "/proc/config.gz"
    except OSError:
        pass
    p = f"/boot/config-{platform.release()}"
    text = _read(p)
    return (text, p) if text else ("", None)


def uname_a() -> str:
    u = platform.uname()
    return f"{u.system} {u.node} {u.release} {u.version} {u.machine} GNU/Linux\n"


def memory_pair() -> tuple[str, str, bool]:
    """(zoneinfo, pagetypeinfo, agreed): read so that no page moved between the two reads."""
    zi = pti = ""
    for _ in range(TRIES):
        a = _read(PROC["pagetypeinfo"])
        zi = _read(PROC["zoneinfo"])
        pti = _read(PROC["pagetypeinfo"])
        if a == pti:
            return zi, pti, True
    return zi, pti, False


def take(dfd: int, when: str) -> dict:
    """Write the `when` ("start" / "end") snapshots; returns what the manifest records."""
    zi, pti, agreed = memory_pair()
    write_new(dfd, f"zoneinfo-{when}.txt", zi)
    write_new(dfd, f"pagetypeinfo-{when}.txt", pti)
    for name in ("meminfo", "buddyinfo"):
        write_new(dfd, f"{name}-{when}.txt", _read(PROC[name]))
    write_new(dfd, f"dmesg-{when}.txt", dmesg())
    info: dict[str, object] = {"zoneinfo_pagetypeinfo_agree": agreed}
    if when == "start":
        write_new(dfd, "uname.txt", uname_a())
        write_new(dfd, "cmdline.txt", _read("/proc/cmdline"))
        cfg, src = kernel_config()
        if cfg:
            write_new(dfd, "config.txt", cfg)
        info["config_source"] = src
    return info


def stats_text(per_cpu_dir: str, cpus: list[int]) -> str:
    """per_cpu/cpuN/stats with the `== path` headers the bundle's stats parser reads."""
    out = []
    for c in cpus:
        d = os.path.join(per_cpu_dir, f"cpu{c}")
        out.append(f"== {d}\n{_read(os.path.join(d, 'stats'))}")
    return "".join(out)
