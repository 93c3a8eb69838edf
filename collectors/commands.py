"""`mtaudit collect`: boot a kernel in QEMU, run a scenario, write a trace bundle."""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from pathlib import Path
from typing import Iterator

from .guest import scenarios


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "collect", help="boot a CMA-enabled kernel in QEMU, run a scenario, write a trace bundle",
        description="Boot KERNEL under QEMU (TCG unless a KVM probe boot works), run SCENARIO with "
                    "page-allocator/CMA/isolation tracepoints and the set_pfnblock_flags_mask kprobe, "
                    "and write a bundle directory (docs/contracts.md §1).")
    p.add_argument("--kernel", required=True, metavar="SPEC",
                   help="debian:6.1/arm64 | debian:6.12/arm64 | deb:FILE.deb | path:IMAGE[,modules=DIR][,config=FILE]"
                        " | build:SRC[,patch=FILE]...[,config=FRAGMENT][,arch=x86_64|arm64]"
                        "[,base=tinyconfig|defconfig|FILE] with SRC a kernel tree, a .tar.xz/.tar.gz or "
                        "debian-source:6.1|6.12 (built with qemu/kconfig/ARCH.config + FRAGMENT, cached)")
    p.add_argument("--scenario", required=True, metavar="NAME",
                   help=f"one of {', '.join(scenarios.available())}, or a path to a scenario .sh")
    p.add_argument("--runs", type=int, default=1, metavar="N", help="independent boots (default 1)")
    p.add_argument("--out", type=Path, default=Path("mtaudit-bundles"), metavar="DIR",
                   help="parent directory for bundles (default ./mtaudit-bundles)")
    p.add_argument("--name", help="bundle directory name (default <kernel>-<scenario>-<UTC time>; "
                                  "with --runs N, -rK is appended)")
    p.add_argument("--arch", help="guest architecture (arm64/aarch64, amd64/x86_64)")
    p.add_argument("--memory", type=int, metavar="MIB", help="guest RAM (default: from the scenario)")
    p.add_argument("--smp", type=int, metavar="N", help="guest CPUs (default: from the scenario)")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="hard limit in seconds for the scenario phase (default: from the scenario)")
    p.add_argument("--accel", choices=("auto", "tcg", "kvm"), default="auto",
                   help="auto = TCG unless guest arch == host arch and a 20 s KVM probe boot works")
    p.add_argument("--kprobe-at", choices=("auto", "boot", "init"), default="auto",
                   help="create the pb/setmt kprobe from the kernel command line (live from "
                        "fs_initcall) or in /init; auto uses what was measured per kernel version")
    p.add_argument("--skip-config-check", action="store_true",
                   help="boot even if CONFIG_CMA/KPROBE_EVENTS/... are missing (the capture will "
                        "lack those events; the manifest records the config)")
    p.add_argument("--pack", action="store_true", help="also write BUNDLE.tar.zst")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_run)


def _sigterm(signum, frame):  # make SIGTERM unwind like Ctrl-C so the VM is killed
    raise KeyboardInterrupt


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt inside the block, whatever we inherited.

    Why SIGINT too: a command started in the background by a non-interactive shell (a CI
    script's `cmd &`, a test runner launched that way) inherits SIGINT *ignored* (POSIX), and
    Python then never installs its Ctrl-C handler: an interrupt was silently dropped and
    `collect` ran its guest to the end (up to the scenario timeout) instead of stopping.
    """
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    old_term = signal.signal(signal.SIGTERM, _sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


def _run(args: argparse.Namespace) -> int:
    from .collect import Options, Reporter, collect
    from .errors import CollectError
    if args.runs < 1:
        raise CollectError("--runs must be >= 1")
    with interruptible(), Reporter(quiet=args.quiet) as say:
        for r in range(1, args.runs + 1):
            name = args.name
            if name and args.runs > 1:
                name = f"{name}-r{r}"
            o = Options(kernel=args.kernel, scenario=args.scenario, out=args.out, name=name,
                        arch=args.arch, memory=args.memory, smp=args.smp, timeout=args.timeout,
                        accel=args.accel, kprobe_at=args.kprobe_at, pack=args.pack,
                        check_config=not args.skip_config_check)
            path = collect(o, say)
            print(path)
            sys.stdout.flush()
    return 0

