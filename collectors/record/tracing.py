"""The kernel's tracing state: find (or mount) tracefs, check nobody uses it, and leave it as found.

Recording happens in a private ftrace instance (instances/mtaudit-PID): its events, buffer
sizes, tracing_on and options are its own, so the top-level state other users see is never
written.  What is global and touched: kprobe definitions (only when probes are installed),
and the tracefs mount itself (only when it was not mounted).  `Session.close()` undoes
exactly what was done, in reverse order, and is safe to call on every exit path.
"""
from __future__ import annotations

import errno
import os
import subprocess
from dataclasses import dataclass, field

from ..errors import CollectError
from .events import Probe

MOUNTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
# top-level files whose content is "the tracing state" (compared before/after by the tests)
STATE_FILES = ("set_event", "current_tracer", "tracing_on", "buffer_size_kb", "buffer_percent", "trace_options",
               "trace_clock", "kprobe_events", "set_ftrace_filter", "set_event_pid")


class RecordRefused(CollectError):
    """Preconditions not met (not root, no tracefs, tracing in use): nothing was changed."""


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, text: str, append: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC))
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def find_tracefs() -> str | None:
    for m in MOUNTS:
        if os.path.isfile(os.path.join(m, "trace")) and os.path.isdir(os.path.join(m, "instances")):
            return m
    return None


def global_state(root: str) -> dict[str, str]:
    """The top-level tracing state (files above + per-CPU buffer sizes + instance names)."""
    st: dict[str, str] = {}
    for name in STATE_FILES:
        p = os.path.join(root, name)
        if os.path.isfile(p):
            try:
                st[name] = _read(p)
            except OSError as e:
                st[name] = f"<unreadable: {e.strerror}>"
    pc = os.path.join(root, "per_cpu")
    for cpu in sorted(os.listdir(pc)) if os.path.isdir(pc) else []:
        p = os.path.join(pc, cpu, "buffer_size_kb")
        if os.path.isfile(p):
            st[f"per_cpu/{cpu}/buffer_size_kb"] = _read(p)
    inst = os.path.join(root, "instances")
    st["instances"] = " ".join(sorted(os.listdir(inst))) if os.path.isdir(inst) else ""
    return st


def in_use(root: str) -> str | None:
    """Why tracing counts as in use (someone else's events, tracer or recorder), or None."""
    ev = _read(os.path.join(root, "set_event")).split()
    if ev:
        return f"events enabled in {root}/set_event ({', '.join(ev[:3])}{', ...' if len(ev) > 3 else ''})"
    tracer = _read(os.path.join(root, "current_tracer")).strip()
    if tracer not in ("nop", ""):
        return f"tracer {tracer!r} active in {root}/current_tracer"
    inst = os.path.join(root, "instances")
    mine = [d for d in os.listdir(inst) if d.startswith("mtaudit-")] if os.path.isdir(inst) else []
    if mine:
        return f"another mtaudit recording is running ({inst}/{mine[0]})"
    return None


@dataclass
class Session:
    """Everything done to the kernel, so that close() undoes exactly that."""

    root: str = ""
    mounted: bool = False
    instance: str = ""
    probes: list[Probe] = field(default_factory=list)
    probe_errors: list[str] = field(default_factory=list)
    closed: bool = False

    @property
    def inst(self) -> str:
        return os.path.join(self.root, "instances", self.instance)

    # -- set-up ---------------------------------------------------------------------------
    @classmethod
    def open(cls, need_tracefs: bool = True) -> Session:
        """Check root and tracefs (mounting it if needed) and that nobody else traces."""
        if os.geteuid() != 0:
            raise RecordRefused("mtaudit record: needs root (tracing is a kernel-wide facility); nothing changed")
        s = cls()
        root = find_tracefs()
        if root is None:
            if not need_tracefs:
                return s
            root = MOUNTS[0]
            if not os.path.isdir(root):
                raise RecordRefused(f"mtaudit record: no tracefs ({root} missing; kernel without "
                                    "CONFIG_TRACING?); nothing changed")
            r = subprocess.run(["mount", "-t", "tracefs", "nodev", root], capture_output=True, text=True, check=False)
            if r.returncode != 0 or find_tracefs() != root:
                raise RecordRefused(f"mtaudit record: tracefs not mounted and mounting it at {root} failed: "
                                    f"{(r.stderr or '').strip() or 'no tracing files'}; nothing changed")
            s.mounted = True
        s.root = root
        why = in_use(root)
        if why:
            s.close()
            raise RecordRefused(f"mtaudit record: tracing is in use: {why}; nothing changed")
        return s

    def make_instance(self) -> str:
        name = f"mtaudit-{os.getpid()}"
        try:
            os.mkdir(os.path.join(self.root, "instances", name))
        except OSError as e:
            raise CollectError(f"cannot create ftrace instance {name}: {e.strerror}") from None
        self.instance = name
        return self.inst

    def install_probes(self, probes: list[Probe]) -> list[Probe]:
        """Define `probes` in kprobe_events (appending: truncating would drop others' probes).

        Returns the probes that exist afterwards; the others land in probe_errors.  The
        kernel has no kprobe events at all: returns [] (the recording goes on without them).
        """
        kp = os.path.join(self.root, "kprobe_events")
        if not probes or not os.path.isfile(kp):
            return []
        have = _read(kp)
        ok = []
        for p in probes:
            if f"{p.group}/{p.name} " in have:
                self.probe_errors.append(f"{p.event}: already defined by someone else; not used")
                continue
            try:
                _write(kp, p.definition + "\n", append=True)
            except OSError as e:
                self.probe_errors.append(f"{p.event}: {e.strerror}")
                continue
            self.probes.append(p)
            ok.append(p)
        return ok

    def enable(self, events: list[str], probes: list[Probe], buffer_kb: int) -> None:
        """Size the instance's buffers, set probe filters, enable the events (tracing stays off)."""
        inst = self.inst
        _write(os.path.join(inst, "tracing_on"), "0")
        _write(os.path.join(inst, "buffer_size_kb"), str(buffer_kb))
        for p in probes:
            d = os.path.join(inst, "events", p.group, p.name)
            if p.filter:
                _write(os.path.join(d, "filter"), p.filter)
        for ev in events:
            system, _, name = ev.partition(":")
            _write(os.path.join(inst, "events", system, name, "enable"), "1")

    def tracing_on(self, on: bool) -> None:
        _write(os.path.join(self.inst, "tracing_on"), "1" if on else "0")

    # -- tear-down ------------------------------------------------------------------------
    def close(self) -> list[str]:
        """Undo everything (idempotent); returns problems met on the way (never raises)."""
        if self.closed:
            return []
        self.closed = True
        problems: list[str] = []
        if self.instance:
            inst = self.inst
            for name in ("tracing_on",):
                try:
                    _write(os.path.join(inst, name), "0")
                except OSError:
                    pass
            try:
                _write(os.path.join(inst, "set_event"), "")      # events off before the probes go
            except OSError:
                pass
            for attempt in range(50):
                try:
                    os.rmdir(inst)
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or attempt == 49:
                        problems.append(f"cannot remove ftrace instance {inst}: {e.strerror}")
                        break
                    import time
                    time.sleep(0.1)        # a reader fd still closing
        kp = os.path.join(self.root, "kprobe_events")
        for p in reversed(self.probes):
            try:
                _write(kp, f"-:{p.group}/{p.name}\n", append=True)
            except OSError as e:
                problems.append(f"cannot remove kprobe {p.event}: {e.strerror}")
        self.probes = []
        if self.mounted:
            r = subprocess.run(["umount", self.root], capture_output=True, text=True, check=False)
            if r.returncode != 0:
                problems.append(f"cannot unmount tracefs at {self.root}: {r.stderr.strip()}")
            self.mounted = False
        return problems
