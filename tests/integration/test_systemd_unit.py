"""The systemd units in `systemd/`: they verify cleanly, the sandbox scores 2.0 or better, each
relaxed option says why, and the unit agrees with the daemon (drain time, paths, secrets).

`systemd-analyze` runs offline (no running systemd is needed); the tests that need it skip
where it is not installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from daemon import config, service
from tests.e2e.harness import command

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_UNIT = ROOT / "systemd" / "speechkit-watch.service"
USER_UNIT = ROOT / "systemd" / "speechkit-watch-user.service"
SYSTEM_SCRIPT = "/usr/local/bin/speechkit-watch"
USER_SCRIPT = "%h/.local/bin/speechkit-watch"
MAX_EXPOSURE = 2.0  # the target; borgmatic's sample unit scores 2.7
# Empty means "nothing allowed" for these, which is the strict setting, not a relaxed one.
EMPTY_IS_STRICT = {"CapabilityBoundingSet", "AmbientCapabilities"}
# Settings that open something up; each needs a comment right above it.
ALWAYS_EXPLAINED = {"ReadWritePaths", "RestrictAddressFamilies", "User", "ExecStart"}

DROP_INS = ROOT / "systemd" / "credentials"
README = ROOT / "README.md"
CREDENTIALS = "/run/credentials/speechkit-watch.service"
# Each credential is named after the config key that reads it (`NAME_file:` in the config).
FILE_KEYS = {child.name for key in config.SCHEMA for child in key.children if child.secret} | {
    "service_account_key"
}
# The four ways to authenticate (README "Credentials") and the drop-in for each.
CHOICES = {
    "api-key.conf": "api_key",
    "service-account-key.conf": "service_account_key",
    "iam-token.conf": "iam_token",
    "metadata-service.conf": None,
}

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


@dataclass(frozen=True)
class Setting:
    section: str
    key: str
    value: str
    line: int  # 0-based index in the file


def settings(unit: Path) -> list[Setting]:
    """Every `Key=value` line with its section (keys may repeat, so no configparser)."""
    found, section = [], ""
    for index, raw in enumerate(unit.read_text(encoding="utf-8").splitlines()):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append(Setting(section, key.strip(), value.strip(), index))
    return found


def values(unit: Path, key: str) -> list[str]:
    return [setting.value for setting in settings(unit) if setting.key == key]


def runnable_copy(unit: Path, script: str, folder: Path) -> Path:
    """The unit with ExecStart pointing at the installed console script (verify checks it)."""
    text = unit.read_text(encoding="utf-8")
    assert script in text
    copy = folder / "speechkit-watch.service"
    copy.write_text(text.replace(script, " ".join(command())), encoding="utf-8")
    return copy


def analyze(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, *arguments], capture_output=True, text=True, timeout=60, check=False, env=env
    )


def seconds(timespan: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|min)?", timespan)
    assert match, f"unexpected time span {timespan!r}"
    return float(match.group(1)) * (60 if match.group(2) == "min" else 1)


@needs_analyze
def test_system_unit_verifies_without_a_warning(tmp_path: Path) -> None:
    unit = runnable_copy(SYSTEM_UNIT, SYSTEM_SCRIPT, tmp_path)
    result = analyze("verify", "--man=no", "--generators=no", str(unit))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""
    assert result.stdout.strip() == ""


@needs_analyze
def test_user_unit_verifies_without_a_warning(tmp_path: Path) -> None:
    unit = runnable_copy(USER_UNIT, USER_SCRIPT, tmp_path)
    runtime = tmp_path / "runtime"  # a user manager needs one; none runs here
    runtime.mkdir(mode=0o700)
    result = analyze(
        "--user", "verify", "--man=no", "--generators=no", str(unit),
        env={"XDG_RUNTIME_DIR": str(runtime), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


@needs_analyze
def test_system_unit_sandbox_scores_two_or_better() -> None:
    result = analyze("security", "--offline=true", "--no-pager", str(SYSTEM_UNIT))
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout
    # systemd-analyze's own gate agrees (its threshold is in tenths).
    gate = analyze(
        "security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}", str(SYSTEM_UNIT)
    )
    assert gate.returncode == 0, gate.stdout


@pytest.mark.parametrize("unit", [SYSTEM_UNIT, USER_UNIT], ids=["system", "user"])
def test_every_relaxed_option_says_why(unit: Path) -> None:
    lines = unit.read_text(encoding="utf-8").splitlines()
    unexplained = []
    for setting in settings(unit):
        relaxed = (setting.value in {"", "no"} and setting.key not in EMPTY_IS_STRICT) or (
            setting.key in ALWAYS_EXPLAINED
        )
        above = lines[setting.line - 1].strip() if setting.line else ""
        previous_is_same_key = above.startswith(f"{setting.key}=")
        if relaxed and not above.startswith("#") and not previous_is_same_key:
            unexplained.append(lines[setting.line])
    assert unexplained == []


def test_system_unit_agrees_with_the_daemon() -> None:
    def one(key: str) -> str:
        found = values(SYSTEM_UNIT, key)
        assert len(found) == 1, f"{key}: {found}"
        return found[0]

    assert one("Type") == "notify"
    assert one("Restart") == "on-failure"
    assert "WatchdogSec" in {setting.key for setting in settings(SYSTEM_UNIT)}
    # SIGTERM: the daemon drains for DRAIN_SECONDS; systemd must not SIGKILL it sooner.
    assert seconds(one("TimeoutStopSec")) > service.DRAIN_SECONDS
    # The console script itself, with the default config path, no shell in between.
    argv = one("ExecStart").split()
    assert argv[:2] == [SYSTEM_SCRIPT, "run"]
    assert argv[argv.index("--config") + 1] == str(config.DEFAULT_CONFIG_PATH)
    assert not {"sh", "bash", "-c", ";", "&&", "|"} & set(argv)
    # The default state file lives in the StateDirectory, the config in ConfigurationDirectory.
    assert Path(config.DEFAULT_STATE_FILE).parent == Path("/var/lib") / one("StateDirectory")
    assert config.DEFAULT_CONFIG_PATH.parent == Path("/etc") / one("ConfigurationDirectory")
    # systemd keeps the configuration directory root-owned: the service user enters it as
    # "other", so its mode must grant others execute.
    assert int(one("ConfigurationDirectoryMode"), 8) & 0o001
    # Only the storage keys, which every setup needs: a LoadCredential= file that is missing
    # fails the start, so the SpeechKit credential comes from a drop-in (tests below).
    credentials = {value.split(":", 1)[0] for value in values(SYSTEM_UNIT, "LoadCredential")}
    assert credentials == {"access_key_id", "secret_access_key"}
    assert credentials <= FILE_KEYS
    assert one("RestartPreventExitStatus") == "2"  # a config error: restarting cannot help


def with_drop_in(drop_in_text: str, folder: Path) -> Path:
    unit = runnable_copy(SYSTEM_UNIT, SYSTEM_SCRIPT, folder)
    drop_ins = folder / "speechkit-watch.service.d"
    drop_ins.mkdir()
    (drop_ins / "credentials.conf").write_text(drop_in_text, encoding="utf-8")
    return unit


def test_there_is_a_drop_in_for_each_way_to_authenticate() -> None:
    assert {path.name for path in DROP_INS.glob("*.conf")} == set(CHOICES)
    for name, credential in CHOICES.items():
        found = {value.split(":", 1)[0] for value in values(DROP_INS / name, "LoadCredential")}
        assert found == ({credential} if credential else set()), name
        assert found <= FILE_KEYS


@needs_analyze
@pytest.mark.parametrize("name", sorted(CHOICES))
def test_unit_with_each_credential_drop_in_verifies(name: str, tmp_path: Path) -> None:
    unit = with_drop_in((DROP_INS / name).read_text(encoding="utf-8"), tmp_path)
    result = analyze("verify", "--man=no", "--generators=no", str(unit))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""
    assert result.stdout.strip() == ""


@needs_analyze
def test_the_no_storage_drop_in_verifies_before_a_credential_drop_in(tmp_path: Path) -> None:
    no_storage = SYSTEM_UNIT.parent / "no-storage.conf"
    assert values(no_storage, "LoadCredential") == [""]  # resets the unit's storage keys
    unit = with_drop_in((DROP_INS / "api-key.conf").read_text(encoding="utf-8"), tmp_path)
    shutil.copy(no_storage, tmp_path / "speechkit-watch.service.d" / "00-no-storage.conf")
    assert sorted(path.name for path in (tmp_path / "speechkit-watch.service.d").iterdir()) == [
        "00-no-storage.conf", "credentials.conf",
    ]  # fmt: skip
    result = analyze("verify", "--man=no", "--generators=no", str(unit))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


@needs_analyze
def test_verify_reads_the_drop_in(tmp_path: Path) -> None:
    """The check above would pass vacuously if verify ignored the drop-in folder."""
    unit = with_drop_in("[Service]\nNoSuchSetting=1\n", tmp_path)
    result = analyze("verify", "--man=no", "--generators=no", str(unit))
    assert "NoSuchSetting" in result.stderr


def readme_blocks_after(marker: str) -> tuple[str, str]:
    """The ```ini and ```yaml blocks that follow `marker` in the README."""
    text = README.read_text(encoding="utf-8")
    start = text.index(marker)
    match = re.compile(r" *```ini\n(.*?) *```.*?\n( *)```yaml\n(.*?) *```", re.S).search(
        text, start
    )
    assert match, marker
    return textwrap.dedent(match.group(1)), textwrap.dedent(match.group(3))


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_readme_shows_each_drop_in_with_a_config_that_loads(name: str, tmp_path: Path) -> None:
    drop_in, snippet = readme_blocks_after(f"`systemd/credentials/{name}`")
    shipped = (DROP_INS / name).read_text(encoding="utf-8")
    assert drop_in == "[Service]" + shipped.split("[Service]", 1)[1]  # less the header comment
    speechkit = yaml.safe_load(snippet)["speechkit"]
    document = {
        "watch": [{"path": "/srv/speech/inbox"}],
        "storage": {
            "bucket": "my-speech-bucket",
            **{
                f"{key}_file": f"{CREDENTIALS}/{key}"
                for key in ("access_key_id", "secret_access_key")
            },
        },
        "speechkit": speechkit,
    }
    loaded = config.parse(document, source=tmp_path / "config.yaml", environ={}, with_secrets=False)
    assert loaded.watch
    # The config reads the credential where the drop-in puts it.
    credential = CHOICES[name]
    if credential is None:
        assert speechkit == {"metadata_service": True}
    else:
        assert speechkit == {f"{credential}_file": f"{CREDENTIALS}/{credential}"}


WEBHOOK_DROP_IN = SYSTEM_UNIT.parent / "webhook-secret.conf"


def test_the_webhook_secret_file_the_readme_shows_is_loaded_by_a_shipped_drop_in(
    tmp_path: Path,
) -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("### Webhooks")
    match = re.compile(r"```yaml\n(.*?)```", re.S).search(text, start)
    assert match
    [receiver] = yaml.safe_load(match.group(1))["webhooks"]
    [credential] = values(WEBHOOK_DROP_IN, "LoadCredential")
    name, _, source = credential.partition(":")
    assert receiver["secret_file"] == f"{CREDENTIALS}/{name}"
    assert source == f"/etc/speechkit-watch/credentials/{name}"
    # The README tells how to install it, under a name that sorts after 00-no-storage.conf.
    installed = "/etc/systemd/system/speechkit-watch.service.d/webhook-secret.conf"
    assert f"systemd/webhook-secret.conf \\\n    {installed}" in text[start:]
    assert Path(installed).name > "00-no-storage.conf"
    document = {"watch": [{"path": "/srv/speech/inbox"}], "webhooks": [receiver],
                "speechkit": {"api": "v3", "api_key_file": f"{CREDENTIALS}/api_key"}}  # fmt: skip
    loaded = config.parse(document, source=tmp_path / "config.yaml", environ={}, with_secrets=False)
    assert loaded.webhooks


@needs_analyze
def test_the_webhook_drop_in_verifies_with_the_others(tmp_path: Path) -> None:
    unit = with_drop_in((DROP_INS / "api-key.conf").read_text(encoding="utf-8"), tmp_path)
    drop_ins = tmp_path / "speechkit-watch.service.d"
    shutil.copy(SYSTEM_UNIT.parent / "no-storage.conf", drop_ins / "00-no-storage.conf")
    shutil.copy(WEBHOOK_DROP_IN, drop_ins / "webhook-secret.conf")
    result = analyze("verify", "--man=no", "--generators=no", str(unit))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""
