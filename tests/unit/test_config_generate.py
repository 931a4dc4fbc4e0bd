"""`speechkit-watch config generate`: a config written from the one declaration of keys."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from daemon import config
from daemon.config.generate import generate
from tests.unit.test_config import _yaml_key_paths as key_paths

ENVIRONMENT = {"YC_ACCESS_KEY_ID": "id", "YC_SECRET_ACCESS_KEY": "secret", "YC_API_KEY": "key",
               "WEBHOOK_SECRET": "webhook"}  # fmt: skip


def test_the_generated_config_is_valid_as_it_is_once_its_variables_are_set() -> None:
    settings = config.parse(yaml.safe_load(generate()), source=Path("generated.yaml"),
                            environ=ENVIRONMENT)  # fmt: skip
    assert settings.on_complete is None  # optional features come switched off
    assert str(settings.watch[0].path) == "/srv/speech/inbox"
    assert settings.storage.bucket == "my-bucket"
    assert settings.speechkit.api_key is not None
    assert settings.speechkit.api_key.reveal() == "key"  # from ${YC_API_KEY}, never a value


def test_it_holds_every_declared_key_with_its_default() -> None:
    switched_on = yaml.safe_load(generate(switch_on=True))
    assert key_paths(switched_on) == set(config.schema_key_paths())
    settings = config.parse(switched_on, source=Path("generated.yaml"), environ=ENVIRONMENT)
    defaults = config.parse(
        {"watch": [{"path": "/srv/speech/inbox"}], "storage": switched_on["storage"],
         "speechkit": {"api_key": "${YC_API_KEY}"}},
        source=Path("defaults.yaml"), environ=ENVIRONMENT,
    )  # fmt: skip
    # Everything the generator wrote is the declared default (the placeholders aside).
    assert settings.recognition == defaults.recognition
    assert settings.watch[0].patterns == defaults.watch[0].patterns
    assert (settings.polling, settings.quota, settings.outputs, settings.state_file) == (
        defaults.polling,
        defaults.quota,
        defaults.outputs,
        defaults.state_file,
    )
    lines = generate().splitlines()
    assert any(line.startswith("# on_complete:") for line in lines)  # shown, switched off
    assert any(line.startswith("# webhooks:") for line in lines)
    assert any(line.startswith("# metrics:") for line in lines)
    assert settings.webhooks[0].events == ("done", "failed")
    assert settings.metrics is not None
    assert settings.metrics.listen == "127.0.0.1:9464"


def test_the_command_prints_it_without_a_config_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "config", "generate"], capture_output=True, text=True,
        check=False, cwd=tmp_path, env={"SPEECHKIT_WATCH_CONFIG": str(tmp_path / "none.yaml")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == generate()
