"""Faults that once cost a wrong transcript or a bill: each test asserts the invariant from the
servers' counters and the files on disk, not from the daemon's own account of itself."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from speechkit_local import LocalSpeechKit, devstack
from tests.e2e.harness import Daemon, wait_for
from tests.fixtures_audio import opus_tags_packet, read_fixture, replace_tags
from tests.mounts import mounted
from tests.s3proxy import S3Proxy


def recording(text: str) -> bytes:
    """A mono recording whose echo transcript is `text` (equal lengths give equal sizes)."""
    tags = opus_tags_packet("speechkit-watch tests", [f"TRANSCRIPT={text}".encode()])
    return replace_tags(read_fixture("mono.ogg"), tags)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""


def objects_hold_their_hash(seaweedfs: devstack.SeaweedFS, bucket: str) -> list[str]:
    """Keys whose bytes do not hash to the name: must always be none."""
    client = seaweedfs.client()
    wrong = []
    for key in seaweedfs.list_keys(bucket=bucket):
        try:
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            continue  # deleted by the daemon since the listing
        if key.endswith(".ogg") and hashlib.sha256(body).hexdigest() not in key:
            wrong.append(key)
    return wrong


def test_a_file_rewritten_while_its_upload_is_retried_never_lends_its_words(
    make_daemon: Callable[..., Daemon],
    inbox: Path,
    seaweedfs: devstack.SeaweedFS,
    bucket: str,
    speechkit: LocalSpeechKit,
) -> None:
    first, second = recording("the first words."), recording("other words now.")
    assert len(first) == len(second)  # the rewrite keeps the size, as in the report
    with S3Proxy(seaweedfs.endpoint_url) as proxy:
        # The first upload is held, then refused with a 500: the client sends it again, after
        # the file has been rewritten in place with another recording.
        proxy.fail_next("PUT", 1, after_seconds=1.5)
        daemon = make_daemon(storage={"endpoint_url": proxy.url})
        with daemon.start():
            (inbox / "x.ogg").write_bytes(first)
            wait_for(lambda: proxy.received["PUT"] >= 1, "the first upload attempt")
            (inbox / "x.ogg").write_bytes(second)
            wait_for(lambda: read_text(inbox / "x.txt") == "other words now\n", "x's new words")
            assert objects_hold_their_hash(seaweedfs, bucket) == []
            # The first recording again, under another name: it must get its own words, not
            # the ones a stray object under its hash could hold.
            (inbox / "y.ogg").write_bytes(first)
            wait_for(lambda: read_text(inbox / "y.txt") == "the first words\n", "y's words")
            daemon.wait_for_count("done", 2)
            assert objects_hold_their_hash(seaweedfs, bucket) == []
            assert daemon.stop() == 0
        wait_for(lambda: seaweedfs.list_keys(bucket=bucket) == [], "an empty bucket")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fill(folder: Path) -> Path:
    """Write a ballast file until the file system is full."""
    ballast = folder / "ballast"
    with ballast.open("wb") as stream, pytest.raises(OSError) as full:  # noqa: PT012
        while True:
            stream.write(b"\0" * 65536)
            stream.flush()
    assert full.value.errno == errno.ENOSPC
    return ballast


def test_a_full_disk_under_the_state_file_costs_no_quota_and_work_resumes_after(
    make_daemon: Callable[..., Daemon], inbox: Path, tmp_path: Path, speechkit: LocalSpeechKit
) -> None:
    with mounted() as mounts:
        state_folder = mounts.tmpfs(tmp_path / "state", size="4m")
        daemon = make_daemon()
        with daemon.start():
            assert daemon.process is not None
            (inbox / "before.ogg").write_bytes(recording("before the disk filled."))
            daemon.wait_for_count("done", 1)
            ballast = fill(state_folder)
            for number in range(3):
                (inbox / f"during{number}.ogg").write_bytes(recording(f"recording {number}."))
            wait_for(lambda: "cannot write the state file" in daemon.log(), "the episode line")
            used_before = cpu_seconds(daemon.process.pid)
            window = 5.0
            time.sleep(window)  # what the daemon does while the disk stays full
            assert cpu_seconds(daemon.process.pid) - used_before < window * 0.3  # no busy loop
            assert daemon.process.poll() is None
            assert daemon.log().count("cannot write the state file") == 1
            assert speechkit.stats()["submissions"] == 1
            ballast.unlink()
            expected = {
                inbox / f"during{number}.txt": f"recording {number}\n" for number in range(3)
            }
            wait_for(
                lambda: all(read_text(path) == text for path, text in expected.items()),
                "every transcript once there is room again",
                timeout=30,
            )
            assert "the state file can be written again" in daemon.log()
            report = daemon.wait_for_count("done", 4)
            # The quota window counts the calls that were made, not the ones that were refused.
            assert report["quota"]["submissions_last_hour"] == 4
            assert daemon.stop() == 0
    assert speechkit.stats()["submissions"] == 4


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_state_file_taken_away_under_the_daemon_is_noticed_and_nothing_is_paid_again(
    how: str,
    make_daemon: Callable[..., Daemon],
    inbox: Path,
    tmp_path: Path,
    speechkit: LocalSpeechKit,
) -> None:
    state_file = tmp_path / "state" / "state.db"
    daemon = make_daemon()
    with daemon.start():
        assert daemon.process is not None
        (inbox / "one.ogg").write_bytes(recording("the first one."))
        (inbox / "two.ogg").write_bytes(recording("the other one."))
        daemon.wait_for_count("done", 2)
        if how == "replaced":
            shutil.copy(state_file, tmp_path / "copy.db")
        for leftover in state_file.parent.glob("state.db*"):
            leftover.unlink()
        if how == "replaced":
            (tmp_path / "copy.db").rename(state_file)
        assert daemon.process.wait(timeout=30) == 1
    reason = "it was deleted" if how == "deleted" else "another file took its place"
    assert f"the state file changed under the running daemon ({reason})" in daemon.log()
    with daemon.start():
        report = daemon.wait_for_count("done", 2)
        assert {row for row in report["counts"] if report["counts"][row]} == {"done"}
        assert daemon.stop() == 0
    assert speechkit.stats()["submissions"] == 2  # the transcripts beside them were not re-bought
    assert read_text(inbox / "one.txt") == "the first one\n"
    if how == "deleted":
        assert daemon.log().count("adopted ") == 2


def test_a_backlog_beyond_the_quota_waits_on_disk_not_in_the_bucket(
    make_daemon: Callable[..., Daemon],
    inbox: Path,
    seaweedfs: devstack.SeaweedFS,
    bucket: str,
    speechkit: LocalSpeechKit,
) -> None:
    daemon = make_daemon(quota={"submissions_per_hour": 2})
    with daemon.start():
        for number in range(5):
            (inbox / f"call{number}.ogg").write_bytes(recording(f"call number {number}."))
        report = daemon.wait_for_count("done", 2)
        # The other three wait for the quota, an hour away: they are not uploaded meanwhile.
        assert report["counts"]["submitting"] == 0
        assert report["counts"]["queued"] + report["counts"]["uploading"] == 3
        wait_for(lambda: seaweedfs.list_keys(bucket=bucket) == [], "the done files' objects to go")
        assert daemon.stop() == 0
    assert speechkit.stats()["submissions"] == 2
