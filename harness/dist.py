"""`mtaudit regress --scheduler ADDR`: every guest run is a dask.distributed task.

A lab shares one regression: each run (collect of one kernel for one run index, then its
analysis) is submitted to a dask scheduler (`tcp://HOST:8786`, or `local` for a local cluster of
`--jobs` workers) and runs on whichever worker takes it.  The verdict is computed on the
submitting machine exactly as for a local regression.

Choices, and why:

* A worker runs `mtaudit collect` and `mtaudit analyze --json` as child processes, the same
  commands a person would run there: a crash or a leak stays in the child, and a cancelled
  regression can stop a guest (SIGTERM: collect kills its VM) -- a dask task thread itself
  cannot be interrupted.  The children die with their worker (parent-death signal), so a lost
  worker leaves no orphan QEMU behind to skew the retry's timing.
* Each worker resolves the kernels itself through the same SPEC (Debian apt, .deb URL, source
  build) into its own cache, once before any guest starts (`Client.run` on every worker; the
  cache is lock-guarded), so a worker needs QEMU and mtaudit installed but no shared storage.
  `path:` SPECs must name a path that exists on every worker.
* The bundle and the analysis JSON come back as bytes (a tar of the bundle, a few MB to a few
  hundred MB) into the submitting machine's `--out`: nothing assumes a shared filesystem, and
  `--out` then looks exactly as after a local regression.  With `--baseline-bundles` the
  bundles already exist: workers read them at the given (absolute) paths, as the fleet does,
  so they must be on storage every worker sees; only the analysis JSON travels back.
* A worker lost mid-run costs a retry, not the run: the scheduler reruns its task elsewhere
  (a local cluster allows one such retry, `analyzer.fleet.RETRIES`; an existing scheduler its
  `distributed.scheduler.allowed-failures`).  A run that fails (guest panic, timeout, analysis
  error) is a failed run as in a local regression, never retried.
* Guest CPUs are planned per worker host as locally: guest CPUs x the worker threads on a host
  <= that host's cores, lowered on both sides alike.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analyzer.atomic import atomic_dir, atomic_file
from analyzer.fleet import RETRIES, dask_available
from collectors.errors import CollectError

from . import regress
from .regress import Plan, Progress, Run

LOCAL = "local"
POLL_S = 0.5
STOP_GRACE_S = 60.0   # collect needs a moment to kill its VM and write the failed bundle


def require_dask(scheduler: str) -> None:
    """One clear line (exit 2) when --scheduler is given without dask.distributed."""
    if not dask_available():
        raise CollectError(f"--scheduler {scheduler}: dask.distributed is not installed "
                           "(pip install 'mtaudit[dist]'), or drop --scheduler to run here")


@contextmanager
def connect(scheduler: str, jobs: int) -> Iterator[Any]:
    """A Client on `scheduler` (tcp://HOST:PORT) or on a local cluster of `jobs` workers."""
    import dask
    from distributed import Client, LocalCluster
    cluster = None
    try:
        if scheduler == LOCAL:
            # a guest whose worker died is rerun once, like the fleet's tasks
            with dask.config.set({"distributed.scheduler.allowed-failures": RETRIES}):
                cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
            client = Client(cluster)
        else:
            try:
                client = Client(scheduler, timeout="20s")
            except OSError as e:
                raise CollectError(f"--scheduler {scheduler}: cannot connect: {e}") from None
        with client:
            try:
                client.wait_for_workers(1, timeout=60)
            except TimeoutError:
                raise CollectError(f"--scheduler {scheduler}: no worker joined within 60 s") from None
            yield client
    finally:
        if cluster is not None:
            cluster.close()


# ---------------------------------------------------------------------------------------------
# worker side

def _cancellable_run(argv: list[str], *, capture_output: bool = True, text: bool = True,
                     timeout: float | None = None, env: dict | None = None,
                     stopped: Callable[[], bool] = lambda: False,
                     on_line: Callable[[str], None] | None = None) -> subprocess.CompletedProcess:
    """subprocess.run that also stops (SIGTERM, then SIGKILL) when `stopped()` says so.

    The child gets the parent-death signal (setpriv, util-linux) so that a worker killed by
    the OOM killer or a lost machine's nanny takes its guest with it."""
    if shutil.which("setpriv"):
        argv = ["setpriv", "--pdeathsig", "TERM", "--", *argv]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out: list[str] = []
    err: list[str] = []

    def pump(stream, into: list[str], lines: bool) -> None:
        for ln in stream:
            into.append(ln)
            if lines and on_line:
                on_line(ln.rstrip("\n"))
    ts = [threading.Thread(target=pump, args=(p.stdout, out, False), daemon=True),
          threading.Thread(target=pump, args=(p.stderr, err, True), daemon=True)]
    for t in ts:
        t.start()
    t0 = time.monotonic()
    try:
        while p.poll() is None:
            if stopped() or (timeout is not None and time.monotonic() - t0 > timeout):
                p.terminate()
                try:
                    p.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                if not stopped():
                    raise subprocess.TimeoutExpired(argv, timeout or 0)
                break
            time.sleep(POLL_S)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for t in ts:
            t.join(5)
    return subprocess.CompletedProcess(argv, p.returncode, "".join(out), "".join(err))


@dataclass(frozen=True)
class GuestJob:
    """One guest run as a task: everything a worker needs, nothing that names the client's disk."""
    session: str
    label: str
    spec: str
    scenario: str
    name: str
    smp: int
    accel: str = "auto"
    arch: str | None = None
    memory: int | None = None
    timeout: float | None = None


@dataclass
class RemoteResult:
    """What a worker sends back: the bundle (a tar) and the analysis JSON as bytes."""
    label: str
    worker: str
    bundle_name: str | None = None
    bundle_tar: bytes | None = None
    analysis_json: bytes | None = None
    analysis_exit: int | None = None
    analysis_error: str | None = None
    collect_error: str | None = None
    collect_s: float = 0.0
    analyze_s: float = 0.0
    worker_bundle: str | None = None   # where the worker analyzed it (named in the analysis JSON)


class _Session:
    """The worker's view of the regression: progress out (a dask topic), cancellation in (an Event)."""

    def __init__(self, session: str, label: str):
        from distributed import Event, get_worker
        self.worker = get_worker()
        self.label = label
        self.topic = topic(session)
        self.event = Event(cancel_event(session))
        self.last = 0.0
        self.flag = False

    def say(self, msg: str) -> None:
        self.worker.log_event(self.topic, [self.label, f"{msg} [{self.worker.address}]"])

    def stopped(self) -> bool:
        now = time.monotonic()
        if not self.flag and now - self.last >= 1.0:
            self.last = now
            self.flag = bool(self.event.is_set())
        return self.flag


def topic(session: str) -> str:
    return f"mtaudit-regress-{session}"


def cancel_event(session: str) -> str:
    return f"mtaudit-regress-{session}-cancel"


def _collect_line(line: str) -> str | None:
    """A progress message from `mtaudit collect`'s plain stderr lines ("mtaudit collect: [ 1.2s] msg")."""
    if line.startswith("mtaudit collect: "):
        return line.split("] ", 1)[-1]
    return None


def guest_task(job: GuestJob) -> RemoteResult:
    """On a worker: collect one run into a private temp dir, analyze it, send both back."""
    s = _Session(job.session, job.label)
    res = RemoteResult(label=job.label, worker=s.worker.address, bundle_name=job.name)
    with tempfile.TemporaryDirectory(prefix="mtaudit-regress-") as td:
        out = Path(td)
        argv = [sys.executable, "-m", "analyzer.cli", "collect", "--kernel", job.spec,
                "--scenario", job.scenario, "--out", str(out / "bundles"), "--name", job.name,
                "--smp", str(job.smp), "--accel", job.accel]
        for flag, v in (("--arch", job.arch), ("--memory", job.memory), ("--timeout", job.timeout)):
            if v is not None:
                argv += [flag, str(v)]
        s.say("collecting")
        t0 = time.monotonic()

        def progress(line: str) -> None:
            msg = _collect_line(line)
            if msg:
                s.say(msg)
        p = _cancellable_run(argv, env=regress.cli_env(), stopped=s.stopped, on_line=progress)
        res.collect_s = round(time.monotonic() - t0, 2)
        if p.returncode != 0:
            lines = [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith("mtaudit collect: ")]
            last = lines[-1] if lines else f"mtaudit collect exited {p.returncode}"
            res.collect_error = last.removeprefix("mtaudit: ")
        bundle = out / "bundles" / job.name
        if s.stopped() or not bundle.is_dir():
            return res
        s.say("analyzing")
        res.worker_bundle = str(bundle)
        _analyze_into(res, bundle, out / "analysis.json", s)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(bundle, arcname=job.name)
        res.bundle_tar = buf.getvalue()
    return res


def _analyze_into(res: RemoteResult, bundle: Path, json_out: Path, s: _Session) -> None:
    def runner(argv: list[str], **kw: Any) -> subprocess.CompletedProcess:
        return _cancellable_run(argv, stopped=s.stopped, **kw)
    _doc, rc, err, dt = regress.analyze_bundle(bundle, json_out, runner=runner)
    res.analysis_exit, res.analysis_error, res.analyze_s = rc, err, round(dt, 2)
    if json_out.exists():
        res.analysis_json = json_out.read_bytes()


def analysis_task(session: str, label: str, bundle: str) -> RemoteResult:
    """On a worker: analyze a bundle it can read at `bundle` (shared storage); send the JSON back."""
    s = _Session(session, label)
    res = RemoteResult(label=label, worker=s.worker.address)
    with tempfile.TemporaryDirectory(prefix="mtaudit-regress-") as td:
        s.say("analyzing")
        _analyze_into(res, Path(bundle), Path(td) / "analysis.json", s)
    return res


def prefetch(specs: list[str], arch: str | None) -> dict[str, Any]:
    """On every worker before any guest starts: resolve each kernel SPEC into its cache."""
    from analyzer.errors import MtauditError
    from collectors.collect import resolve_kernel
    from collectors.guest.qemu import machine_profile, qemu_binary
    out: dict[str, Any] = {"cores": os.cpu_count() or 1}
    for spec in specs:
        t0 = time.monotonic()
        try:
            k = resolve_kernel(spec, arch, None)
            qemu_binary(machine_profile(k.arch))   # a worker without this QEMU says so now, not per run
        except MtauditError as e:
            out["error"] = str(e)
            return out
        out[spec] = round(time.monotonic() - t0, 2)
    return out


# ---------------------------------------------------------------------------------------------
# client side

def cluster_smp(client: Any, requested: int, cores: dict[str, int]) -> tuple[int, str | None]:
    """Guest CPUs for every run: regress.plan_smp on each worker host (its worker threads are
    the guests it runs at once), the smallest answer wins so both sides stay alike."""
    per_host: dict[str, list[int]] = {}
    for addr, w in client.scheduler_info(n_workers=-1)["workers"].items():
        h = per_host.setdefault(w.get("host") or addr, [0, 1])
        h[0] += int(w.get("nthreads") or 1)
        h[1] = max(h[1], cores.get(addr, 1))
    smp, notes = requested, []
    for host, (threads, ncores) in sorted(per_host.items()):
        try:
            s, note = regress.plan_smp(requested, threads, ncores)
        except CollectError as e:
            raise CollectError(f"worker host {host}: {e} (its workers run {threads} guests at once)") from None
        if s < smp:
            smp = s
            notes.append(f"{host}: {note}")
    return smp, ("; ".join(notes) or None)


def _land(run: Run, r: RemoteResult, out: Path) -> None:
    """Put a worker's bundle and analysis JSON into `out` as a local run would have left them."""
    run.worker = r.worker
    run.collect_error = r.collect_error
    run.timings["collect_s"] = r.collect_s
    if r.bundle_tar is not None and r.bundle_name:
        dest = out / "bundles" / r.bundle_name
        with atomic_dir(str(dest)) as tmp:
            with tarfile.open(fileobj=io.BytesIO(r.bundle_tar)) as tar:
                tar.extractall(tmp, filter="data")
            inner = Path(tmp) / r.bundle_name
            for k in inner.iterdir():
                k.rename(Path(tmp) / k.name)
            inner.rmdir()
        run.bundle = dest
        run.manifest = regress.read_manifest(dest)
        run.timings.update({k: v for k, v in (run.manifest.get("timings") or {}).items()})
    _land_analysis(run, r, out)


def _land_analysis(run: Run, r: RemoteResult, out: Path) -> None:
    run.worker = r.worker
    if run.bundle is None:
        run.analysis_error = "no bundle"
        return
    run.timings["analyze_s"] = r.analyze_s
    run.analysis_exit, run.analysis_error = r.analysis_exit, r.analysis_error
    if run.analysis_error and r.worker_bundle:   # name the landed bundle, not the worker's temp dir
        run.analysis_error = run.analysis_error.replace(r.worker_bundle, str(run.bundle))
    if r.analysis_json is not None and r.analysis_error is None:
        doc = json.loads(r.analysis_json)
        data = r.analysis_json
        cap = doc.get("capture")
        if r.worker_bundle and isinstance(cap, dict) and cap.get("source") == r.worker_bundle:
            # the worker's temp dir is gone: name the bundle where it now is, as a local run does
            cap["source"] = str(run.bundle)
            data = (json.dumps(doc, indent=1, sort_keys=False) + "\n").encode()   # as `analyze --json`
        with atomic_file(str(out / "analysis" / f"{run.label}.json"), "wb") as f:
            f.write(data)
        run.analysis = doc


def _worker_failed(run: Run, e: BaseException) -> None:
    """A task the cluster gave up on (its workers died more often than allowed): a failed run."""
    run.collect_error = f"worker failed: {type(e).__name__}: {e}"
    run.analysis_error = run.analysis_error or "no bundle"


def _gather(client: Any, session: str, futs: dict[Any, Run], prog: Progress, finished: set[str],
            on_result: Callable[[Run, RemoteResult], None], done_msg: Callable[[Run], str]) -> None:
    """Wait for every task; Ctrl-C (or SIGTERM) stops the remote guests and cancels the rest."""
    from distributed import Event, as_completed
    try:
        for f in as_completed(list(futs)):
            run = futs[f]
            try:
                on_result(run, f.result())
            except (CollectError, OSError, tarfile.TarError, ValueError) as e:
                run.collect_error = run.collect_error or f"{type(e).__name__}: {e}"
            except Exception as e:  # noqa: BLE001 -- KilledWorker or a task that raised: a failed run
                _worker_failed(run, e)
            finished.add(run.label)
            prog.done(run.label, done_msg(run))
            f.release()
    except BaseException:
        Event(cancel_event(session), client=client).set()   # running guests stop (their VMs killed)
        client.cancel(list(futs))                              # queued ones never start
        raise


def _follow(client: Any, session: str, prog: Progress, finished: set[str]) -> None:
    """Workers' progress lines onto this terminal; a late line of a finished run is dropped."""
    def on_event(ev: Any) -> None:
        label, msg = ev[1]
        if label not in finished:
            prog.say(label, msg)
    client.subscribe_topic(topic(session), on_event)


def run_specs(plan: Plan, scenario_smp: int, scheduler: str, quiet: bool = False,
              on_note: Callable[[str], None] | None = None) -> tuple[list[Run], dict]:
    """regress.run_specs on a dask cluster: fetch on every worker, then one task per run."""
    require_dask(scheduler)
    session = uuid.uuid4().hex[:12]
    runs = [Run(side=s, index=i) for s, i in regress.interleaved(plan.runs)]
    with connect(scheduler, plan.jobs) as client, Progress(total=len(runs) + 2, quiet=quiet) as prog:
        finished: set[str] = set()
        _follow(client, session, prog, finished)
        t0 = time.monotonic()
        specs = [plan.specs[s] for s in regress.SIDES]
        for side in regress.SIDES:
            prog.say(side, f"kernel {plan.specs[side]}: resolving on every worker")
        got = client.run(prefetch, specs, plan.arch)
        bad = {a: g["error"] for a, g in got.items() if "error" in g}
        if bad:
            a, e = next(iter(bad.items()))
            raise CollectError(f"worker {a}: {e}")
        fetch = {side: max(float(g[plan.specs[side]]) for g in got.values()) for side in regress.SIDES}
        for side in regress.SIDES:
            prog.done(side, f"kernel {plan.specs[side]} ready on {len(got)} workers ({fetch[side]:.1f}s)")
        smp, note = cluster_smp(client, plan.smp or scenario_smp, {a: int(g["cores"]) for a, g in got.items()})
        if note and on_note:
            on_note(note)
        phases: dict = {"smp": smp, "smp_note": note, "fetch_s": fetch, "scheduler": scheduler,
                        "workers": len(got)}
        t1 = time.monotonic()
        jobs = [GuestJob(session=session, label=r.label, spec=plan.specs[r.side], scenario=plan.scenario,
                         name=regress.bundle_name(r.label, plan.specs[r.side], plan.scenario), smp=smp,
                         accel=plan.accel, arch=plan.arch, memory=plan.memory, timeout=plan.timeout)
                for r in runs]
        futs = client.map(guest_task, jobs, pure=False, key=[f"mtaudit-regress-{session}-{r.label}" for r in runs])
        _gather(client, session, dict(zip(futs, runs)), prog, finished,
                lambda run, r: _land(run, r, plan.out), regress.summary_line)
        phases["runs_wall_s"] = round(time.monotonic() - t1, 2)
        phases["fetch_wall_s"] = round(t1 - t0, 2)
    return runs, phases


def run_bundles(paths: dict[str, list[Path]], out: Path, scheduler: str, jobs: int,
                quiet: bool = False) -> list[Run]:
    """regress.run_bundles on a dask cluster: workers read the bundles (shared storage)."""
    require_dask(scheduler)
    runs = regress.plan_bundles(paths)
    session = uuid.uuid4().hex[:12]
    with connect(scheduler, jobs) as client, Progress(total=len(runs), quiet=quiet) as prog:
        finished: set[str] = set()
        _follow(client, session, prog, finished)
        futs = [client.submit(analysis_task, session, r.label, str(Path(r.bundle or "").resolve()),
                              pure=False, key=f"mtaudit-regress-{session}-{r.label}") for r in runs]
        _gather(client, session, dict(zip(futs, runs)), prog, finished,
                lambda run, r: _land_analysis(run, r, out),
                lambda run: f"{run.bundle.name if run.bundle else '?'}: {regress.summary_line(run)}")
    return runs
