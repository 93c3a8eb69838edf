"""One recording, start to bundle: checks, set-up, workload, tear-down, snapshots, manifest.

Order matters for the guarantees:
* all checks (root, tracefs, nobody tracing, output directory new) come before the first
  change, so a refusal leaves nothing behind;
* the kernel's state is restored in a `finally` (errors and Ctrl-C included) right after the
  readers stop, before anything slow (writing trace.dat, hashing);
* Ctrl-C (SIGINT) or SIGTERM ends the recording early, not the program: the bundle is still
  completed and says `interrupted`; a second Ctrl-C during the write is ignored;
* the workload runs in its own process group, which is stopped on every exit path.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CollectError
from . import bundle_out, events, perfrec, snapshots, tracedat_out
from .pages import CpuReader
from .tracing import RecordRefused, Session

DEFAULT_BUFFER_MB = 32          # per CPU; 2 CPUs at the busiest page churn seen here fill it in > 4 s


@dataclass
class Options:
    out: Path
    duration: float | None = None
    command: list[str] = field(default_factory=list)
    backend: str = "tracefs"
    buffer_mb: int = DEFAULT_BUFFER_MB
    probes: list[events.Probe] | None = None      # None: the default ground-truth probes


class _Interrupt:
    """SIGINT/SIGTERM set a flag instead of killing us mid-write."""

    def __init__(self) -> None:
        self.hit = threading.Event()
        self.signal: str | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> _Interrupt:  # noqa: PYI034
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, _frame: object) -> None:
        self.signal = signal.Signals(signum).name
        self.hit.set()

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)  # type: ignore[arg-type]


def online_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if not os.path.exists("/sys/devices/system/cpu/online") else \
        _parse_cpulist(Path("/sys/devices/system/cpu/online").read_text())


def _parse_cpulist(text: str) -> list[int]:
    out: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def make_outdir(out: Path) -> int:
    """Create the bundle directory (must not exist; never through a symlink); return its fd."""
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise RecordRefused(f"mtaudit record: {parent}: no such directory; nothing changed")
    try:
        os.mkdir(out, 0o700)
    except FileExistsError:
        raise RecordRefused(f"mtaudit record: {out} already exists; choose a new directory; nothing changed") \
            from None
    except OSError as e:
        raise RecordRefused(f"mtaudit record: cannot create {out}: {e.strerror}; nothing changed") from None
    return os.open(out, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)


def _start_workload(cmd: list[str]) -> subprocess.Popen:
    try:
        return subprocess.Popen(cmd, start_new_session=True)
    except OSError as e:
        raise CollectError(f"cannot run {cmd[0]}: {e.strerror}") from None


def _stop_group(p: subprocess.Popen | None) -> None:
    """Stop the workload's whole process group (TERM, then KILL after 5 s)."""
    if p is None:
        return
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            break
        try:
            p.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        try:
            os.killpg(p.pid, 0)       # children of the leader may still run
        except ProcessLookupError:
            break
    if p.poll() is None:
        p.wait()


def _wait(o: Options, work: subprocess.Popen | None, intr: _Interrupt, say) -> tuple[str, int | None]:
    """Until the workload exits, the duration passes, or Ctrl-C: returns (why, workload exit code)."""
    t_end = time.monotonic() + o.duration if o.duration else None
    while True:
        if intr.hit.is_set():
            return f"interrupted ({intr.signal})", None
        if work is not None and work.poll() is not None:
            return "workload exited", work.returncode
        if t_end is not None and time.monotonic() >= t_end:
            return "duration reached", None
        intr.hit.wait(0.05)


def record(o: Options, say) -> tuple[Path, dict]:
    """Run one recording; returns (bundle dir, manifest)."""
    if o.backend not in ("tracefs", "perf"):
        raise RecordRefused(f"mtaudit record: unknown backend {o.backend!r}")
    if o.buffer_mb < 1 or o.buffer_mb > 4096:
        raise RecordRefused("mtaudit record: --buffer-mb must be 1..4096")
    if o.backend == "perf":
        perfrec.perf_binary()
    sess = Session.open(need_tracefs=True)    # checks root, tracefs, in-use; may mount
    try:
        dfd = make_outdir(o.out)
    except BaseException:
        sess.close()
        raise
    started = bundle_out.utcnow()
    cpus = online_cpus()
    log: list[str] = []

    def note(msg: str) -> None:
        log.append(f"{time.strftime('%H:%M:%S')} {msg}")
        say(msg)

    info: dict = {"backend": o.backend, "buffer_kb_per_cpu": o.buffer_mb * 1024, "cpus": cpus,
                  "tracefs": sess.root, "tracefs_mounted_by_us": sess.mounted}
    work = None
    readers: list[CpuReader] = []
    perf_p = None
    raw_files: list[str] = []
    why, rc = "not started", None
    restore_problems: list[str] = []
    enabled: list[str] = []
    probes_used: list[events.Probe] = []
    stats_start = stats_end = ""
    t_on = t_off = 0.0
    meta_bytes: bytes | None = None
    meta_error: str | None = None
    cpu0 = os.times()
    error: Exception | None = None
    with _Interrupt() as intr:
        try:
            info["start"] = snapshots.take(dfd, "start")
            if o.backend == "tracefs":
                inst = sess.make_instance()
                wanted = o.probes if o.probes is not None else default_probes_if_possible()
                probes_used = sess.install_probes(wanted)
                enabled = events.available_events(os.path.join(inst, "events"))
                enabled += [p.event for p in probes_used if os.path.isdir(os.path.join(inst, "events", p.group,
                                                                                           p.name))]
                if not enabled:
                    raise CollectError("none of the page-allocator events exists on this kernel")
                sess.enable(enabled, probes_used, o.buffer_mb * 1024)
                page_size = os.sysconf("SC_PAGE_SIZE")
                for c in cpus:
                    name = f".cpu{c}.raw"
                    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
                    raw_files.append(str(o.out / name))
                    r = CpuReader(c, os.path.join(inst, "per_cpu", f"cpu{c}", "trace_pipe_raw"), fd, page_size)
                    r.start()
                    readers.append(r)
                stats_start = snapshots.stats_text(os.path.join(inst, "per_cpu"), cpus)
                sess.tracing_on(True)
            else:
                root = sess.root
                enabled = events.available_events(os.path.join(root, "events"))
                logfd = os.open("perf-record.log", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644,
                                dir_fd=dfd)
                perf_p = perfrec.start(str(o.out / "perf.data"), enabled, o.buffer_mb, logfd)
                os.close(logfd)
                _wait_for_perf(o.out / "perf.data", perf_p)
            t_on = time.monotonic()
            note(f"recording {len(enabled)} events ({o.backend}) on CPUs {','.join(map(str, cpus))}")
            if o.command:
                work = _start_workload(o.command)
                note(f"workload pid {work.pid}: {' '.join(o.command)}")
            why, rc = _wait(o, work, intr, say)
            note(why)
        except Exception as e:  # noqa: BLE001  (any failure: still restore, still write a failed bundle)
            error = e
            why = "failed"
            note(f"error: {e}")
        finally:
            _stop_group(work)
            if perf_p is not None:
                prc, perf_cpu = perfrec.stop(perf_p)
                info["perf_exit"], info["perf_cpu_s"] = prc, round(perf_cpu, 3)
            if o.backend == "tracefs" and sess.instance:
                try:
                    sess.tracing_on(False)
                except OSError:
                    pass
                t_off = time.monotonic()
                for r in readers:
                    r.stop_and_drain()
                    os.close(r.out_fd)
                try:
                    stats_end = snapshots.stats_text(os.path.join(sess.inst, "per_cpu"), cpus)
                    if readers:      # the formats etc. come from the instance: read before it goes
                        meta_bytes = tracedat_out.metadata(sess.root, sess.inst, enabled, readers[0].page_size,
                                                           len(cpus), _stats_by_cpu(stats_end))
                except OSError as e:
                    meta_error = f"reading the trace metadata: {e.strerror}"
            restore_problems = sess.close()
            if not t_off:
                t_off = time.monotonic()
        cpu1 = os.times()
        for p in restore_problems:
            note(f"warning: {p}")
        info["end"] = snapshots.take(dfd, "end")
        info["recording_s"] = round(t_off - t_on, 3) if t_on else 0.0
        # the recorder's own CPU time (its reader threads included), plus perf's for that backend
        info["recorder_cpu_s"] = round((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
                                       + info.get("perf_cpu_s", 0.0), 3)
        info["restore_problems"] = restore_problems
        failure = f"{error}" if error is not None else None
        if o.backend == "tracefs":
            info["readers"] = [{"cpu": r.cpu, "pages": r.pages, "partial_pages": r.partial,
                                "cpu_s": round(r.cpu_seconds, 3)} for r in readers]
            errs = [r.error for r in readers if r.error] + ([meta_error] if meta_error else [])
            failure = "; ".join(([failure] if failure else []) + errs) or None
            snapshots.write_new(dfd, "stats-start.txt", stats_start)
            snapshots.write_new(dfd, "stats-end.txt", stats_end)
            if readers and meta_bytes is not None:
                tracedat_out.write(str(o.out / "trace.dat"), meta_bytes, raw_files, readers[0].page_size)
            elif failure is None:
                failure = "no trace was recorded"
            else:
                failure += "; no trace.dat written"
            for name in raw_files:
                os.unlink(name)
        else:
            if failure is None and not (o.out / "perf.data").exists():
                failure = f"perf record exited {info.get('perf_exit')} and wrote no perf.data (see perf-record.log)"
            elif failure is None and "perf_exit" in info and not perfrec.finished_file(info["perf_exit"]):
                failure = (f"perf record exited {info['perf_exit']} before finishing perf.data (its header is "
                           f"incomplete; see perf-record.log)")
        manifest = bundle_out.finish(o.out, dfd, o, info, started, enabled, probes_used, sess, why, rc, failure,
                                     stats_start, stats_end, log)
        os.close(dfd)
    if error is not None:
        raise CollectError(f"{error} (failed bundle: {o.out})") from None
    return o.out, manifest


def default_probes_if_possible() -> list[events.Probe]:
    """The default probes when the kernel could take them (symbol present)."""
    return [p for p in events.default_probes() if events.have_symbol(p.symbol)]


def _wait_for_perf(path: Path, p: subprocess.Popen, timeout: float = 15.0) -> None:
    """perf writes its header once every event is open: wait for it (or its early death)."""
    t = time.monotonic() + timeout
    while time.monotonic() < t:
        if p.poll() is not None:
            raise CollectError(f"perf record exited {p.returncode} at start (see perf-record.log)")
        if path.exists() and path.stat().st_size > 0:
            time.sleep(0.3)
            return
        time.sleep(0.05)
    raise CollectError("perf record did not start within 15 s")


def _stats_by_cpu(text: str) -> dict[int, str]:
    out: dict[int, str] = {}
    cur = None
    for line in text.splitlines(keepends=True):
        if line.startswith("== "):
            cur = int(line.rstrip().rsplit("cpu", 1)[1])
            out[cur] = ""
        elif cur is not None:
            out[cur] += line
    return out
