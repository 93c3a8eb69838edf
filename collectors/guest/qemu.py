"""Run one QEMU guest with hard per-phase timeouts; never leave a process behind.

The guest's /init prints `MTAUDIT-*` lines on the serial console; this module reads them to know
the phase (boot -> scenario -> extract -> done), to show progress, and to enforce a deadline per
phase.  QEMU runs in its own session (so a terminal Ctrl-C reaches only us) with PDEATHSIG set
(so it dies even if we are SIGKILLed), and is killed by process group in every exit path.
"""
from __future__ import annotations

import ctypes
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import ToolMissingError

MACHINES = Path(__file__).resolve().parents[2] / "qemu" / "machines"
PROBLEMS = [  # (kind, regex) over console lines and the final dmesg
    ("panic", re.compile(r"Kernel panic")),
    ("BUG", re.compile(r"\bBUG:")),
    ("WARNING", re.compile(r"\bWARNING:")),
    ("Oops", re.compile(r"\bOops\b")),
    ("OOM", re.compile(r"Out of memory: Killed process|invoked oom-killer")),
]


def machine_profile(arch: str) -> dict:
    p = MACHINES / f"{arch}.json"
    if not p.exists():
        raise ToolMissingError(f"no machine profile {p} for arch {arch}")
    return json.loads(p.read_text())


def qemu_binary(profile: dict) -> str:
    b = shutil.which(profile["qemu"])
    if not b:
        raise ToolMissingError(f"{profile['qemu']} not found on PATH (Debian package "
                               f"{profile['apt_package']}): mtaudit collect boots kernels in QEMU")
    return b


def qemu_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    m = re.search(r"version (\S+)", out)
    return m.group(1) if m else out.strip().splitlines()[0] if out.strip() else "unknown"


def build_argv(binary: str, profile: dict, kernel_image: Path, initrd: Path, cmdline: str,
               memory: int, smp: int, accel: str, share: Path | None) -> list[str]:
    argv = [binary, *profile["machine"], "-cpu", profile["cpu"] if accel == "tcg" else "host",
            "-accel", accel, "-m", str(memory), "-smp", str(smp),
            "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
            "-nodefaults", "-kernel", str(kernel_image), "-initrd", str(initrd), "-append", cmdline]
    if share is not None:
        argv += ["-fsdev", f"local,id=out,path={share},security_model=none", *profile["transport"]]
    return argv


def find_problems(lines) -> list[dict]:
    out = []
    for line in lines:
        for kind, rx in PROBLEMS:
            if rx.search(line):
                out.append({"kind": kind, "line": line.strip()[:300]})
                break
    return out


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class RunResult:
    argv: list[str]
    exit_line: str | None = None           # the MTAUDIT-DONE line
    guest_rc: int | None = None
    failure: str | None = None
    problems: list[dict] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    qemu_rc: int | None = None


class VM:
    """One QEMU process: start(), then wait() reading the console; kill() is idempotent."""

    def __init__(self, argv: list[str], console_log: Path):
        self.argv = argv
        self.console_log = console_log
        self.proc: subprocess.Popen | None = None
        self.lines: "queue.Queue[str | None]" = queue.Queue()
        self._reader: threading.Thread | None = None

    def __enter__(self) -> "VM":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()

    def start(self) -> None:
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_set_pdeathsig)
        except FileNotFoundError:
            raise ToolMissingError(f"{self.argv[0]} not found") from None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        with open(self.console_log, "ab") as log:
            for raw in iter(self.proc.stdout.readline, b""):
                log.write(raw)
                log.flush()
                self.lines.put(raw.decode("utf-8", "replace").replace("\r", "").rstrip("\n"))
        self.lines.put(None)

    def kill(self) -> None:
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    p.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if self._reader:
            self._reader.join(timeout=5)
        if p.stdout:
            p.stdout.close()


def run_guest(argv: list[str], console_log: Path, phases: dict[str, float],
              on_event: Callable[[str, str], None] | None = None) -> RunResult:
    """Boot, follow the console through phases boot/scenario/extract, and stop the VM.

    `phases` maps phase name -> timeout in seconds.  Raises nothing for guest failures: the
    result carries `failure` so the caller can still write a (failed) bundle.
    """
    say = on_event or (lambda kind, text: None)
    res = RunResult(argv=argv)
    t0 = time.monotonic()
    phase, phase_t0 = "boot", t0
    seen: list[str] = []
    with VM(argv, console_log) as vm:
        vm.start()
        say("phase", "boot")
        while True:
            limit = phases.get(phase, 60.0)
            left = phase_t0 + limit - time.monotonic()
            if left <= 0:
                res.failure = f"timeout: {phase} phase exceeded {limit:.0f}s"
                break
            try:
                line = vm.lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if line is None:  # QEMU exited
                vm.proc.wait()
                res.qemu_rc = vm.proc.returncode
                if res.exit_line is None:
                    panic = next((p["line"] for p in find_problems(seen) if p["kind"] == "panic"), None)
                    res.failure = (f"guest kernel panicked in {phase} phase: {panic}" if panic else
                                   f"QEMU exited (rc={res.qemu_rc}) in {phase} phase before the guest finished"
                                   + (f": {seen[-1].strip()[:200]}" if seen else ""))
                break
            seen.append(line)
            if line.startswith("MTAUDIT-"):
                now = time.monotonic()
                if line.startswith("MTAUDIT-BOOTED"):
                    say("booted", line.split()[1] if len(line.split()) > 1 else "")
                elif line.startswith("MTAUDIT-STEP tracing-ready"):
                    say("step", line[len("MTAUDIT-STEP "):])
                elif line.startswith("MTAUDIT-STEP scenario-start"):
                    res.timings["boot_s"] = round(now - t0, 2)
                    phase, phase_t0 = "scenario", now
                    say("phase", "scenario")
                elif line.startswith("MTAUDIT-PHASE"):
                    say("scenario-phase", line[len("MTAUDIT-PHASE "):])
                elif line.startswith("MTAUDIT-STEP extract"):
                    res.timings["scenario_s"] = round(now - phase_t0, 2)
                    phase, phase_t0 = "extract", now
                    say("phase", "extract")
                elif line.startswith("MTAUDIT-DONE"):
                    res.exit_line = line
                    m = re.search(r"rc=(-?\d+)", line)
                    res.guest_rc = int(m.group(1)) if m else None
                    res.timings[f"{phase}_s" if phase != "scenario" else "scenario_s"] = round(now - phase_t0, 2)
                    m = re.search(r"reason=(.+)$", line)
                    if m:
                        res.failure = f"guest: {m.group(1).strip()} (rc={res.guest_rc})"
                    elif res.guest_rc:
                        res.failure = f"scenario exited with rc={res.guest_rc}"
                    phase, phase_t0 = "poweroff", now
                    phases = {**phases, "poweroff": 60.0}
                elif line.startswith("MTAUDIT-WARN"):
                    say("warn", line[len("MTAUDIT-WARN "):])
        if phase == "poweroff" and res.failure and res.failure.startswith("timeout: poweroff"):
            res.failure = None  # results are complete; we just stop the VM ourselves
    res.problems = find_problems(seen)
    res.timings["total_s"] = round(time.monotonic() - t0, 2)
    return res


def kvm_usable(binary: str, profile: dict, kernel_image: Path, initrd: Path, console: str,
               timeout: float = 20.0) -> tuple[bool, str]:
    """Short probe boot under KVM: on these machines KVM guests hang (or QEMU aborts on an MSR),
    so give up fast and say why."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm not usable"
    import tempfile
    with tempfile.TemporaryDirectory(prefix="mtaudit-kvmprobe-") as td:
        argv = build_argv(binary, profile, kernel_image, initrd,
                          f"console={console} panic=-1 loglevel=3 mtaudit.scenario=__probe", 512, 1,
                          "kvm", None)
        t0 = time.monotonic()
        last = ""
        with VM(argv, Path(td) / "console.log") as vm:
            vm.start()
            while time.monotonic() - t0 < timeout:
                try:
                    line = vm.lines.get(timeout=0.5)
                except queue.Empty:
                    continue
                if line is None:
                    return False, f"KVM probe: QEMU exited ({last.strip()[:160] or 'no output'})"
                last = line or last
                if line.startswith("MTAUDIT-BOOTED"):
                    return True, f"KVM probe boot reached /init in {time.monotonic() - t0:.1f}s"
    return False, f"KVM probe: guest did not reach /init within {timeout:.0f}s"
