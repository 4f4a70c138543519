"""Both console scripts: every command has a useful --help, installed entry points work."""

import shutil
import subprocess
import sys

import pytest

import facekd.cli
import medkd.cli

COMMANDS = {"medkd": ["run", "split", "audit", "synth", "report", "export", "predict"],
            "facekd": ["run", "split", "audit", "synth", "report", "export", "predict"]}
MODULES = {"medkd": medkd.cli, "facekd": facekd.cli}


@pytest.mark.parametrize("tool", sorted(COMMANDS))
def test_top_level_help_lists_every_command(tool, capsys):
    with pytest.raises(SystemExit) as exit_info:
        MODULES[tool].main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {tool}")
    for command in COMMANDS[tool]:
        assert f"    {command} " in out


@pytest.mark.parametrize("tool,command", [(t, c) for t in sorted(COMMANDS) for c in COMMANDS[t]])
def test_each_command_has_help(tool, command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        MODULES[tool].main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {tool} {command}") and "options:" in out


def test_no_command_prints_usage_and_fails(capsys):
    assert medkd.cli.main([]) == 2
    assert "usage: medkd" in capsys.readouterr().out


@pytest.mark.parametrize("tool", sorted(COMMANDS))
def test_console_scripts_are_installed(tool):
    executable = shutil.which(tool) or str((__import__("pathlib").Path(sys.executable).parent / tool))
    result = subprocess.run([executable, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and f"usage: {tool}" in result.stdout


def test_packages_import_from_outside_the_repository(tmp_path):
    result = subprocess.run([sys.executable, "-c", "import kdcore, medkd, facekd; print(kdcore.__file__)"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "kdcore" in result.stdout


def test_file_system_errors_become_one_line_naming_the_path(capsys):
    import argparse

    from kdcore.cli import run_main

    def parser() -> argparse.ArgumentParser:
        def handler(args):
            raise PermissionError(13, "Permission denied", "/data/scans/b1.png")

        built = argparse.ArgumentParser(prog="tool")
        built.set_defaults(handler=handler)
        return built

    assert run_main(parser, []) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: /data/scans/b1.png: Permission denied"
