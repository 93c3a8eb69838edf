"""Per-CPU readers of per_cpu/cpuN/trace_pipe_raw that keep up and do not waste pages.

Each read returns one ring-buffer sub-buffer page (header + records).  Reading a page the
kernel is still writing copies it out partially filled: read eagerly and a trace becomes
mostly empty pages; read lazily and the writer overruns the reader.  So a reader reads back
to back while pages come out full, and sleeps a moment after a partial page (the buffer is
sized for many seconds of the busiest load, so the pause cannot overrun it).  Pages go
straight to a per-CPU file; nothing accumulates in memory.
"""
from __future__ import annotations

import errno
import os
import struct
import threading
import time
from dataclasses import dataclass, field

IDLE_SLEEP = 0.1      # after an empty or partial page
COMMIT_MASK = (1 << 27) - 1


@dataclass
class CpuReader:
    cpu: int
    src: str                      # .../per_cpu/cpuN/trace_pipe_raw
    out_fd: int                   # raw pages are appended here
    page_size: int
    commit_off: int = 8
    commit_size: int = 8
    data_off: int = 16
    pages: int = 0
    partial: int = 0
    nbytes: int = 0
    error: str | None = None
    cpu_seconds: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._fd = os.open(self.src, os.O_RDONLY | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._run, name=f"cpu{self.cpu}-reader", daemon=True)
        self._thread.start()

    def _fill(self, page: bytes) -> int:
        """Bytes of records in the page (its commit), from the page header."""
        fmt = "<Q" if self.commit_size == 8 else "<I"
        return struct.unpack_from(fmt, page, self.commit_off)[0] & COMMIT_MASK

    def _read_one(self) -> bytes | None:
        try:
            b = os.read(self._fd, self.page_size)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EINTR):
                return None
            raise
        return b or None

    def _store(self, page: bytes) -> None:
        if len(page) < self.page_size:          # keep the file a whole number of pages
            page = page + b"\0" * (self.page_size - len(page))
        os.write(self.out_fd, page)
        self.pages += 1
        self.nbytes += len(page)

    def _run(self) -> None:
        t0 = time.thread_time()
        full = self.page_size - self.data_off
        try:
            while not self._stop.is_set():
                page = self._read_one()
                if page is None:
                    self._stop.wait(IDLE_SLEEP)
                    continue
                self._store(page)
                if self._fill(page) < full // 2:
                    self.partial += 1
                    self._stop.wait(IDLE_SLEEP)
        except OSError as e:
            self.error = f"cpu{self.cpu}: read {self.src}: {e.strerror}"
        finally:
            self.cpu_seconds += time.thread_time() - t0

    def stop_and_drain(self) -> None:
        """Stop the loop, then read what is left (tracing is already off)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        t0 = time.thread_time()
        try:
            for _ in range(1 << 24):
                page = self._read_one()
                if page is None:
                    break
                self._store(page)
        except OSError as e:
            self.error = self.error or f"cpu{self.cpu}: read {self.src}: {e.strerror}"
        finally:
            self.cpu_seconds += time.thread_time() - t0
            os.close(self._fd)
