"""`mtaudit` command line.

Each sub-command lives in its own module exposing `register(subparsers)`, which
adds a parser and sets `func=handler(args) -> int`.  This file only collects
them and maps how a command ended to the exit status every command shares:

    0 clean, 1 findings / regression, 2 bad input, usage or harness failure
    (MtauditError: one line, no traceback), 3 inconclusive (evidence missing),
    4 internal error (any other exception: one line; the traceback with --debug).

An uncaught exception would otherwise exit 1, which CI reads as "findings".
"""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from .errors import MtauditError

EXIT_INTERNAL = 4

# Modules providing sub-commands, in `--help` order.  Every one must import: a module
# that does not is a broken install, reported as an internal error, never skipped.
COMMAND_MODULES = [
    "analyzer.readers.commands",     # events, convert
    "analyzer.commands",             # analyze, history
    "analyzer.cma.commands",         # cma
    "analyzer.report.commands",      # plot, report
    "collectors.commands",           # collect
    "harness.cli",                   # regress
    "collectors.record.commands",    # record
    "benchmarks.commands",           # bench
]


# Which module registers each command: `mtaudit analyze ...` imports only analyzer.commands,
# not the collectors, the harness and the benchmarks (start-up is part of every run's time).
# Anything else (no command, --help, a misspelling) imports them all, so the help and the
# "invalid choice" message list every command.  tests/cli/test_cli_exit.py keeps this in step
# with what the modules register.
COMMAND_MODULE = {
    "events": "analyzer.readers.commands", "convert": "analyzer.readers.commands",
    "analyze": "analyzer.commands", "history": "analyzer.commands",
    "cma": "analyzer.cma.commands",
    "plot": "analyzer.report.commands", "report": "analyzer.report.commands",
    "collect": "collectors.commands",
    "regress": "harness.cli",
    "record": "collectors.record.commands",
    "bench": "benchmarks.commands",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors: exit 2, one line
        self.print_usage(sys.stderr)
        print(f"mtaudit: error: {message}", file=sys.stderr)
        raise SystemExit(2)


class CommandImportError(Exception):
    """A command module of the installed package failed to import."""


def _version() -> str:
    """The installed distribution's version (pyproject.toml), or "unknown" outside an install."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("mtaudit")
    except PackageNotFoundError:
        return "unknown"


class _VersionAction(argparse.Action):
    """--version, looked up only when asked for (importlib.metadata costs start-up time)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0,
                         help=help or "show the version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"mtaudit {_version()}")
        parser.exit()


def command_of(argv: list[str]) -> str | None:
    """The sub-command named in argv (its first word that is not an option), if any."""
    for a in argv:
        if a == "--":
            return None
        if not a.startswith("-"):
            return a
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command, or only `command`'s module when it is a known command."""
    p = _Parser(prog="mtaudit", description="Audit pageblock migratetypes in page-allocator traces.",
                epilog="exit status: 0 clean, 1 findings, 2 bad input or usage, 3 inconclusive, "
                       "4 internal error")
    p.add_argument("--version", action=_VersionAction)
    p.add_argument("--debug", action="store_true",
                   help="print the traceback of an internal error (also accepted after the command)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    only = COMMAND_MODULE.get(command or "")
    for mod_name in [only] if only in COMMAND_MODULES else COMMAND_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except Exception as e:
            raise CommandImportError(f"command module {mod_name} failed to import: "
                                     f"{type(e).__name__}: {e}") from e
        mod.register(sub)
    return p


def _split_debug(argv: list[str]) -> tuple[list[str], bool]:
    """`--debug` anywhere before a `--` works for every command; it is removed from argv."""
    out, debug, literal = [], False, False
    for a in argv:
        if a == "--":
            literal = True
        if a == "--debug" and not literal:
            debug = True
            continue
        out.append(a)
    return out, debug


def _internal(e: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exception(e, file=sys.stderr)
    where = ""
    tb = traceback.extract_tb(e.__traceback__)
    if tb:
        f = tb[-1]
        where = f" at {f.filename.rsplit('/', 1)[-1]}:{f.lineno}"
    msg = str(e).splitlines()[0] if str(e) else ""
    print(f"mtaudit: internal error: {type(e).__name__}{': ' + msg if msg else ''}{where}"
          + ("" if debug else ", rerun with --debug for the traceback"), file=sys.stderr)
    return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> int:
    argv, debug = _split_debug(list(sys.argv[1:] if argv is None else argv))
    try:
        parser = build_parser(command_of(argv))
    except CommandImportError as e:
        return _internal(e, debug)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MtauditError as e:
        print(f"mtaudit: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtaudit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:   # anything else is a bug in mtaudit, not a finding
        return _internal(e, debug)


if __name__ == "__main__":
    sys.exit(main())
