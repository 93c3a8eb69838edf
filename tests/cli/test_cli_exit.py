"""How every `mtaudit` command ends: MtauditError -> 2 and one line; any other exception -> 4
and one line (the traceback only with --debug); a command module that fails to import is an
error, never a silently missing command."""
from __future__ import annotations

import argparse

import pytest

from analyzer import cli
from analyzer.errors import MtauditError, TraceFormatError


def _with_command(monkeypatch, func):
    real = cli.build_parser

    def build(command=None):
        p = real(command)
        sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        sub.add_parser("boom").set_defaults(func=func)
        return p
    monkeypatch.setattr(cli, "build_parser", build)


def _raise(e):
    def f(_args):
        raise e
    return f


@pytest.mark.parametrize("exc", [ValueError("cannot convert float NaN to integer"), KeyError("pfn"),
                                 IndexError("index 5 is out of bounds"), ZeroDivisionError()])
def test_unexpected_exception_is_exit_4_one_line(monkeypatch, capsys, exc):
    _with_command(monkeypatch, _raise(exc))
    assert cli.main(["boom"]) == 4
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith(f"mtaudit: internal error: {type(exc).__name__}")
    assert "rerun with --debug" in lines[0] and "test_cli_exit.py" in lines[0]   # where it broke


def test_debug_prints_the_traceback_anywhere_in_argv(monkeypatch, capsys):
    _with_command(monkeypatch, _raise(RuntimeError("bug")))
    for argv in (["--debug", "boom"], ["boom", "--debug"]):
        assert cli.main(argv) == 4
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and "RuntimeError: bug" in err
        assert "rerun with --debug" not in err


@pytest.mark.parametrize("exc", [MtauditError("x.txt: bad"), TraceFormatError("t.dat", "header", 12, "bad magic")])
def test_user_errors_stay_exit_2(monkeypatch, capsys, exc):
    _with_command(monkeypatch, _raise(exc))
    assert cli.main(["boom"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"mtaudit: {exc}"


def test_a_command_module_that_fails_to_import_is_loud(monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMAND_MODULES", cli.COMMAND_MODULES + ["analyzer.no_such_commands"])
    assert cli.main(["--help"]) == 4
    err = capsys.readouterr().err
    assert "analyzer.no_such_commands failed to import" in err


def test_every_command_module_imports_and_bench_is_installed():
    p = cli.build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    for cmd in ("events", "convert", "analyze", "history", "plot", "report", "collect", "bench"):
        assert cmd in sub.choices, cmd


def test_command_table_names_the_module_that_registers_each_command():
    """`mtaudit CMD` imports only COMMAND_MODULE[CMD]: the table must say where every command lives."""
    import importlib
    seen = {}
    for mod_name in cli.COMMAND_MODULES:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(mod_name).register(sub)
        seen.update({name: mod_name for name in sub.choices})
    assert seen == cli.COMMAND_MODULE


def test_a_known_command_imports_only_its_module_and_help_lists_all(capsys):
    p = cli.build_parser("analyze")
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {"analyze", "history"}
    assert cli.command_of(["--debug", "analyze", "x"]) == "analyze" and cli.command_of(["--", "x"]) is None
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("mtaudit ")
    with pytest.raises(SystemExit) as e:
        cli.main(["no-such-command"])
    assert e.value.code == 2 and "regress" in capsys.readouterr().err     # the choices list every command
