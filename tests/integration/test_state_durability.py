"""Which commits of the state file are synced to disk (`synchronous=FULL`) and which are not
(NORMAL: they survive `kill -9`, only a power cut can lose them), seen in the statements SQLite
runs while a real file goes through the real steps against a stand-in service; and that what
follows a file's end (after_done, after_failed, the hook) still happens when configured."""

from __future__ import annotations

import json
import random
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from daemon import config, state
from daemon.speechkit import Backend
from daemon.speechkit.v3 import V3Backend
from daemon.steps import Context, Steps

DATA = Path(__file__).resolve().parents[1] / "data"
NOW = 1_000_000.0
SPEECH = {
    "result": {
        "final": {"alternatives": [{"text": "hi", "words": [
            {"text": "hi", "startTimeMs": "0", "endTimeMs": "500"}]}], "channelTag": "0"},
        "audioCursors": {"finalIndex": "0"},
        "channelTag": "0",
    }
}  # fmt: skip
# Writes one JSON line per run: the audio it was given and the result.
HOOK = (
    "import json, os, sys\n"
    "facts = {k: os.environ[k] for k in ('SPEECHKIT_WATCH_AUDIO', 'SPEECHKIT_WATCH_RESULT')}\n"
    "open(sys.argv[1], 'a').write(json.dumps(facts) + '\\n')\n"
)


class Client:
    """The parts of V3Client that V3Backend uses: every submission is accepted and done."""

    def __init__(self) -> None:
        self.submitted = 0

    def submit_file(self, audio: Any, specification: Any) -> dict[str, Any]:
        self.submitted += 1
        return {"id": f"e03op{self.submitted}"}

    def get_operation(self, operation_id: str) -> dict[str, Any]:
        return {"id": operation_id, "done": True}

    def get_recognition(self, operation_id: str) -> list[Any]:
        return [SPEECH]

    def delete_recognition(self, operation_id: str) -> None:
        pass


class Commits:
    """The write transactions of a store, each with the `synchronous` level it committed at."""

    def __init__(self) -> None:
        self.level = "FULL"  # what the store opens with
        self.statements: list[str] | None = None
        self.committed: list[tuple[str, list[str]]] = []  # (level, statements)
        self.reads: list[str] = []  # statements outside a write transaction
        self.switches: list[str] = []  # the levels set, in order

    def __call__(self, statement: str) -> None:
        words = " ".join(statement.split()).upper()
        if words.startswith("PRAGMA SYNCHRONOUS ="):
            self.level = words.split("=")[1].strip()
            self.switches.append(self.level)
        elif words == "BEGIN IMMEDIATE":
            self.statements = []
        elif words == "COMMIT":
            assert self.statements is not None
            self.committed.append((self.level, self.statements))
            self.statements = None
        elif self.statements is not None:
            self.statements.append(statement)
        else:
            self.reads.append(statement)

    def levels_of(self, fragment: str) -> list[str]:
        """The levels of the commits one of whose statements writes `fragment` (its part before
        WHERE contains it)."""
        return [
            level
            for level, statements in self.committed
            if any(fragment in statement.split(" WHERE ")[0] for statement in statements)
        ]


def settings_for(tmp_path: Path, **folder: Any) -> config.Config:
    document: dict[str, Any] = {
        "watch": [{"path": str(tmp_path / "inbox"), **folder}],
        "speechkit": {"api_key": "key", "api": "v3"},
        "state_file": str(tmp_path / "state.db"),
    }
    if "hook" in folder:
        document["watch"][0].pop("hook")
        command = [sys.executable, "-c", HOOK, str(tmp_path / "hook.jsonl")]
        document["on_complete"] = {"command": command, "timeout_seconds": 10}
    return config.parse(document, source=tmp_path / "config.yaml", environ={})


def new_file(store: state.Store, tmp_path: Path, fixture: str = "mono.ogg") -> tuple[Path, int]:
    audio = tmp_path / "inbox" / "call.ogg"
    audio.parent.mkdir(exist_ok=True)
    shutil.copy(DATA / fixture, audio)
    found = audio.stat()
    row_id = store.add_version(
        path=str(audio), folder=str(audio.parent), size=found.st_size,
        mtime_ns=found.st_mtime_ns, now=NOW,
    )  # fmt: skip
    return audio, row_id


def steps_for(settings: config.Config, store: state.Store, now: list[float]) -> Steps:
    api: Backend = V3Backend(Client())  # type: ignore[arg-type]
    return Steps(Context(
        settings, store, None, api,
        clock=lambda: now[0], rng=random.Random(1), stopping=threading.Event(),
        on_changed=lambda path: None,
    ))  # fmt: skip


def run_to_the_end(steps: Steps, store: state.Store, row_id: int, now: list[float]) -> None:
    for _ in range(10):
        row = store.get(row_id)
        if row.state in state.TERMINAL_STATES:
            return
        now[0] = max(now[0], row.due_at or now[0])
        steps.advance(row_id)
    raise AssertionError(f"still {store.get(row_id).state} after 10 looks")


def test_commits_before_a_paid_or_irreversible_effect_are_synced_the_others_not(
    tmp_path: Path,
) -> None:
    store = state.Store(tmp_path / "state.db")
    _, row_id = new_file(store, tmp_path)
    commits = Commits()
    store.trace(commits)
    now = [NOW]
    steps = steps_for(settings_for(tmp_path), store, now)
    steps.advance(row_id)  # checked, hashed, uploaded (inline: nothing to put), submitted
    store.trace(None)
    pending = store.get(row_id)
    assert (pending.state, pending.due_at is not None) == (state.PENDING, True)
    now[0] = pending.due_at or NOW
    store.trace(commits)
    steps.advance(row_id)  # checked: done
    store.trace(None)
    assert store.get(row_id).state == state.DONE
    # Lost only in a power cut, and then simply done again.
    assert commits.levels_of("sha256 = '") == ["NORMAL"]  # checked and hashed
    assert commits.levels_of("state = 'uploading'") == ["NORMAL"]  # the upload claimed
    assert commits.levels_of("state = 'submitting'") == ["NORMAL"]  # the object stored
    assert commits.levels_of("VALUES ('check'") == ["NORMAL"]  # a status check counted
    # Synced: the paid POST follows the quota record of the submission (which syncs the
    # unsynced commits before it too); the operation id; the end, before results are deleted.
    assert commits.levels_of("VALUES ('submit'") == ["FULL"]
    assert commits.levels_of("state = 'pending'") == ["FULL"]
    assert commits.levels_of("state = 'done'") == ["FULL"]
    submit_record = commits.levels_of("VALUES ('")  # the calls in the order they were made
    assert submit_record == ["FULL", "NORMAL"]
    # The setting is switched only when a commit needs the other one.
    levels = [level for level, _ in commits.committed]
    changes = [
        level
        for before, level in zip(["FULL", *levels[:-1]], levels, strict=True)
        if before != level
    ]
    assert commits.switches == changes
    # With `keep` and no hook, nothing reads the row again once it is done.
    done_at = next(
        index for index, read in enumerate(commits.reads) if "operation_id = 'e03op1'" in read
    )  # the v3 results are deleted once nobody else waits for them: the last step
    assert not [read for read in commits.reads[done_at:] if "FROM files WHERE id =" in read]
    store.close()


def test_a_synced_commit_after_unsynced_ones_and_the_level_persists_per_connection(
    tmp_path: Path,
) -> None:
    store = state.Store(tmp_path / "state.db")
    commits = Commits()
    store.trace(commits)
    store.record_call("check", NOW, durable=False)
    store.record_call("check", NOW + 1, durable=False)
    store.record_call("submit", NOW + 2, durable=True)
    store.record_call("submit", NOW + 3)  # synced unless said otherwise
    store.trace(None)
    assert [level for level, _ in commits.committed] == ["NORMAL", "NORMAL", "FULL", "FULL"]
    assert commits.switches == ["NORMAL", "FULL"]
    store.close()
    reopened = state.Store(tmp_path / "state.db", read_only=True)
    assert reopened.recent_calls("check", 0.0) == [NOW, NOW + 1]  # all of them were kept
    assert reopened.recent_calls("submit", 0.0) == [NOW + 2, NOW + 3]
    reopened.close()


@pytest.mark.parametrize("ended", ["done", "failed"])
def test_after_done_after_failed_and_the_hook_still_follow_an_end(
    tmp_path: Path, ended: str
) -> None:
    moved = tmp_path / ("transcribed" if ended == "done" else "refused")
    settings = settings_for(
        tmp_path, after_done="move", move_to=str(tmp_path / "transcribed"),
        after_failed="move", failed_move_to=str(tmp_path / "refused"), hook=True,
    )  # fmt: skip
    store = state.Store(tmp_path / "state.db")
    # A WAV named .ogg is refused at check: the file fails.
    fixture = "mono.ogg" if ended == "done" else "formats/notes.wav"
    audio, row_id = new_file(store, tmp_path, fixture)
    now = [NOW]
    run_to_the_end(steps_for(settings, store, now), store, row_id, now)
    row = store.get(row_id)
    assert row.state == ended
    assert not audio.exists()
    assert row.moved_to == str(moved / "call.ogg")
    assert (moved / "call.ogg").exists()
    assert (moved / ("call.txt" if ended == "done" else "call.error.json")).exists()
    assert row.hook_pending == 0
    runs = [json.loads(line) for line in (tmp_path / "hook.jsonl").read_text().splitlines()]
    assert runs == [
        {"SPEECHKIT_WATCH_AUDIO": str(moved / "call.ogg"), "SPEECHKIT_WATCH_RESULT": ended}
    ]
    store.close()
