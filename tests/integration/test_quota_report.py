"""What `status` and the metrics say of the status-check quota: v2's is per hour, v3's per second
(no hourly limit is shown for it). Real state file and CLI, no servers."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from daemon import cli, config, gate, metrics, state
from tests.integration.test_metrics import samples


def status_of(
    tmp_path: Path, api: str, capsys: pytest.CaptureFixture[str]
) -> tuple[str, dict[str, Any]]:
    """`status` as text, and its quota (--json) and the metrics, under `api`."""
    (tmp_path / "inbox").mkdir(exist_ok=True)
    document: dict[str, Any] = {
        "watch": [{"path": str(tmp_path / "inbox")}],
        "speechkit": {"api_key": "key", "api": api},
        "state_file": str(tmp_path / "state.db"),
    }
    if api == "v2":
        document["storage"] = {"bucket": "b", "access_key_id": "i", "secret_access_key": "s"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    assert cli.main(["status", "-c", str(path)]) == 0
    text = capsys.readouterr().out
    assert cli.main(["status", "--json", "-c", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    settings = config.parse(document, source=path, environ={})
    store = state.Store(settings.state_file)
    collector = metrics.StateCollector(
        store, clock=time.time, quota_limits=lambda: gate.reported_limits(settings)[0],
        per_second_limits=lambda: gate.reported_limits(settings)[1], paused=dict,
    )  # fmt: skip
    scraped = samples(generate_latest(metrics.registry(collector)).decode())
    store.close()
    return text, {"quota": report["quota"], "metrics": scraped}


def test_status_checks_are_reported_against_the_limit_of_the_configured_api(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = state.Store(tmp_path / "state.db")
    for offset in (1.0, 2.0, 3.0):
        store.record_call(gate.CHECK_CALL, time.time() - offset)
    store.close()
    check = (("call", "check"),)
    text, found = status_of(tmp_path, "v3", capsys)
    assert "and 3 status checks in the last hour (status checks paced at 5 per second)" in text
    assert (found["quota"]["status_checks_per_hour"], found["quota"]["status_checks_per_second"]) \
        == (None, 5)  # fmt: skip
    assert ("speechkit_watch_quota_limit", check) not in found["metrics"]
    assert found["metrics"][("speechkit_watch_quota_limit_per_second", check)] == 5
    assert found["metrics"][("speechkit_watch_quota_used", check)] == 3
    text, found = status_of(tmp_path, "v2", capsys)
    assert "and 3/2500 status checks in the last hour\n" in text
    assert (found["quota"]["status_checks_per_hour"], found["quota"]["status_checks_per_second"]) \
        == (2500, None)  # fmt: skip
    assert found["metrics"][("speechkit_watch_quota_limit", check)] == 2500
    assert ("speechkit_watch_quota_limit_per_second", check) not in found["metrics"]
