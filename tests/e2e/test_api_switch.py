"""A restart that changes `speechkit.api` and `storage` with files in flight: an operation is read
by the API that accepted it, a file not submitted yet goes with the settings of now."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from speechkit_local import LocalSpeechKit, devstack
from tests.e2e.harness import Daemon, wait_for
from tests.e2e.test_pipeline import MONO_TXT, STEREO_TXT, done_outputs
from tests.e2e.test_v3 import v3
from tests.fixtures_audio import fixture_path


def test_v3_without_storage_then_v2_with_storage_keeps_both_files(
    make_daemon: Callable[..., Daemon],
    inbox: Path,
    speechkit: LocalSpeechKit,
    seaweedfs: devstack.SeaweedFS,
    bucket: str,
) -> None:
    # v3, audio inline: `a` is submitted (its first check ~2.7 s later), then `b` waits in
    # `submitting` (the service answers 429) with the key `inline:<sha256>` and a v3 request.
    first = make_daemon(**v3(speechkit, polling={"seconds_per_minute": 30.0}))
    with first.start():
        shutil.copy(fixture_path("mono.ogg"), inbox / "a.ogg")
        wait_for(lambda: speechkit.stats()["submissions"] == 1, "a submitted")
        speechkit.set_faults(rate_limit_rate=1.0, rate_limit_endpoints=["submit"],
                             retry_after_seconds=1)  # fmt: skip
        shutil.copy(fixture_path("stereo.ogg"), inbox / "b.ogg")
        wait_for(lambda: speechkit.stats()["faults_injected"]["submit"]["rate_limit"] >= 1,
                 "b refused by the quota")  # fmt: skip
        assert first.stop() == 0
    speechkit.set_faults(rate_limit_rate=0.0)
    assert speechkit.stats()["submissions"] == 1
    # v2 with a bucket: `a`'s v3 operation is read with v3 (v2 would take its empty response
    # for no speech), `b` is uploaded under the storage prefix and submitted as v2.
    second = make_daemon(
        speechkit={"stt_v3_url": speechkit.stt_v3_url}, polling={"seconds_per_minute": 0.5}
    )
    with second.start():
        assert done_outputs(inbox, "a")[0] == MONO_TXT
        text, saved = done_outputs(inbox, "b")
        assert text == STEREO_TXT
        response = saved["response"]
        assert isinstance(response, dict)
        assert response["@type"].endswith("LongRunningRecognitionResponse")  # sent to v2
        second.wait_for_count("done", 2)
        assert second.status()["counts"]["failed"] == 0
        log = second.log()
        assert 'b.ogg" was recorded under other settings (API v3, without storage)' in log
        assert "as inline:" not in log  # uploaded under its key in the bucket
        wait_for(lambda: seaweedfs.list_keys(bucket=bucket) == [], "the bucket to be emptied")
        assert second.stop() == 0
    stats = speechkit.stats()
    assert stats["submissions"] == 2
    assert stats["v3"]["deleted"] == 1  # a's results removed by the API that has them
