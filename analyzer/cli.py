"""`mtaudit` command line.

Each sub-command lives in its own module exposing `register(subparsers)`, which
adds a parser and sets `func=handler(args) -> int`.  This file only collects
them and turns user-fixable errors into one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import MtauditError

# Modules providing sub-commands, in `--help` order.  A module that is not
# there yet (feature not built) is skipped silently.
COMMAND_MODULES = [
    "analyzer.readers.commands",     # events, convert
    "analyzer.commands",             # analyze, history
    "analyzer.report.commands",      # plot, report
    "collectors.commands",           # collect, regress
    "benchmarks.commands",           # bench
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors: exit 2, one line
        self.print_usage(sys.stderr)
        print(f"mtaudit: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mtaudit", description="Audit pageblock migratetypes in page-allocator traces.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for mod_name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name and (mod_name == e.name or mod_name.startswith(e.name + ".")):
                continue
            raise
        mod.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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


if __name__ == "__main__":
    sys.exit(main())
