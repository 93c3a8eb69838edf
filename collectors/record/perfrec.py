"""The perf backend: `perf record -a` of the same tracepoints into the bundle's perf.data.

perf_event_open leaves tracefs alone (no set_event, no buffer sizes), so this backend
changes no tracing state at all.  Buffers: `-m` pages per CPU from --buffer-mb.  Lost
events come from the file itself (PERF_RECORD_LOST, and the kernel's per-event counters
perf stores as LOST_SAMPLES), read back with the native reader.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

from ..errors import ToolMissingError


def perf_binary() -> str:
    p = shutil.which("perf")
    if p is None:
        raise ToolMissingError("mtaudit record --backend perf: perf is not installed (Debian: linux-perf)")
    return p


def start(out_path: str, events: list[str], buffer_mb: int, log_fd: int) -> subprocess.Popen:
    """Start `perf record -a` system-wide (stops on SIGINT and writes a complete file)."""
    pages = 1 << max(0, (buffer_mb * 1024 * 1024 // os.sysconf("SC_PAGE_SIZE")).bit_length() - 1)
    # -B/-N: no build-ids.  Tracepoint samples need none, and collecting them is a pass over the
    # whole file after SIGINT: on a 9.2 GB (100 M-sample) recording it outlasted stop()'s wait,
    # perf was killed and left a header that says "data size 0".
    argv = [perf_binary(), "record", "-a", "-B", "-N", "-m", str(pages), "-o", out_path]
    for ev in events:
        argv += ["-e", ev]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, start_new_session=True)


KILLED = -9     # stop()'s status when perf had to be killed: its perf.data is incomplete


def finished_file(status: int) -> bool:
    """Did perf exit on its own after SIGINT (0, or the SIGINT it re-raises)?  Else the file is not whole."""
    return status in (0, -signal.SIGINT)


def stop(p: subprocess.Popen, timeout: float = 600.0) -> tuple[int, float]:
    """SIGINT (perf finishes the file), then wait; SIGKILL only if it hangs.

    perf writes its buffers and the header after SIGINT, which takes longer the bigger the
    file: the wait is generous.  Returns (exit status, CPU seconds perf used, from its rusage:
    the recorder's cost)."""
    if p.poll() is not None:
        return p.returncode, 0.0
    try:
        p.send_signal(signal.SIGINT)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return p.returncode, ru.ru_utime + ru.ru_stime
        if time.monotonic() > deadline:
            p.kill()
            deadline = time.monotonic() + 30
        time.sleep(0.05)
