"""Retention: when the audio of a finished file is moved or deleted, and when the state file
forgets a file. Pure decisions over the facts and the time passed in; `aftercare` acts on them.

- A finished file whose folder says `after_done: move | delete` (`after_failed` for a failed one)
  is marked at its end: the row's `due_at`, unused once a row is finished, holds when the action
  is due (its end plus `after_done_days`). The row is marked in the same write that records the
  end, and the outputs (or `NAME.error.json`) are written before that write, so nothing is
  touched before what it produced is safely on disk, and a crash in between is caught up by
  the next sweep. The delay the config gives the folder *now* decides: shorten it and every
  waiting file follows.
- A row is forgotten (`prunable`) once its file is long gone: nothing of it left where it was
  (or a newer version of it has a row of its own), nothing left to do for it, and no change for
  `state_retention_days`. A file that is still there keeps its row: without it the file would
  look new at the next start and be transcribed again. So do outputs still under their names
  beside it (or in `output_dir`): the row is what keeps another recording of the same stem from
  taking those names, or from being adopted as done with a transcript that is not its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from daemon.lifecycle import State

DAY_SECONDS = 86400.0
KEEP, MOVE, DELETE = "keep", "move", "delete"
# The ends a retention action follows, and the states of the rows it applies to.
RETAINED_STATES = (State.DONE, State.FAILED)


@dataclass(frozen=True)
class Rule:
    """What a folder does with the audio of a file that ended in one state: action and delay."""

    action: str  # KEEP, MOVE or DELETE
    delay_seconds: float

    @property
    def acts(self) -> bool:
        return self.action != KEEP


def rule_for(
    ended: State, *, after_done: str, after_done_days: float, after_failed: str,
    after_failed_days: float,
) -> Rule:  # fmt: skip
    """The rule for a file that ended `ended` (DONE or FAILED), from a folder's settings."""
    if ended == State.DONE:
        return Rule(after_done, after_done_days * DAY_SECONDS)
    if ended == State.FAILED:
        return Rule(after_failed, after_failed_days * DAY_SECONDS)
    return Rule(KEEP, 0.0)


def due_at(rule: Rule, ended_at: float) -> float | None:
    """What a row's `due_at` says at its end: when its action is due, or None for nothing."""
    return ended_at + rule.delay_seconds if rule.acts else None


def is_due(rule: Rule, ended_at: float, now: float) -> bool:
    """Whether a marked row's action is due now, by the folder's rule as it is now."""
    return rule.acts and now >= ended_at + rule.delay_seconds


def in_days(seconds: float) -> str:
    """A retention time for people: "30 days", "1 day", "0.5 days"."""
    days = round(seconds / DAY_SECONDS, 1)
    return f"{days:g} day{'' if days == 1 else 's'}"


def cutoff(rule: Rule, now: float) -> float:
    """Rows that ended at or before this time are due under `rule` (for the query)."""
    return now - rule.delay_seconds


@dataclass(frozen=True)
class Candidate:
    """The facts `prunable` judges a finished row by."""

    state: State
    updated_at: float  # its last change: finished, moved, deleted, replaced
    action_pending: bool  # a retention action still to come (`due_at` set)
    hook_pending: bool
    owned: bool  # a `transcribe` process drives it
    object_pending: bool  # its object still to be deleted from the bucket
    newer_version: bool  # the same path has a newer row


def prunable(
    candidate: Candidate, now: float, retention_seconds: float, anything_left: Callable[[], bool]
) -> bool:
    """Whether the state file may forget this row: its file is long gone and nothing is left
    to do for it. `anything_left` (is the audio still at its path, or an output under its name
    where it was written?) is asked last, only when the answer decides."""
    if candidate.state not in (State.DONE, State.FAILED, State.SUPERSEDED, State.GONE):
        return False
    if now - candidate.updated_at < retention_seconds:
        return False
    if (
        candidate.action_pending
        or candidate.hook_pending
        or candidate.owned
        or candidate.object_pending
    ):
        return False
    return candidate.newer_version or not anything_left()
