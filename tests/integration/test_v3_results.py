"""API v3 results in the daemon's steps, with a real state file and a stand-in service: a
malformed stream fails the file after the malformed-answer checks (never an endless retry), and
a copy reusing a twin's operation never pays again because the twin's results were deleted."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from daemon import audio as audio_module
from daemon import config, layout, state
from daemon.outcomes import Failure, Kind, Service
from daemon.render import v3 as results
from daemon.speechkit import Backend
from daemon.speechkit.v3 import V3Backend
from daemon.steps import MALFORMED_RESULT_CHECKS, Context, Steps

DATA = Path(__file__).resolve().parents[1] / "data"
NOW = 1_000_000.0
OPERATION = {"id": "e03op", "done": True}
SPEECH = {
    "result": {
        "final": {"alternatives": [{"text": "hi", "words": [
            {"text": "hi", "startTimeMs": "0", "endTimeMs": "500"}]}], "channelTag": "0"},
        "audioCursors": {"finalIndex": "0"},
        "channelTag": "0",
    }
}  # fmt: skip


class Client:
    """The parts of V3Client that V3Backend uses: one done operation and its stream."""

    def __init__(self, messages: list[Any]) -> None:
        self.messages = messages
        self.forgotten: list[str] = []
        self.submitted: list[str] = []

    def submit_file(self, audio: Any, specification: Any) -> dict[str, Any]:
        self.submitted.append(str(audio))
        return {"id": f"e03new{len(self.submitted)}"}

    def get_operation(self, operation_id: str) -> dict[str, Any]:
        if operation_id in self.forgotten:  # what the service answers once results are deleted
            raise Failure(Kind.NOT_FOUND, "no such operation", service=Service.RECOGNITION)
        return {**OPERATION, "id": operation_id}

    def get_recognition(self, operation_id: str) -> list[Any]:
        return self.messages

    def delete_recognition(self, operation_id: str) -> None:
        self.forgotten.append(operation_id)


def settings_for(tmp_path: Path) -> config.Config:
    document = {
        "watch": [{"path": str(tmp_path / "inbox")}],
        "speechkit": {"api_key": "key", "api": "v3"},
        "state_file": str(tmp_path / "state.db"),
    }
    return config.parse(document, source=tmp_path / "config.yaml", environ={})


def pending_copy(store: state.Store, tmp_path: Path, name: str, operation: str | None) -> int:
    """A hashed file version: PENDING on `operation`, or QUEUED (waiting) without one."""
    audio = tmp_path / "inbox" / name
    audio.parent.mkdir(exist_ok=True)
    audio.write_bytes((DATA / "mono.ogg").read_bytes())  # real audio: a resubmission would send it
    found = audio.stat()
    row_id = store.add_version(
        path=str(audio), folder=str(audio.parent), size=found.st_size,
        mtime_ns=found.st_mtime_ns, now=NOW,
    )  # fmt: skip
    # The settings the config gives the file now: `prepare` refits any other (a config change).
    specification = layout.current_specification(
        settings_for(tmp_path), str(audio), str(audio.parent), 1
    )
    store.update(
        row_id, NOW, sha256="ab" * 32, specification=specification, duration_seconds=1.0,
        channels=1, due_at=NOW,
    )  # fmt: skip
    if operation is not None:
        store.update(row_id, NOW, state=state.PENDING, operation_id=operation, submitted_at=NOW)
    return row_id


def steps_for(tmp_path: Path, store: state.Store, client: Client, now: list[float]) -> Steps:
    api: Backend = V3Backend(client)  # type: ignore[arg-type]
    return Steps(Context(
        settings_for(tmp_path), store, None, api,
        clock=lambda: now[0], rng=random.Random(1), stopping=threading.Event(),
        on_changed=lambda path: None,
    ))  # fmt: skip


@pytest.mark.parametrize("words", [5, True, [7], [{"text": "hi", "startTimeMs": "soon"}]], ids=repr)
def test_a_malformed_stream_fails_the_file_after_the_malformed_answer_checks(
    tmp_path: Path, words: Any
) -> None:
    store = state.Store(tmp_path / "state.db")
    row_id = pending_copy(store, tmp_path, "call.ogg", "e03op")
    garbled = {"result": {"final": {"alternatives": [{"text": "hi", "words": words}]}}}
    now = [NOW]
    steps = steps_for(tmp_path, store, Client([SPEECH, garbled]), now)
    for _ in range(MALFORMED_RESULT_CHECKS):
        row = store.get(row_id)
        assert row.state == state.PENDING
        now[0] = max(now[0], row.due_at or now[0])
        steps.advance(row_id)  # raised here before: the stream passed as a transcript
    row = store.get(row_id)
    assert (row.state, row.stage) == (state.FAILED, "recognition")
    assert row.message is not None
    assert "malformed result: getRecognition[1].result.final.alternatives[0].words" in row.message
    assert not (tmp_path / "inbox" / "call.txt").exists()
    store.close()


def test_a_copy_never_reuses_an_operation_whose_twin_finished_meanwhile(tmp_path: Path) -> None:
    """Row B reads its twin A as PENDING; A finishes (DONE, then deleteRecognition) before B
    records that it waits for A's operation: B must not end up PENDING on deleted results (it
    would get 404, resubmit and pay twice), but take A's saved result."""
    store = state.Store(tmp_path / "state.db")
    twin = pending_copy(store, tmp_path, "a.ogg", "e03op")
    copy = pending_copy(store, tmp_path, "b.ogg", None)
    client = Client([SPEECH])
    now = [NOW]
    steps = steps_for(tmp_path, store, client, now)
    document = results.document(OPERATION, [SPEECH], speakers=False)
    read = store.same_content

    def twin_finishes_after_the_read(digest: str, spec: str, *, exclude: int) -> Any:
        found = read(digest, spec, exclude=exclude)
        if exclude == copy and store.get(twin).state == state.PENDING:
            assert [row.id for row in found] == [twin]
            steps.finishing.finish(store.get(twin), document, 1)  # the twin's worker, in between
        return found

    store.same_content = twin_finishes_after_the_read  # type: ignore[method-assign,assignment]
    steps.advance(copy)
    assert client.forgotten == ["e03op"]  # A's results are gone from the service
    assert client.submitted == [], "paid again: B waited for the deleted results, got a 404"
    assert store.get(copy).state == state.DONE  # from A's saved result
    assert (tmp_path / "inbox" / "b.txt").read_text(encoding="utf-8") == "hi\n"
    assert json.loads((tmp_path / "inbox" / "b.json").read_text(encoding="utf-8")) == document
    store.close()


def test_the_twins_results_stay_while_a_copy_waits_for_them(tmp_path: Path) -> None:
    """The other order: B records its wait first, so A's end leaves the results for B."""
    store = state.Store(tmp_path / "state.db")
    twin = pending_copy(store, tmp_path, "a.ogg", "e03op")
    copy = pending_copy(store, tmp_path, "b.ogg", None)
    client = Client([SPEECH])
    now = [NOW]
    steps = steps_for(tmp_path, store, client, now)
    steps.preparing.prepare(store.get(copy))
    assert (store.get(copy).state, store.get(copy).operation_id) == (state.PENDING, "e03op")
    document = results.document(OPERATION, [SPEECH], speakers=False)
    steps.finishing.finish(store.get(twin), document, 1)
    assert client.forgotten == []
    steps.advance(copy)
    assert store.get(copy).state == state.DONE
    assert client.forgotten == ["e03op"]  # the last one waiting deletes them
    assert client.submitted == []
    store.close()


def _queued_copy(store: state.Store, tmp_path: Path, name: str, fixture: str) -> int:
    audio = tmp_path / "inbox" / name
    audio.parent.mkdir(exist_ok=True)
    audio.write_bytes((DATA / fixture).read_bytes())
    found = audio.stat()
    return store.add_version(
        path=str(audio), folder=str(audio.parent), size=found.st_size,
        mtime_ns=found.st_mtime_ns, now=NOW,
    )  # fmt: skip


def test_ogg_opus_is_read_for_its_checks_once_per_run_not_again_to_send_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prepare` checks the pages; the step that sends the file in the same run takes its
    verdict (the size, time and hash still guard it). After a restart the check runs again."""
    inspected: list[str] = []
    real_prepare = audio_module.prepare

    def counting(path: Path, *args: Any, **kwargs: Any) -> Any:
        inspected.append(Path(path).name)
        return real_prepare(path, *args, **kwargs)

    monkeypatch.setattr(audio_module, "prepare", counting)
    store = state.Store(tmp_path / "state.db")
    client = Client([SPEECH])
    now = [NOW]
    first = _queued_copy(store, tmp_path, "first.ogg", "mono.ogg")
    steps_for(tmp_path, store, client, now).advance(first)  # prepare, upload, submit
    assert store.get(first).state == state.PENDING
    assert inspected == ["first.ogg"]  # once: the submission sent what prepare checked
    assert client.submitted == [str(tmp_path / "inbox" / "first.ogg")]

    second = _queued_copy(store, tmp_path, "second.ogg", "stereo.ogg")  # not a twin
    steps = steps_for(tmp_path, store, client, now)
    # Hashed and checked; the process "restarts" here.
    assert steps.preparing.prepare(store.get(second))
    restarted = steps_for(tmp_path, store, client, now)
    restarted.advance(second)
    assert store.get(second).state == state.PENDING
    assert inspected == ["first.ogg", "second.ogg", "second.ogg"]  # checked again after restart
    store.close()
