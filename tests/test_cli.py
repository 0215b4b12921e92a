"""The command line: every subcommand explains itself."""

from __future__ import annotations

import pytest

from flows.cli import build_parser, main


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_core_subcommands_exist():
    assert {"demo", "prepare"} <= set(_subcommands())


@pytest.mark.parametrize("command", _subcommands())
def test_each_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"mocap2to3 {command}" in out
    assert len(out) > 300  # a description, not just a usage line


def test_no_subcommand_prints_help(capsys):
    assert main([]) == 2
    assert "SUBCOMMAND" in capsys.readouterr().out


def test_recover_and_evaluate_can_turn_post_processing_off():
    parser = build_parser()
    for args in (["recover", "--input", "clips", "--output", "out"], ["evaluate", "--store", "s"]):
        assert parser.parse_args(args).no_post_process is False
        assert parser.parse_args([*args, "--no-post-process"]).no_post_process is True


def test_recover_takes_the_inputs_ankle_height():
    parser = build_parser()
    args = ["recover", "--input", "clips", "--output", "out"]
    assert parser.parse_args(args).ankle_height is None
    assert parser.parse_args([*args, "--ankle-height", "0.08"]).ankle_height == 0.08
