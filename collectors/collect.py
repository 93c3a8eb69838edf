"""One `mtaudit collect` run: kernel -> initramfs -> QEMU -> bundle (ok or failed)."""
from __future__ import annotations

import os
import platform
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any
from pathlib import Path

from analyzer.atomic import atomic_dir
from analyzer.kernels import behavior_for
from analyzer.probes import SCHEME_MASK

from analyzer import bundle

from .build.build import build_kernel
from .guest import initramfs, scenarios
from .kernels import spec as kernels
from .errors import CollectError, GuestError, GuestTimeout
from .guest.qemu import (build_argv, find_problems, kvm_usable, machine_profile, qemu_binary,
                   qemu_version, run_guest)

EVENTS = ("kmem:mm_page_alloc", "kmem:mm_page_free", "kmem:mm_page_free_batched",
          "kmem:mm_page_pcpu_drain", "kmem:mm_page_alloc_zone_locked", "kmem:mm_page_alloc_extfrag",
          "kmem:mm_alloc_contig_migrate_range_info", "cma:*", "page_isolation:*")
BOOT_TIMEOUT = 300.0      # wall seconds from QEMU start to the scenario (TCG on a shared host)
EXTRACT_TIMEOUT = 300.0
FATAL_PROBLEMS = ("panic", "BUG", "Oops")


def resolve_kernel(spec_text: str, arch: str | None = None, progress=None) -> kernels.Kernel:
    """Any SPEC -> a cached Kernel: `build:` specs go to the build room, the rest to the kernels room.

    The dispatch lives here, above both rooms, so that neither imports the other in a circle
    (the build room produces a kernels.Kernel; the kernels room knows nothing of builds).
    """
    spec = kernels.parse_spec(spec_text, arch)
    if spec.kind == "build":
        return build_kernel(spec, spec_text, progress or (lambda msg: None))
    return kernels.resolve(spec_text, arch, progress)


@dataclass
class Options:
    kernel: str
    scenario: str
    out: Path
    name: str | None = None
    arch: str | None = None
    memory: int | None = None
    smp: int | None = None
    timeout: float | None = None
    accel: str = "auto"
    kprobe_at: str = "auto"
    pack: bool = False
    check_config: bool = True


class Reporter:
    """Progress on stderr: a rich status line on a terminal, plain lines otherwise."""

    def __init__(self, quiet: bool = False):
        from rich.console import Console
        self.console = Console(stderr=True)
        self.quiet = quiet
        self.status: Any = None   # a rich Status while it spins
        self.t0 = time.monotonic()

    def __enter__(self):
        if self.console.is_terminal and not self.quiet:
            self.status = self.console.status("starting")
            self.status.__enter__()
        return self

    def __exit__(self, *exc):
        if self.status:
            self.status.__exit__(*exc)

    def bar(self, what: str, total: int | None):
        """A rich progress bar for a long counted step (kernel compile) on a terminal, else None
        (callers then print plain progress lines).  The status line pauses meanwhile."""
        if not self.status:
            return None
        return _Bar(self, what, total)

    def __call__(self, msg: str) -> None:
        line = f"[{time.monotonic() - self.t0:6.1f}s] {msg}"
        if self.status:
            self.status.update(line)
            self.console.log(msg)
        elif not self.quiet:
            print(f"mtaudit collect: {line}", file=sys.stderr, flush=True)


class _Bar:
    def __init__(self, rep: Reporter, what: str, total: int | None):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                                   TextColumn, TimeElapsedColumn, TimeRemainingColumn)
        self.rep = rep
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}", style="bold"),
                                 BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TimeRemainingColumn(), console=rep.console, transient=True)
        self.task = self.progress.add_task(what, total=total)
        self.total = total

    def __enter__(self):
        self.rep.status.stop()
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()
        self.rep.status.start()
        return False

    def update(self, n: int, what: str) -> None:
        total = self.total if self.total is None or n <= self.total else n
        self.progress.update(self.task, completed=n, total=total, description=what[:48].ljust(48))


def choose_accel(opt: str, k: kernels.Kernel, binary: str, profile: dict, initrd: Path,
                 say) -> tuple[str, str]:
    """(accel, why).  KVM only when asked or when a short probe boot proves it works."""
    if opt == "tcg":
        return "tcg", "requested"
    if opt == "kvm":
        return "kvm", "requested"
    if platform.machine() != k.qemu_arch:
        return "tcg", f"host is {platform.machine()}, guest {k.qemu_arch}"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "/dev/kvm not usable"
    say("probing KVM (20 s max)")
    ok, why = kvm_usable(binary, profile, k.image, initrd, profile["console"])
    if not ok:
        say(f"{why}; using TCG")
    return ("kvm" if ok else "tcg"), why


def kernel_cmdline(k: kernels.Kernel, profile: dict, sc: scenarios.Scenario, kprobe_at: str) -> str:
    parts = [f"console={profile['console']}", "panic=-1", "loglevel=5", "trace_buf_size=8M",
             "trace_event=" + ",".join(EVENTS)]
    boot = kernels.boot_kprobe_ok(k.release) if kprobe_at == "auto" else kprobe_at == "boot"
    # only the <= 6.16 writer has a stable name to put on the command line; from 6.17 the
    # probes depend on compiler clones and /init chooses them from /proc/kallsyms
    if boot and behavior_for(k.release).probe_scheme == SCHEME_MASK:
        parts.append("kprobe_event=p:pb/setmt,set_pfnblock_flags_mask,"
                     + profile["kprobe_args"].replace(" ", ","))
    parts += sc.cmdline
    parts += [f"mtaudit.scenario={sc.name}", f"mtaudit.buffer_kb={sc.buffer_mb * 1024}"]
    return " ".join(parts)


def installed_probes(path: Path) -> list[dict]:
    """The probes /init actually installed (`DEFINITION|FILTER|ROLE|SOURCE` lines)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split("|")
        if len(parts) != 4 or not parts[0].startswith("p:"):
            continue
        toks = parts[0][2:].split()
        out.append({"event": toks[0], "symbol": toks[1] if len(toks) > 1 else None, "definition": parts[0],
                    "filter": parts[1] or None, "role": parts[2], "source": parts[3]})
    return out


def default_name(k_spec: str, sc: str) -> str:
    tag = re.sub(r"[^A-Za-z0-9.]+", "-", k_spec).strip("-")
    return f"{tag}-{sc}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"


def collect(o: Options, say) -> Path:
    sc = scenarios.load(o.scenario)
    spec = kernels.parse_spec(o.kernel, o.arch)
    if spec.arch:  # fail fast on a missing QEMU before downloading anything
        qemu_binary(machine_profile(spec.arch))
    say(f"resolving kernel {o.kernel}")
    k = resolve_kernel(o.kernel, o.arch, say)
    needs = tuple(sc.requires) + (("CMA",) if kernels.scenario_needs_cma(sc.cmdline, sc.requires) else ())
    if o.check_config:
        kernels.check_config(k, needs)
    else:
        try:
            kernels.check_config(k, needs)
        except CollectError as e:
            say(f"warning (--skip-config-check): {e}")
    profile = machine_profile(k.arch)
    binary = qemu_binary(profile)
    say(f"kernel {k.release} ({k.version}); building initramfs")
    base = initramfs.build(k, say)
    memory = o.memory or sc.memory
    smp = o.smp or sc.smp
    timeout = o.timeout or sc.timeout
    cmdline = kernel_cmdline(k, profile, sc, o.kprobe_at)
    final = (o.out / (o.name or default_name(o.kernel, sc.name))).resolve()
    started = bundle.utcnow()
    interrupted = False
    res = None
    with tempfile.TemporaryDirectory(prefix="mtaudit-initrd-") as td:
        initrd = Path(td) / "initrd.img"
        if sc.builtin:
            shutil.copyfile(base, initrd)
        else:
            initramfs.copy_with(base, initramfs.scenario_cpio(sc.name, sc.text), initrd)
        accel, why = choose_accel(o.accel, k, binary, profile, initrd, say)
        with atomic_dir(str(final)) as tmpd:
            tmp = Path(tmpd)
            share = tmp / "guest"
            share.mkdir()
            argv = build_argv(binary, profile, k.image, initrd, cmdline, memory, smp, accel, share)
            say(f"booting {k.release} ({accel}, {memory} MiB, {smp} CPUs), scenario {sc.name}")

            def on_event(kind: str, text: str) -> None:
                if kind == "phase":
                    say({"boot": "booting", "scenario": f"scenario {sc.name} running",
                         "extract": "extracting trace (trace-cmd extract)"}.get(text, text))
                elif kind == "booted":
                    say(f"guest /init running (guest uptime {text}s)")
                elif kind == "scenario-phase":
                    k_, _, rest = text.partition(" ")
                    say(f"scenario step {k_}/{sc.phases or '?'}: {rest}")
                elif kind in ("step", "warn"):
                    say(("warning: " if kind == "warn" else "") + text)

            try:
                res = run_guest(argv, tmp / "console.log",
                                {"boot": BOOT_TIMEOUT, "scenario": float(timeout),
                                 "extract": EXTRACT_TIMEOUT}, on_event)
            except KeyboardInterrupt:
                interrupted = True
                from .guest.qemu import RunResult
                res = RunResult(argv=argv, failure="interrupted (SIGINT/SIGTERM); VM killed")
            bundle.move_guest_files(share, tmp)
            share.rmdir()
            say("checking results")
            failure = res.failure
            dmesg_end = tmp / "dmesg-end.txt"
            con = tmp / "console.log"
            problems = find_problems(con.read_text(errors="replace").splitlines()) if con.exists() else []
            if dmesg_end.exists():
                seen = {p["line"] for p in problems}
                for p in find_problems(dmesg_end.read_text(errors="replace").splitlines()):
                    if p["line"] not in seen:
                        problems.append(p)
            if failure is None:
                fatal = [p for p in problems if p["kind"] in FATAL_PROBLEMS]
                if fatal:
                    failure = f"guest kernel reported {fatal[0]['kind']}: {fatal[0]['line']}"
            trace = tmp / bundle.TRACE
            if failure is None and not trace.exists():
                failure = "guest finished but wrote no trace.dat"
            if failure is None and not bundle.is_trace_dat(trace):
                failure = "trace.dat is not a trace-cmd file"
            lost: dict[str, int] = {}
            if (tmp / bundle.STATS).exists():
                try:
                    lost = bundle.lost_events(bundle.parse_stats(
                        (tmp / bundle.STATS).read_text(errors="replace"), bundle.STATS))
                except bundle.CaptureError as e:   # the guest wrote a broken stats file
                    failure = failure or str(e)
            ksrc = (tmp / "kprobe-source.txt").read_text().strip() if (tmp / "kprobe-source.txt").exists() else None
            installed = installed_probes(tmp / "probes-installed.txt")
            if failure is None and (ksrc in (None, "none", "partial") or not installed):
                failure = ("no ground truth: the guest could not install the kprobes "
                           f"(kprobe source {ksrc or 'unknown'}; see console.log MTAUDIT-WARN lines)")
            manifest = bundle.Manifest(
                status="failed" if failure else "ok",
                failure=failure,
                kernel={"spec": o.kernel, "release": k.release, "arch": k.arch,
                        "version": k.version, "package": k.package,
                        "config": k.config_subset(),
                        **({"build": k.build} if k.build else {})},
                cmdline=(tmp / "cmdline.txt").read_text().strip() if (tmp / "cmdline.txt").exists() else cmdline,
                scenario={"name": sc.name, "sha256": sc.sha256, "path": str(sc.path) if not sc.builtin else None,
                          "memory_mib": memory, "smp": smp, "timeout_s": timeout,
                          "buffer_kb_per_cpu": sc.buffer_mb * 1024},
                qemu={"version": qemu_version(binary), "accel": accel, "accel_reason": why,
                      "argv": argv},
                started=started,
                finished=bundle.utcnow(),
                lost_events=lost,
                guest_exit=res.guest_rc,
                console_problems=problems,
                extra={
                    "kprobe": {"event": "pb/setmt",
                               "symbol": next((p["symbol"] for p in installed if p["event"] == "pb/setmt"), None),
                               "filter": next((p["filter"] for p in installed if p["event"] == "pb/setmt"), None),
                               "source": ksrc,
                               "note": "source 'boot': created by kprobe_event= at fs_initcall, unfiltered "
                                       "until /init set the filter; 'init': created by /init"},
                    "probes": installed,
                    "events": list(EVENTS),
                    "guest_packages": initramfs.package_versions(base),
                    "timings": res.timings,
                    "collector": "mtaudit collect",
                })
            bundle.write_manifest(tmp, manifest)
            bundle.make_readable(tmp)
    if o.pack and not interrupted:
        say("packing .tar.zst")
        bundle.pack(final)
    if interrupted:
        raise KeyboardInterrupt
    if failure:
        cls = GuestTimeout if failure.startswith("timeout") else GuestError
        raise cls(f"{failure} (failed bundle: {final})")
    lost_total = sum(lost.values())
    say(f"done: {final} ({res.timings.get('total_s', 0):.0f}s, lost events: {lost_total})")
    return final
