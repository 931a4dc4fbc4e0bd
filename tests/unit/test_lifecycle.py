"""The lifecycle of a file version: every allowed move, every refused one, every decision."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from daemon import lifecycle
from daemon.lifecycle import State

ALLOWED = {
    (State.QUEUED, State.UPLOADING), (State.QUEUED, State.PENDING), (State.QUEUED, State.DONE),
    (State.UPLOADING, State.SUBMITTING), (State.UPLOADING, State.QUEUED),
    (State.SUBMITTING, State.PENDING), (State.SUBMITTING, State.UPLOADING),
    (State.PENDING, State.DONE), (State.PENDING, State.UPLOADING),
    (State.FAILED, State.QUEUED), (State.FAILED, State.SUPERSEDED),
    *((active, ending) for active in lifecycle.ACTIVE
      for ending in (State.FAILED, State.SUPERSEDED, State.GONE)),
}  # fmt: skip


@pytest.mark.parametrize(("source", "target"), list(itertools.product(State, State)))
def test_every_move_is_allowed_or_refused_as_the_table_says(source: State, target: State) -> None:
    if source == target:
        expected = source in lifecycle.ACTIVE  # an active row stays put while it waits
    else:
        expected = (source, target) in ALLOWED
    assert lifecycle.allowed(source, target) is expected
    assert lifecycle.allowed(str(source), str(target)) is expected  # as rows store them


def test_terminal_states_other_than_failed_are_final() -> None:
    for final in (State.DONE, State.SUPERSEDED, State.GONE):
        assert lifecycle.TRANSITIONS[final] == frozenset()
    assert set(lifecycle.ACTIVE) | set(lifecycle.TERMINAL) == set(State)


@dataclass(frozen=True)
class Row:
    state: str = State.PENDING
    submissions: int = 1
    message: str | None = None
    error_code: int | None = None
    checks: int = 2


@pytest.mark.parametrize(
    ("source", "change", "target"),
    [
        (State.QUEUED, lifecycle.reused_operation("e03a", 5.0, 7, due_at=9.0), State.PENDING),
        (State.QUEUED, lifecycle.adopted("e03a", 9.0), State.DONE),
        (State.UPLOADING, lifecycle.uploaded(9.0), State.SUBMITTING),
        (State.UPLOADING, lifecycle.rewritten_while_uploading(9.0, 2.0), State.QUEUED),
        (State.SUBMITTING, lifecycle.submitted(Row(), "e03a", 9.0, 4.0), State.PENDING),
        (State.SUBMITTING, lifecycle.upload_first(9.0, "audio/ab.ogg"), State.UPLOADING),
        (State.PENDING, lifecycle.submit_again("forgotten", 9.0, 0.0, "k.ogg"), State.UPLOADING),
        (State.PENDING, lifecycle.finished(9.0, 3, hook=True), State.DONE),
        (State.SUBMITTING, lifecycle.failed(9.0, "submit", "refused", 3, hook=False), State.FAILED),
        (State.UPLOADING, lifecycle.superseded(), State.SUPERSEDED),
        (State.QUEUED, lifecycle.gone("vanished"), State.GONE),
    ],
)  # fmt: skip
def test_each_decision_is_a_move_of_the_table(
    source: State, change: lifecycle.Change, target: State
) -> None:
    assert change.state == target
    assert lifecycle.allowed(source, target)


def test_waiting_keeps_the_state_and_sets_when_to_look_again() -> None:
    change = lifecycle.later(100.0, 2.5, attempts=3)
    assert change == lifecycle.Change(None, {"attempts": 3, "due_at": 102.5})
    checked = lifecycle.checked(Row(checks=2), 100.0, 30.0)
    assert checked == lifecycle.Change(None, {"checks": 3, "attempts": 0, "due_at": 130.0})


def test_a_submission_counts_and_schedules_the_first_check() -> None:
    change = lifecycle.submitted(Row(submissions=1), "e03b", 50.0, 12.0)
    assert change.fields["submissions"] == 2
    assert change.fields["operation_id"] == "e03b"
    assert change.fields["due_at"] == 62.0
    assert lifecycle.submission_lost(Row(submissions=2), "timed out").fields == {
        "submissions": 3, "message": "timed out",
    }  # fmt: skip


def test_a_file_version_is_submitted_at_most_three_times() -> None:
    assert lifecycle.submission_refused(Row(submissions=2)) is None
    reason = lifecycle.submission_refused(Row(submissions=3, message="expired"))
    assert reason is not None
    assert reason.startswith("submitted 3 times without a transcript")
    assert "the last reason to submit again: expired" in reason
    now_reason = lifecycle.submission_refused(Row(submissions=3, message="old"), "code 13")
    assert now_reason is not None
    assert "code 13" in now_reason


def test_submitting_again_uploads_first_and_keeps_the_reason() -> None:
    change = lifecycle.submit_again("forgotten", 10.0, 4.0, "p/ab.ogg", code=13)
    assert change.fields == {
        "operation_id": None, "object_key": "p/ab.ogg", "duplicate_of": None, "attempts": 0,
        "due_at": 14.0, "message": "forgotten", "error_code": 13,
    }  # fmt: skip


def test_a_failure_keeps_only_integer_codes() -> None:
    assert (
        lifecycle.failed(1.0, "check", "not audio", "bad", hook=False).fields["error_code"] is None
    )
    assert lifecycle.failed(1.0, "recognition", "x", 3, hook=True).fields["hook_pending"] == 1


@pytest.mark.parametrize(
    ("change", "durable"),
    [
        # Before something paid for or irreversible: synced to disk (synchronous=FULL).
        pytest.param(
            lifecycle.submitted(Row(), "e03a", 9.0, 4.0), True, id="submitted"
        ),  # the operation id
        pytest.param(
            lifecycle.reused_operation("e03a", 5.0, 7, due_at=9.0), True, id="reused_operation"
        ),
        pytest.param(
            lifecycle.finished(9.0, 3, hook=True), True, id="finished"
        ),  # objects, results, audio, hook follow
        pytest.param(lifecycle.failed(9.0, "submit", "refused", 3, hook=False), True, id="failed"),
        pytest.param(lifecycle.adopted("e03a", 9.0), True, id="adopted"),
        pytest.param(lifecycle.superseded(), True, id="superseded"),
        pytest.param(lifecycle.gone("vanished"), True, id="gone"),
        pytest.param(lifecycle.retried(9.0, "{}"), True, id="retried"),  # a person's `retry`
        pytest.param(
            lifecycle.rewritten_while_uploading(9.0, 2.0), True, id="rewritten_while_uploading"
        ),
        # Lost only in a power cut, and then redone at no cost: synchronous=NORMAL.
        pytest.param(
            lifecycle.hashed("ab" * 32, 1.0, 1, "{}", was_unreadable=False), False, id="hashed"
        ),
        pytest.param(
            lifecycle.uploaded(9.0), False, id="uploaded"
        ),  # the submission's synced quota record follows
        pytest.param(lifecycle.upload_first(9.0, "audio/ab.ogg"), False, id="upload_first"),
        pytest.param(
            lifecycle.submit_again("forgotten", 9.0, 0.0, "k.ogg"), False, id="submit_again"
        ),
        pytest.param(lifecycle.submission_lost(Row(), "timeout"), False, id="submission_lost"),
        pytest.param(lifecycle.later(9.0, 2.0), False, id="later"),
        pytest.param(lifecycle.checked(Row(), 9.0, 4.0), False, id="checked"),
    ],
)
def test_what_precedes_a_paid_or_irreversible_effect_is_synced_the_rest_is_not(
    change: lifecycle.Change, durable: bool
) -> None:
    assert change.durable is durable


def test_the_quota_record_of_a_submission_is_synced_a_status_checks_is_not() -> None:
    assert lifecycle.call_synced(lifecycle.SUBMIT_CALL)
    assert not lifecycle.call_synced("check")


def test_hashing_clears_the_reason_an_unreadable_file_waited_for() -> None:
    cleared = lifecycle.hashed("ab" * 32, 1.5, 2, "{}", was_unreadable=True)
    assert cleared.state is None
    assert cleared.fields == {"sha256": "ab" * 32, "duration_seconds": 1.5, "channels": 2,
                              "specification": "{}", "message": None, "attempts": 0}  # fmt: skip
    plain = lifecycle.hashed("ab" * 32, 1.5, 2, "{}", was_unreadable=False)
    assert "message" not in plain.fields
