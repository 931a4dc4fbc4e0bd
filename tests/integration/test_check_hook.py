"""`check` reports an `on_complete` program that is missing or may not be run."""

from __future__ import annotations

from pathlib import Path

from daemon import checks, config


def hook(program: str) -> config.Hook:
    return config.Hook(command=(program, "--flag"), timeout_seconds=60)


def test_a_missing_or_non_executable_hook_program_is_a_problem(tmp_path: Path) -> None:
    missing = checks.check_hook(hook(str(tmp_path / "notify-transcript")))
    assert missing.status == checks.PROBLEM
    assert "notify-transcript does not exist" in missing.message
    plain = tmp_path / "plain.sh"
    plain.write_text("#!/bin/sh\n", encoding="utf-8")
    plain.chmod(0o644)
    not_executable = checks.check_hook(hook(str(plain)))
    assert not_executable.status == checks.PROBLEM
    assert "is not an executable file" in not_executable.message
    bare = checks.check_hook(hook("no-such-program-skw"))
    assert bare.status == checks.PROBLEM
    assert "is not on PATH" in bare.message


def test_an_executable_hook_program_passes(tmp_path: Path) -> None:
    program = tmp_path / "notify.sh"
    program.write_text("#!/bin/sh\n", encoding="utf-8")
    program.chmod(0o755)
    assert checks.check_hook(hook(str(program))).status == checks.OK
    assert checks.check_hook(hook("sh")).status == checks.OK
