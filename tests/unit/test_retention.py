"""Retention decisions, the inotify limit judgements, the names copy tools write, and the keys."""

from __future__ import annotations

import errno
from dataclasses import replace

import pytest

from daemon import crashpoints, inotify_limits, retention, watching
from daemon.lifecycle import State
from tests.unit.test_config import minimal, parse, problems

DAY = retention.DAY_SECONDS
NOW = 1_800_000_000.0


def folder_rule(ended: State, **settings: object) -> retention.Rule:
    values: dict[str, object] = {
        "after_done": "keep", "after_done_days": 0.0, "after_failed": "keep",
        "after_failed_days": 0.0,
    }  # fmt: skip
    values.update(settings)
    return retention.rule_for(ended, **values)  # type: ignore[arg-type]


def test_no_delay_is_todays_immediate_action_and_keep_never_acts() -> None:
    now_rule = folder_rule(State.DONE, after_done="delete")
    assert retention.due_at(now_rule, NOW) == NOW
    assert retention.is_due(now_rule, NOW, NOW)
    keep = folder_rule(State.DONE, after_done="keep", after_done_days=30)
    assert retention.due_at(keep, NOW) is None
    assert not retention.is_due(keep, NOW - 365 * DAY, NOW)


def test_a_delay_counts_from_the_end_and_failed_files_follow_their_own_rule() -> None:
    done = folder_rule(State.DONE, after_done="move", after_done_days=30, after_failed="delete")
    assert retention.due_at(done, NOW) == NOW + 30 * DAY
    assert not retention.is_due(done, NOW, NOW + 29.9 * DAY)
    assert retention.is_due(done, NOW, NOW + 30 * DAY)
    assert retention.cutoff(done, NOW) == NOW - 30 * DAY
    failed = folder_rule(State.FAILED, after_done="move", after_done_days=30,
                         after_failed="delete", after_failed_days=7)  # fmt: skip
    assert failed == retention.Rule("delete", 7 * DAY)
    assert retention.is_due(failed, NOW - 7 * DAY, NOW)
    # A failed file with no rule of its own is kept, whatever after_done says.
    assert not folder_rule(State.FAILED, after_done="delete").acts
    assert not folder_rule(State.GONE, after_done="delete").acts


def test_days_are_said_as_people_say_them() -> None:
    assert retention.in_days(30 * DAY) == "30 days"
    assert retention.in_days(DAY) == "1 day"
    assert retention.in_days(DAY / 2) == "0.5 days"


GONE_LONG_AGO = retention.Candidate(
    state=State.DONE, updated_at=NOW - 100 * DAY, action_pending=False, hook_pending=False,
    owned=False, object_pending=False, newer_version=False,
)  # fmt: skip


def test_a_row_is_forgotten_only_when_its_file_is_long_gone_and_nothing_is_left_to_do() -> None:
    keep = 90 * DAY
    assert retention.prunable(GONE_LONG_AGO, NOW, keep, lambda: False)
    assert not retention.prunable(GONE_LONG_AGO, NOW, keep, lambda: True)  # audio or outputs
    busy = (
        replace(GONE_LONG_AGO, action_pending=True), replace(GONE_LONG_AGO, hook_pending=True),
        replace(GONE_LONG_AGO, owned=True), replace(GONE_LONG_AGO, object_pending=True),
    )  # fmt: skip
    for candidate in busy:
        assert not retention.prunable(candidate, NOW, keep, lambda: False), candidate
    recent = replace(GONE_LONG_AGO, updated_at=NOW - 89 * DAY)
    assert not retention.prunable(recent, NOW, keep, lambda: False)
    assert not retention.prunable(replace(GONE_LONG_AGO, state=State.PENDING), NOW, keep,
                                  lambda: False)  # fmt: skip


def test_an_old_version_is_forgotten_without_looking_at_the_file() -> None:
    def must_not_look() -> bool:
        raise AssertionError("the file was looked at")

    older = replace(GONE_LONG_AGO, state=State.SUPERSEDED, newer_version=True)
    assert retention.prunable(older, NOW, 90 * DAY, must_not_look)
    assert not retention.prunable(replace(older, updated_at=NOW), NOW, 90 * DAY, must_not_look)


def test_retention_keys_default_to_todays_behaviour_and_are_checked() -> None:
    settings = parse(minimal())
    folder = settings.watch[0]
    assert (folder.after_done, folder.after_done_days) == ("keep", 0.0)
    assert (folder.after_failed, folder.after_failed_days, folder.failed_move_to) == (
        "keep", 0.0, None,
    )  # fmt: skip
    assert settings.state_retention_days == 90.0
    days = parse(minimal(watch=[{"path": "/srv/inbox", "after_done": "delete",
                                 "after_done_days": 30}]))  # fmt: skip
    assert days.watch[0].after_done_days == 30.0
    idle = parse(minimal(watch=[{"path": "/srv/inbox", "after_failed_days": 7}]))
    assert idle.warnings == (
        "conf.yaml: at 'watch[0].after_failed_days': after_failed is keep, so the audio is kept "
        "and the delay does nothing",
    )
    found = problems(minimal(watch=[{"path": "/srv/inbox", "after_failed": "move"}]))
    assert any("'watch[0].failed_move_to'" in p and "after_failed is move" in p for p in found)
    found = problems(minimal(
        watch=[{"path": "/srv/inbox", "after_done_days": -1}], state_retention_days=1,
    ))  # fmt: skip
    assert any("'watch[0].after_done_days'" in p for p in found)
    assert any("'state_retention_days'" in p for p in found)


def test_the_temporary_names_of_copy_tools_are_ignored() -> None:
    names = (
        "call.ogg.filepart", "call.ogg.partial", "call.ogg.!ut", "call.ogg.!qb",
        "call.ogg.download", "CALL.OGG.FILEPART", ".~lock.call.ogg#", "call.ogg.part",
    )  # fmt: skip
    for name in names:
        assert not watching.matches(name, ["*.ogg*", "*"]), name
    assert watching.matches("call.ogg", ["*.ogg"])
    root = "/srv/inbox"
    assert watching.inside_ignored_folder("/srv/inbox/call.mp3.download/call.mp3", root)
    assert watching.inside_ignored_folder("/srv/inbox/a/.sync/call.mp3", root)
    assert not watching.inside_ignored_folder("/srv/inbox/a/b/call.mp3", root)
    assert not watching.inside_ignored_folder("/srv/inbox/call.mp3", root)


def test_inotify_limits_are_judged_with_room_for_other_programs() -> None:
    assert inotify_limits.judge(10, 8192) == "ok"
    assert inotify_limits.judge(7000, 8192) == "near"
    assert inotify_limits.judge(9000, 8192) == "over"
    assert inotify_limits.judge(1, None) == "unknown"
    advice = inotify_limits.sysctl_advice(inotify_limits.WATCHES_SYSCTL, 100_000, 8192)
    assert "sysctl -w fs.inotify.max_user_watches=200000" in advice
    assert "now 8192, this config needs 100000" in advice


def test_the_test_hook_fails_the_watch_call_as_the_kernel_does() -> None:
    crashpoints.simulated_watch_limit({})  # unset: nothing happens
    with pytest.raises(OSError, match="inotify watch limit reached") as caught:
        crashpoints.simulated_watch_limit({crashpoints.WATCH_LIMIT_VARIABLE: "ENOSPC"})
    assert caught.value.errno == errno.ENOSPC
    with pytest.raises(OSError, match="instance limit") as caught:
        crashpoints.simulated_watch_limit({crashpoints.WATCH_LIMIT_VARIABLE: "EMFILE"})
    assert caught.value.errno == errno.EMFILE
    with pytest.raises(ValueError, match="expected ENOSPC or EMFILE"):
        crashpoints.simulated_watch_limit({crashpoints.WATCH_LIMIT_VARIABLE: "yes"})
