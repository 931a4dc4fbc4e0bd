"""The config schema, loading, interpolation and validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon import checks, config

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    "YC_ACCESS_KEY_ID": "key-id",
    "YC_SECRET_ACCESS_KEY": "s3-secret",
    "YC_API_KEY": "api-secret",
    "WEBHOOK_SECRET": "webhook-secret",
}


def minimal(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "watch": [{"path": "/srv/inbox"}],
        "storage": {
            "bucket": "bucket",
            "access_key_id": "${YC_ACCESS_KEY_ID}",
            "secret_access_key": "${YC_SECRET_ACCESS_KEY}",
        },
        "speechkit": {"api_key": "${YC_API_KEY}"},
    }
    document.update(overrides)
    return document


def parse(document: Any, environ: dict[str, str] | None = None) -> config.Config:
    return config.parse(
        document, source=Path("conf.yaml"), environ=ENV if environ is None else environ
    )


def problems(document: Any, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(config.ConfigError) as caught:
        parse(document, environ)
    return caught.value.problems


def test_minimal_config_gets_every_default() -> None:
    settings = parse(minimal())
    assert settings.watch[0].path == Path("/srv/inbox")
    assert settings.watch[0].patterns[:2] == ("*.ogg", "*.opus")
    assert {"*.wav", "*.mp3", "*.m4a", "*.flac", "*.webm", "*.mp4"} <= set(
        settings.watch[0].patterns
    )
    assert settings.watch[0].recursive is False
    assert _storage(settings).endpoint_url == "https://storage.yandexcloud.net"
    assert _storage(settings).link == "presigned"
    assert _storage(settings).delete_after is True
    assert settings.speechkit.recognize_url.endswith("/speech/stt/v2/longRunningRecognize")
    assert settings.settle_seconds == 2.0
    assert settings.outputs == ("txt", "json")
    assert settings.state_file == Path("/var/lib/speechkit-watch/state.db")


def test_environment_references_are_substituted_and_secrets_hidden() -> None:
    settings = parse(minimal())
    assert _storage(settings).secret_access_key.reveal() == "s3-secret"
    assert settings.speechkit.api_key == config.Secret("api-secret")
    assert "api-secret" not in repr(settings)
    assert "s3-secret" not in repr(settings)
    assert sorted(settings.secrets()) == ["api-secret", "key-id", "s3-secret"]


def test_dollar_dollar_is_a_literal_dollar() -> None:
    settings = parse(minimal(storage={**minimal()["storage"], "prefix": "cost$$/"}))
    assert _storage(settings).prefix == "cost$/"


def test_every_problem_is_reported_at_once_with_file_and_key_path() -> None:
    document = minimal(settle_seconds="soon", log_level="loud", concurrency=0)
    document["storage"] = {"bucket": 5, "colour": "red"}
    document["watch"][0]["patterns"] = "*.ogg"
    found = problems(document, environ={})
    assert "conf.yaml: at 'settle_seconds': expected a number, got a string" in found
    assert any(
        line.startswith("conf.yaml: at 'log_level': expected one of debug") for line in found
    )
    assert "conf.yaml: at 'concurrency': must be at least 1, got 0" in found
    assert "conf.yaml: at 'storage.bucket': expected a string, got an integer" in found
    assert "conf.yaml: at 'storage.colour': unknown key" in found
    assert "conf.yaml: at 'storage.access_key_id': required (or 'access_key_id_file')" in found
    assert "conf.yaml: at 'watch[0].patterns': expected a list, got a string" in found
    assert "conf.yaml: at 'speechkit.api_key': environment variable YC_API_KEY is not set" in found
    assert len(found) == 9


def test_unknown_key_suggests_the_close_one() -> None:
    found = problems(minimal(setle_seconds=1))
    assert found == ["conf.yaml: at 'setle_seconds': unknown key (did you mean 'settle_seconds'?)"]


def test_secret_file_form(tmp_path: Path) -> None:
    secret_file = tmp_path / "api_key"
    secret_file.write_text("from-file\n")
    settings = parse(minimal(speechkit={"api_key_file": str(secret_file)}))
    assert settings.speechkit.api_key == config.Secret("from-file")


def test_secret_and_secret_file_together_is_an_error(tmp_path: Path) -> None:
    found = problems(minimal(speechkit={"api_key": "x", "api_key_file": str(tmp_path / "f")}))
    assert found == [
        "conf.yaml: at 'speechkit.api_key': set either 'api_key' or 'api_key_file', not both"
    ]


def test_missing_secret_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    found = problems(minimal(speechkit={"api_key_file": str(missing)}))
    assert found == [
        f"conf.yaml: at 'speechkit.api_key_file': cannot read {missing}: No such file or directory"
    ]


def test_per_folder_recognition_overrides_the_global_settings() -> None:
    document = minimal(recognition={"language": "en-US", "literature_text": True})
    document["watch"] = [
        {"path": "/a"},
        {"path": "/b", "recognition": {"language": "de-DE", "model": "deferred-general"}},
    ]
    settings = parse(document)
    first, second = settings.watch
    assert first.recognition.specification()["languageCode"] == "en-US"
    assert second.recognition.specification() == {
        "languageCode": "de-DE",
        "model": "deferred-general",
        "profanityFilter": False,
        "literature_text": True,
        "audioEncoding": "OGG_OPUS",
        "rawResults": False,
    }


def test_specification_never_carries_a_channel_count() -> None:
    assert "audioChannelCount" not in config.Recognition().specification()


def test_bad_language_output_format_and_url() -> None:
    document = minimal(recognition={"language": "xx-XX"}, outputs=["txt", "docx"])
    document["speechkit"]["recognize_url"] = "ftp://example"
    found = problems(document)
    assert any("'recognition.language': expected one of ru-RU" in line for line in found)
    assert any(
        "'outputs[1]': expected one of txt, json, srt, vtt; got 'docx'" in line for line in found
    )
    assert any(
        "'speechkit.recognize_url': expected an http:// or https:// URL" in line for line in found
    )


def test_language_codes_are_read_in_any_case_and_sent_canonically() -> None:
    document = minimal(recognition={"language": "ru-ru"})
    document["watch"] = [{"path": "/a", "recognition": {"language": "EN-us"}}]
    settings = parse(document)
    assert settings.recognition.specification()["languageCode"] == "ru-RU"
    assert settings.watch[0].recognition.specification()["languageCode"] == "en-US"
    assert parse(minimal(recognition={"language": "AUTO"})).recognition.language == "auto"


def test_model_must_be_a_documented_one_with_the_list_in_the_message() -> None:
    assert problems(minimal(recognition={"model": "generel"})) == [
        "conf.yaml: at 'recognition.model': expected one of general, general:rc, "
        "general:deprecated, deferred-general; got 'generel' (did you mean 'general'?)"
    ]


def test_a_near_miss_of_a_language_model_or_output_says_which_was_meant() -> None:
    document = minimal(recognition={"language": "ru_ru"}, outputs=["TXT", "srtt"])
    document["watch"] = [{"path": "/a", "recognition": {"language": "en-UX"}}]
    found = problems(document)
    assert any(
        "'recognition.language': expected one of ru-RU" in line
        and line.endswith("got 'ru_ru' (did you mean 'ru-RU'?)")
        for line in found
    )
    assert any(line.endswith("got 'en-UX' (did you mean 'en-US'?)") for line in found)
    assert any(line.endswith("got 'TXT' (did you mean 'txt'?)") for line in found)
    assert any(line.endswith("got 'srtt' (did you mean 'srt'?)") for line in found)
    assert not any("did you mean" in line for line in problems(minimal(outputs=["pdf"])))


def test_a_language_its_model_does_not_serve_names_both_keys() -> None:
    found = problems(minimal(recognition={"language": "pt-br"}))
    assert found == [
        "conf.yaml: at 'recognition.language': pt-BR is recognised only by model general:rc, "
        "and 'recognition.model' is general: set model: general:rc, or another language"
    ]
    document = minimal(recognition={"model": "general:rc"})
    document["watch"] = [{"path": "/a", "recognition": {"language": "pt-BR"}}]
    assert parse(document).watch[0].recognition.model == "general:rc"
    document["watch"] = [{"path": "/a", "recognition": {"language": "pt-BR", "model": "general"}}]
    assert problems(document) == [
        "conf.yaml: at 'watch[0].recognition.language': pt-BR is recognised only by model "
        "general:rc, and 'watch[0].recognition.model' is general: set model: general:rc, or "
        "another language"
    ]


def test_auto_language_is_accepted_but_literature_text_is_said_to_do_nothing() -> None:
    settings = parse(minimal(recognition={"language": "auto", "literature_text": True}))
    assert settings.recognition.specification()["languageCode"] == "auto"
    assert any("with language auto the service does not normalize" in line
               for line in settings.warnings)  # fmt: skip
    assert parse(minimal(recognition={"language": "auto"})).warnings == ()


def test_the_same_folder_twice_is_an_error() -> None:
    found = problems(minimal(watch=[{"path": "/srv/x"}, {"path": "/srv/x/"}]))
    assert found == ["conf.yaml: at 'watch[1].path': the same folder as watch[0]"]


def test_empty_watch_list_is_an_error() -> None:
    assert problems(minimal(watch=[])) == [
        "conf.yaml: at 'watch': list at least one folder to watch"
    ]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("watch:\n  - path: [unclosed\n")
    with pytest.raises(config.ConfigError) as caught:
        config.load(path, environ=ENV)
    assert caught.value.problems[0].startswith(f"{path}: not valid YAML at line")


def test_missing_config_file_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.load(tmp_path / "none.yaml", environ=ENV)
    assert caught.value.problems == [
        f"{tmp_path / 'none.yaml'}: cannot read the config file: No such file or directory"
    ]


def test_config_path_resolution() -> None:
    assert config.resolve_path("x.yaml", {}) == Path("x.yaml")
    assert config.resolve_path(None, {"SPEECHKIT_WATCH_CONFIG": "/e.yaml"}) == Path("/e.yaml")
    assert config.resolve_path(None, {}) == Path("/etc/speechkit-watch/config.yaml")


def _yaml_key_paths(node: Any, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    if isinstance(node, dict):
        for name, value in node.items():
            path = f"{prefix}.{name}" if prefix else str(name)
            paths.add(path)
            if isinstance(value, dict) and value:
                paths |= _yaml_key_paths(value, path)
            if isinstance(value, list) and value and isinstance(value[0], dict):
                paths |= _yaml_key_paths(value[0], path + "[]")
    return paths


def _example_with_optional_sections() -> str:
    """The example with its commented-out optional sections (on_complete, webhooks, metrics)
    switched on."""
    text = (ROOT / "config.example.yaml").read_text()
    for name in ("on_complete", "webhooks", "metrics"):
        text = text.replace(f"\n# {name}:", f"\n{name}:")
    return text.replace("\n#   ", "\n  ")


def test_example_config_is_safe_as_it_is() -> None:
    """Copied as it is, the example runs no program that is not there (optional parts off)."""
    settings = config.load(ROOT / "config.example.yaml", environ=ENV)
    assert settings.on_complete is None
    assert settings.webhooks == ()
    assert settings.metrics is None
    assert not settings.warnings


def test_example_config_documents_every_key_and_is_valid(tmp_path: Path) -> None:
    example = tmp_path / "config.yaml"
    example.write_text(_example_with_optional_sections())
    document = yaml.safe_load(example.read_text())
    documented = _yaml_key_paths(document)
    # Per-folder recognition overrides are documented by reference to `recognition`.
    schema = {
        path for path in config.schema_key_paths() if not path.startswith("watch[].recognition.")
    }
    assert documented == schema
    settings = config.load(example, environ=ENV)
    assert _storage(settings).bucket == "my-bucket"
    defaults = parse(minimal())
    assert settings.settle_seconds == defaults.settle_seconds
    assert settings.watch[0].patterns == defaults.watch[0].patterns
    assert settings.polling == defaults.polling
    assert settings.recognition == defaults.recognition
    assert settings.rescan_seconds == defaults.rescan_seconds
    assert settings.concurrency == defaults.concurrency
    assert _storage(settings).presign_seconds == _storage(defaults).presign_seconds


def test_offline_commands_load_the_config_without_secrets(tmp_path: Path) -> None:
    document = minimal()
    document["speechkit"] = {"api_key_file": str(tmp_path / "only-the-service-can-read-this")}
    with pytest.raises(config.ConfigError):
        parse(document, environ={})
    settings = config.parse(document, source=Path("conf.yaml"), environ={}, with_secrets=False)
    assert settings.speechkit.api_key is not None
    assert settings.speechkit.api_key.reveal() == config.UNREAD_SECRET
    assert settings.state_file == Path("/var/lib/speechkit-watch/state.db")


def _documented_value(document: Any, key_path: str) -> Any:
    node = document
    for part in key_path.replace("[]", ".0").split("."):
        node = node[int(part)] if part.isdigit() else node[part]
    return node


def _plain(value: Any) -> Any:
    """A declared default as YAML writes it."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return value


def test_example_config_shows_each_declared_default() -> None:
    document = yaml.safe_load(_example_with_optional_sections())
    keys = dict(_declared_keys(config.SCHEMA))
    shown = {
        path: _documented_value(document, path)
        for path, key in keys.items()
        if key.default is not config.REQUIRED
        and key.kind not in ("section", "sections")  # their keys are compared one by one
        and not key.secret  # the example shows where a secret comes from: ${ENV}
        and not path.startswith("watch[].recognition.")
    }
    assert len(shown) > 30
    declared = {path: _plain(keys[path].default) for path in shown}
    assert shown == declared


def _declared_keys(keys: Any, prefix: str = "") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for key in keys:
        path = f"{prefix}.{key.name}" if prefix else key.name
        found.append((path, key))
        found.extend(_declared_keys(key.children, path + "[]" if key.kind == "sections" else path))
    return found


def test_relative_paths_are_taken_from_the_config_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "api_key").write_text("from-a-file\n")
    (folder / "api_key").chmod(0o600)
    document = minimal(state_file="state/state.db")
    document["watch"] = [{"path": "inbox", "output_dir": "../out", "move_to": "~/done"}]
    document["speechkit"] = {"api_key_file": "api_key"}
    (folder / "config.yaml").write_text(yaml.safe_dump(document))
    monkeypatch.chdir("/")  # where systemd starts the daemon
    settings = config.load(folder / "config.yaml", environ=ENV)
    assert settings.state_file == folder / "state" / "state.db"
    assert settings.watch[0].path == folder / "inbox"
    assert settings.watch[0].output_dir == folder / ".." / "out"
    assert settings.watch[0].move_to == Path("~/done").expanduser()
    assert settings.speechkit.api_key is not None
    assert settings.speechkit.api_key.reveal() == "from-a-file"


def _storage(settings: config.Config) -> config.Storage:
    """The storage section of a config that has one (every v2 config does)."""
    assert settings.storage is not None
    return settings.storage


def test_a_config_that_is_not_a_mapping_says_what_it_is() -> None:
    assert problems("just a line") == [
        "conf.yaml: the config must be a mapping of keys, not a string"
    ]
    assert problems([1, 2]) == ["conf.yaml: the config must be a mapping of keys, not a list"]


def test_a_secret_too_short_to_be_real_is_warned_about_and_not_masked_in_check_output() -> None:
    settings = parse(minimal(), environ={**ENV, "YC_API_KEY": "inbox"})
    assert settings.warnings == (
        "conf.yaml: at 'speechkit.api_key': only 5 character(s), too short to be a real "
        "credential; values under 6 characters are not masked in logs and output",
    )
    line = checks.format_line(checks.Result(checks.OK, "watch folder /srv/inbox exists"), ["inbox"])
    assert line == "ok       watch folder /srv/inbox exists"  # not "/srv/*** exists"
    masked = checks.format_line(checks.Result(checks.OK, "sent api-secret"), ["api-secret"])
    assert masked == "ok       sent ***"
    assert parse(minimal()).warnings == ()  # the usual test secrets are long enough


def test_problems_across_keys_come_with_the_problems_of_single_keys() -> None:
    document = minimal(concurrency="four")
    document["speechkit"] = {"api_key": "${YC_API_KEY}", "iam_token": "${YC_API_KEY}"}
    document["recognition"] = {"speaker_labeling": True}  # v3 only, with the default api v2
    found = problems(document)
    assert any("'concurrency'" in line for line in found)
    assert any("api_key and iam_token" in line for line in found)
    assert any("speaker_labeling" in line and "speechkit.api" in line for line in found)
