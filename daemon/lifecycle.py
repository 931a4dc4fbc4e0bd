"""How a file version moves: its states, the moves allowed between them, and the pure decisions
that say, for a row and what just happened to it, what the state store should record.

    queued ─► uploading ─► submitting ─► pending ─► done
      │  ▲        │  ▲         │           │  │
      │  └────────┘  └─────────┘           │  └─► uploading (submit again: forgotten,
      │  (rewritten   (storage added since │        expired, the service's own error)
      │   while up)    it was recorded)    │
      └──► pending (a twin's operation)    │
      └──► done (a twin's or an earlier result, outputs already there)
    any active state ─► failed (a reason) │ superseded (a newer version) │ gone (file vanished)
    failed ─► queued (`retry`) │ superseded (a newer version)

Every function here takes the row, the facts of the outcome and the time, and returns a
`Change`: the next state (or none: the row stays and is looked at again at `due_at`) and the
fields to record. Nothing here does I/O; `state.Store.apply` records a change and is the one
place that checks a move against `TRANSITIONS`.

Durability tiers (`synced`): the commit of a change that precedes something costly or
irreversible (a paid submission, deleting an object or the audio, forgetting results, a hook)
reaches the disk before the step goes on (SQLite `synchronous=FULL`). The others are committed
with `synchronous=NORMAL`: in WAL mode they survive `kill -9` of the daemon (the WAL is in the
OS page cache) and only a power loss or an OS crash can lose them, which leaves the row in its
previous state, a step that is simply done again. Any later synced commit makes every earlier
one durable too, and every submission is preceded by one (the quota record of the submission).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class State(enum.StrEnum):
    QUEUED = "queued"  # settled; next: local check, hash, upload
    UPLOADING = "uploading"  # checked and hashed; next: put the object (key from the hash)
    SUBMITTING = "submitting"  # object stored; recorded before the submit POST, so a crash shows
    PENDING = "pending"  # the service accepted it; `operation_id` is set; next: a status check
    DONE = "done"  # outputs written
    FAILED = "failed"  # a reason to stop (`stage`, `message`); `retry` re-queues it
    SUPERSEDED = "superseded"  # a newer version of the same path replaced this one
    GONE = "gone"  # the file disappeared before it was finished


ACTIVE = (State.QUEUED, State.UPLOADING, State.SUBMITTING, State.PENDING)
TERMINAL = (State.DONE, State.FAILED, State.SUPERSEDED, State.GONE)
_ENDINGS = frozenset({State.FAILED, State.SUPERSEDED, State.GONE})  # open to every active state

# Every move a row may make. Staying in a state (rescheduled, fields updated) is always allowed
# for active states and is not listed.
TRANSITIONS: Mapping[State, frozenset[State]] = {
    # Hashed: claims the upload; or reuses a twin's operation or saved result; or adopts outputs
    # that were already there; or is refused by the local check.
    State.QUEUED: frozenset({State.UPLOADING, State.PENDING, State.DONE}) | _ENDINGS,
    # Uploaded; or its bytes changed while they went up: hashed again.
    State.UPLOADING: frozenset({State.SUBMITTING, State.QUEUED}) | _ENDINGS,
    # Submitted; or recorded without storage (audio inline), which is configured now: upload.
    State.SUBMITTING: frozenset({State.PENDING, State.UPLOADING}) | _ENDINGS,
    # Done; or submitted again (upload first: the object may be gone).
    State.PENDING: frozenset({State.DONE, State.UPLOADING}) | _ENDINGS,
    State.DONE: frozenset(),
    State.FAILED: frozenset({State.QUEUED, State.SUPERSEDED}),  # `retry`; a newer version
    State.SUPERSEDED: frozenset(),
    State.GONE: frozenset(),
}

# Each submission may be billed. Whatever the reason to submit again (a forgotten operation, an
# operation ending in the service's own error, a lost answer), a file version is submitted at
# most this often; then it fails with the reasons, so that a person looks instead of a bill.
MAX_SUBMISSIONS = 3

# A file the daemon may not read (copied in by another user, mode 0600) is usually fixed by a
# person within minutes; ten minutes after it was found it fails, so that it shows as failed with
# its reason, and `retry` after the `chmod` takes it up again.
UNREADABLE_WAIT_SECONDS = 600.0
UNREADABLE = "cannot read:"  # how the reason of an unreadable file starts (status shows it)


class TransitionRefusedError(Exception):
    """A move that TRANSITIONS does not allow: a bug, never a condition to handle."""


def allowed(source: State | str, target: State | str) -> bool:
    """Whether a row may move from `source` to `target` (staying put is fine while active)."""
    source, target = State(source), State(target)
    if source == target:
        return source in ACTIVE
    return target in TRANSITIONS[source]


class Row(Protocol):
    """What the decisions read of a row (state.FileRow has it all)."""

    @property
    def state(self) -> str: ...
    @property
    def submissions(self) -> int: ...
    @property
    def message(self) -> str | None: ...
    @property
    def error_code(self) -> int | None: ...
    @property
    def checks(self) -> int: ...


@dataclass(frozen=True)
class Change:
    """What to record for a row: its next state (None: it stays) and the fields to set."""

    state: State | None
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def durable(self) -> bool:
        """Whether its commit must reach the disk before the step goes on (`synced`)."""
        return synced(self.state)


# -- durability tiers ---------------------------------------------------------------------------

# Moves whose loss in a power cut only repeats a step that costs nothing: staying (rescheduled,
# a hash, a count), claiming the upload (the object's key is its content: uploaded again, the
# same object), the object stored (the submission's own quota record, synced, comes before the
# POST and makes this commit durable with it). Every other move is synced: PENDING holds an
# operation id that was (or may have been) paid for; DONE and FAILED come before the object and
# the results are deleted, the audio moved and the hook run; SUPERSEDED and GONE before a
# newer version is judged; QUEUED from FAILED is a person's `retry`.
_UNSYNCED_TARGETS = frozenset({State.UPLOADING, State.SUBMITTING})

# The hourly quota call recorded before each submission (daemon.gate counts calls by name).
SUBMIT_CALL = "submit"


def synced(target: State | None) -> bool:
    """Whether the commit recording a move to `target` (None: the row stays in its state) must
    be synced to disk (`synchronous=FULL`) rather than only survive a killed process."""
    return target is not None and target not in _UNSYNCED_TARGETS


def call_synced(call: str) -> bool:
    """Whether the quota record of an API `call` must be synced: a submission's is, as the last
    commit before the paid POST (so a crash never forgets a call that may have been billed, and
    every unsynced commit before it, the row's SUBMITTING among them, is on disk by then); a
    status check's is not (lost in a power cut, one check goes uncounted)."""
    return call == SUBMIT_CALL


# -- staying, to be looked at again -------------------------------------------------------------


def later(now: float, delay: float, **fields: Any) -> Change:
    """The row stays in its state and is looked at again after `delay` seconds."""
    return Change(None, {**fields, "due_at": now + delay})


def unreadable(
    found_at: float, attempts: int, now: float, why: str, backoff: float
) -> Change | None:
    """The file may not be read (`why`, e.g. "cannot read: permission denied"): look again after
    `backoff`, the reason recorded for `status`, until UNREADABLE_WAIT_SECONDS after the file was
    found (`found_at`); then None: it fails at stage check. At least one look again, so that a
    daemon that was stopped for a while gives a person a moment too."""
    left = found_at + UNREADABLE_WAIT_SECONDS - now
    if attempts >= 1 and left <= 0:
        return None
    delay = min(backoff, max(left, 1.0))
    return Change(None, {"due_at": now + delay, "attempts": attempts + 1, "message": why})


def hashed(
    sha256: str, duration_seconds: float, channels: int, specification: str, *, was_unreadable: bool
) -> Change:
    """Checked and hashed: what the upload and the duplicate search need. A reason it could not
    be read before (and the looks it took) is cleared."""
    cleared = {"message": None, "attempts": 0} if was_unreadable else {}
    return Change(None, {"sha256": sha256, "duration_seconds": duration_seconds,
                         "channels": channels, "specification": specification,
                         **cleared})  # fmt: skip


# -- moving on ----------------------------------------------------------------------------------


def reused_operation(
    operation_id: str, submitted_at: float | None, twin_id: int, due_at: float
) -> Change:
    """Same bytes and settings as a twin with an operation: wait for that operation's result."""
    return Change(State.PENDING, {"operation_id": operation_id, "submitted_at": submitted_at,
                                  "duplicate_of": twin_id, "due_at": due_at})  # fmt: skip


def adopted(operation_id: str, now: float) -> Change:
    """Its complete outputs were already there, newer than the audio: done without a request."""
    return Change(State.DONE, {"operation_id": operation_id, "due_at": None, "finished_at": now})


def uploaded(now: float) -> Change:
    """The object holds the file's bytes: submit at once."""
    return Change(State.SUBMITTING, {"attempts": 0, "due_at": now})


def upload_first(now: float, object_key: str, **fields: Any) -> Change:
    """Recorded without storage (its key `inline:<sha256>`) and not submitted yet, while storage
    is configured now: upload first, under the key of its content in the bucket."""
    return Change(State.UPLOADING, {**fields, "object_key": object_key, "attempts": 0,
                                    "due_at": now})  # fmt: skip


def rewritten_while_uploading(now: float, wait: float) -> Change:
    """The bytes that went up were not the ones hashed: hash this version again after `wait`."""
    return Change(State.QUEUED, {"sha256": None, "duration_seconds": None, "channels": None,
                                 "object_key": None, "due_at": now + wait})  # fmt: skip


def submitted(row: Row, operation_id: str, submitted_at: float, first_check_delay: float) -> Change:
    """The service accepted it: the first status check after the expected processing time."""
    return Change(State.PENDING, {
        "operation_id": operation_id, "submitted_at": submitted_at, "checks": 0, "attempts": 0,
        "submissions": row.submissions + 1, "due_at": submitted_at + first_check_delay,
    })  # fmt: skip


def submission_lost(row: Row, why: str) -> Change:
    """The answer to a submission was lost: it may have been billed, so it counts."""
    return Change(None, {"submissions": row.submissions + 1, "message": why})


def submission_refused(row: Row, why: str | None = None) -> str | None:
    """None while the row may be submitted (again); else the reason it fails instead, saying how
    often and why, so that a person looks instead of a bill growing. `why`: the reason to submit
    again now (else the one recorded in `message`)."""
    if row.submissions < MAX_SUBMISSIONS:
        return None
    return (
        f"submitted {row.submissions} times without a transcript (each may be billed); the last "
        f"reason to submit again: {why or row.message or 'unknown'}. Not submitted again: look "
        "into it, then `speechkit-watch retry` the file"
    )


def submit_again(
    why: str, now: float, delay: float, object_key: str, code: int | None = None
) -> Change:
    """Submit again with a fresh link, upload first (the object may have been deleted); `why`
    waits in `message` for the failure text of `submission_refused`. Ask that first."""
    return Change(State.UPLOADING, {
        "operation_id": None, "object_key": object_key, "duplicate_of": None, "attempts": 0,
        "due_at": now + delay, "message": why, "error_code": code,
    })  # fmt: skip


def checked(row: Row, now: float, next_check_delay: float) -> Change:
    """Not done yet: count the check and look again later."""
    return later(now, next_check_delay, checks=row.checks + 1, attempts=0)


def finished(now: float, checks: int, *, hook: bool, retain_at: float | None = None) -> Change:
    """Outputs written: done (the `on_complete` program still to run when there is one).
    `retain_at`: when after_done moves or deletes the audio (`daemon.retention`), or None."""
    return Change(State.DONE, {"checks": checks, "due_at": retain_at, "finished_at": now,
                               "stage": None, "message": None, "error_code": None,
                               "hook_pending": int(hook)})  # fmt: skip


def failed(
    now: float, stage: str, message: str, code: Any, *, hook: bool, retain_at: float | None = None
) -> Change:
    """A reason this version cannot be transcribed: NAME.error.json says it, `retry` re-queues.
    `retain_at`: when after_failed moves or deletes the audio (`daemon.retention`), or None."""
    return Change(State.FAILED, {
        "stage": stage, "message": message, "error_code": code if isinstance(code, int) else None,
        "due_at": retain_at, "finished_at": now, "hook_pending": int(hook),
    })  # fmt: skip


def retried(now: float, specification: str) -> Change:
    """`retry`: a person looked, so the submission count starts again (see MAX_SUBMISSIONS), and
    the file is sent with the settings the config gives its folder now (`specification`, the
    canonical JSON), not the ones it failed with: fixing the config and retrying is the way out."""
    return Change(State.QUEUED, {"due_at": now, "attempts": 0, "submissions": 0, "stage": None,
                                 "message": None, "error_code": None,
                                 "specification": specification})  # fmt: skip


def superseded() -> Change:
    """The file changed under a step: the newer version is judged from the start."""
    return Change(State.SUPERSEDED, {"due_at": None})


def gone(why: str) -> Change:
    """The file disappeared before it was finished."""
    return Change(State.GONE, {"due_at": None, "message": why})
