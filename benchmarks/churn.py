"""Page-allocator churn that stops when the recording has reached a size (the scale benchmark's workload).

    python3 benchmarks/churn.py GLOB BYTES [NPROC] [MAX_SECONDS]

NPROC workers each map, touch and unmap 64 MiB in a loop: one order-0 allocation and one
free per 4 KiB page, which is what the page-allocator tracepoints count.  The parent polls
the total size of the files matching GLOB (the recorder's per-CPU raw files, or perf.data)
and stops the workers once it reaches BYTES, so a capture of about N events is recorded
without knowing the machine's event rate in advance.  Standard library only: it runs as the
recorder's workload, outside the package.
"""
from __future__ import annotations

import glob
import mmap
import os
import signal
import sys
import time

MAP = 64 << 20


def churn() -> None:
    """Map, touch every page, unmap, forever (killed by the parent)."""
    while True:
        m = mmap.mmap(-1, MAP)
        for off in range(0, MAP, 4096):
            m[off] = 1
        m.close()


def size_of(pattern: str) -> int:
    total = 0
    for p in glob.glob(pattern):
        try:
            total += os.path.getsize(p)
        except OSError:      # a file can vanish between glob and stat
            pass
    return total


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    pattern, target = argv[0], int(float(argv[1]))
    nproc = int(argv[2]) if len(argv) > 2 else 2
    max_s = float(argv[3]) if len(argv) > 3 else 3600.0
    kids = []
    for _ in range(nproc):
        pid = os.fork()
        if pid == 0:
            try:
                churn()
            finally:
                os._exit(0)
        kids.append(pid)
    t0 = time.monotonic()
    n = 0
    try:
        while time.monotonic() - t0 < max_s:
            n = size_of(pattern)
            if n >= target:
                break
            time.sleep(0.5)
    finally:
        for k in kids:
            os.kill(k, signal.SIGKILL)
            os.waitpid(k, 0)
    print(f"churn: {time.monotonic() - t0:.1f} s, {n:,} bytes recorded", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
