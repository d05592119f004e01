"""The command line as a whole: `python -m ntkdsl`, usage errors (exit 2, one line on
stderr), and help texts that state every option's default and show examples."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from ntkdsl.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[1]
RELU = "Dense(512) > Relu > Dense(1)"


def _run_module(*argv: str) -> subprocess.CompletedProcess:
    # From the repository root, so that this checkout's ntkdsl is the one imported.
    return subprocess.run([sys.executable, "-m", "ntkdsl", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_python_dash_m_runs_the_command_line():
    done = _run_module("derive", RELU, "--kernel", "ntk")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"NTK of {RELU}") and "T_2 = K_1 + T_1" in done.stdout
    assert _run_module("--version").stdout.startswith("ntkdsl ")


def test_python_dash_m_usage_error_exits_2_with_one_line():
    done = _run_module("fit", RELU, "--times", "1,abc")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "ntkdsl fit: error: argument --times: 'abc' is not a number in '1,abc'; "
        "e.g. 1,10,100,1000,10000 (usage: ntkdsl fit --help)"]


def test_python_dash_m_architecture_error_exits_1_with_a_caret():
    done = _run_module("derive", "Dense(512) > Rleu")
    assert done.returncode == 1 and "^^^^" in done.stderr


@pytest.mark.parametrize("argv", [[], ["bogus"], ["derive"], ["derive", RELU, "--bogus"],
                                  ["verify", RELU, "--widths"]])
def test_usage_errors_are_one_line(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == "" and len(lines) == 1
    assert " error: " in lines[0] and lines[0].endswith("--help)")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions
                  if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_is_registered():
    assert sorted(_subparsers()) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_examples_defaults_and_no_rest_markup(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":func:" not in out and ":class:" not in out
    examples = out.split("examples:\n", 1)[1].splitlines()
    assert examples[0].startswith(f"  ntkdsl {command} ")
    parser = _subparsers()[command]
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        text = formatter._expand_help(action)
        assert text, f"{command} {action.dest}: no help"
        if action.option_strings:
            assert "default" in text, f"{command} {action.option_strings[0]}: no default"
            if action.default is not None and action.default is not False:
                assert str(action.default) in text  # the default stated is the real one
            assert action.option_strings[-1] in out


def test_top_level_help_has_no_rest_markup_and_lists_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and "exit status" in out
    assert all(name in out for name in COMMANDS)
