"""Validation: the declared keys walked over a YAML document, every problem collected at once.

Each problem names the file and the key path (`config.yaml: at 'watch[1].path': message`).
Secret files (`*_file` keys, the service account's key file) are read here through
`daemon.secrets`, so an unreadable one is reported with the rest. Cross-key checks (exactly one
credential, language and model pairs, folders) run once every key on its own is valid.
Validation knows nothing of the environment: `${ENV}` references are resolved by the
`interpolate` function the loader passes in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from daemon import logs, secrets
from daemon.config.declaration import (
    AUTO_LANGUAGE,
    CREDENTIAL_KEYS,
    LANGUAGE_MODELS,
    V2_ONLY_KEYS,
    V3_MODELS,
    V3_ONLY_KEYS,
)
from daemon.config.schema import REQUIRED, Key

# A string with `${ENV}` references -> (the text with them resolved, the names that are unset).
Interpolate = Callable[[str], tuple[str, list[str]]]
UNREAD_SECRET = "(not read)"  # noqa: S105 - not a password: stands for a secret when a command loads the config without them


class ConfigError(Exception):
    """Configuration problems; each line names the file, the key path and the problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


def document(
    content: Any,
    keys: Sequence[Key],
    *,
    source: Path,
    interpolate: Interpolate,
    with_secrets: bool,
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The values of a parsed YAML document for every key, defaults filled in; and warnings.

    Raises ConfigError listing every problem. With `with_secrets=False` secrets are neither
    read nor required to be available: each stands as UNREAD_SECRET.
    """
    validator = _Validator(source, interpolate, with_secrets=with_secrets)
    if content is None:
        content = {}
    if not isinstance(content, dict):
        raise ConfigError([f"{source}: the config must be a mapping of keys, not {_kind(content)}"])
    values = validator.section(content, keys, "")
    # Every problem at once: the checks across keys run on what could be read, too. Where a key
    # they need was already refused (its value missing), the rest of them cannot run; what was
    # found so far is reported, and no crash hides it.
    had_problems = bool(validator.problems)
    try:
        validator.cross_checks(values)
    except (TypeError, KeyError, AttributeError, ValueError):
        if not had_problems:
            raise
    if validator.problems:
        raise ConfigError(validator.problems)
    return values, tuple(validator.warnings)


class _Validator:
    def __init__(self, source: Path, interpolate: Interpolate, *, with_secrets: bool) -> None:
        self.source = source
        self.interpolate_text = interpolate
        self.with_secrets = with_secrets
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.refused: set[str] = set()  # top-level sections with a refused key
        self.refused_alone: set[str] = set()  # those refused before the checks across keys

    def problem(self, key_path: str, message: str) -> None:
        self.problems.append(f"{self.source}: at '{key_path}': {message}")
        self.refused.add(key_path.split(".", maxsplit=1)[0].split("[", maxsplit=1)[0])

    def clean(self, *sections: str) -> bool:
        """Whether no key under these top-level sections was refused: a check across keys runs
        only on what was read, so a refused value never causes a second, misleading problem."""
        return not self.refused_alone.intersection(sections)

    def section(
        self, mapping: Mapping[str, Any], keys: Sequence[Key], prefix: str
    ) -> dict[str, Any]:
        known = {key.name: key for key in keys}
        secret_files = {f"{key.name}_file": key for key in keys if key.secret}
        result: dict[str, Any] = {}
        for name in mapping:
            if name not in known and name not in secret_files:
                self.problem(_join(prefix, str(name)), f"unknown key{_suggest(str(name), known)}")
        for key in keys:
            key_path = _join(prefix, key.name)
            present = key.name in mapping
            if key.secret:
                file_key = f"{key.name}_file"
                if present and file_key in mapping:
                    self.problem(key_path, f"set either '{key.name}' or '{file_key}', not both")
                    continue
                if not self.with_secrets and (
                    file_key in mapping or (present and mapping[key.name] is not None)
                ):
                    result[key.name] = UNREAD_SECRET
                    continue
                if file_key in mapping:
                    result[key.name] = self.secret_file(mapping[file_key], _join(prefix, file_key))
                    self.short_secret(result[key.name], _join(prefix, file_key))
                    continue
            if not present:
                if key.default is REQUIRED:
                    hint = f" (or '{key.name}_file')" if key.secret else ""
                    self.problem(key_path, f"required{hint}")
                    continue
                value = key.default
                if key.kind == "section" and value is not None:
                    value = self.section(value, key.children, key_path)
                result[key.name] = value
                continue
            result[key.name] = self.value(mapping[key.name], key, key_path)
            if key.secret:
                self.short_secret(result[key.name], key_path)
        return result

    def short_secret(self, value: Any, key_path: str) -> None:
        """A secret too short to be a real credential is not masked in output (it would mask
        ordinary words): say so, so that a placeholder is not mistaken for a hidden key."""
        if isinstance(value, str) and 0 < len(value) < logs.MIN_SECRET_LENGTH:
            self.warnings.append(
                f"{self.source}: at '{key_path}': only {len(value)} character(s), too short to be "
                f"a real credential; values under {logs.MIN_SECRET_LENGTH} characters are not "
                "masked in logs and output"
            )

    def resolve(self, text: str) -> Path:
        """A path from the config: `~` expanded, and a relative one taken from the config file's
        folder, not the working directory (which is `/` under systemd)."""
        path = Path(text).expanduser()
        return path if path.is_absolute() else self.source.parent.absolute() / path

    def secret_file(self, raw: Any, key_path: str) -> Any:
        text = self.string(raw, key_path)
        if text is None:
            return None
        file_name = str(self.resolve(text))
        try:
            text = secrets.read_secret_file(file_name)
        except secrets.SecretFileError as error:
            self.problem(key_path, str(error))
            return None
        self.warn_if_readable_by_others(Path(file_name), key_path)
        return text

    def warn_if_readable_by_others(self, path: Path, key_path: str) -> None:
        """A secret in a file every local user can read is not much of a secret."""
        warning = secrets.exposure_warning(path)
        if warning is not None:
            self.warnings.append(f"{self.source}: at '{key_path}': {warning}")

    def string(self, raw: Any, key_path: str) -> str | None:
        if not isinstance(raw, str):
            self.problem(key_path, f"expected a string, got {_kind(raw)}")
            return None
        return self.interpolate(raw, key_path)

    def interpolate(self, text: str, key_path: str) -> str | None:
        result, missing = self.interpolate_text(text)
        for name in missing:
            self.problem(key_path, f"environment variable {name} is not set")
        return None if missing else result

    def value(self, raw: Any, key: Key, key_path: str) -> Any:
        if raw is None:
            if key.nullable:
                return None
            self.problem(key_path, "must not be empty")
            return None
        handler = _KIND_HANDLERS[key.kind]
        return handler(self, raw, key, key_path)

    def credential_checks(self, speechkit: dict[str, Any]) -> None:
        """Exactly one way to authenticate; a key file is read and parsed here (fail fast)."""
        for name in ("api_key", "iam_token"):
            if speechkit.get(name) == "":
                self.problem(
                    f"speechkit.{name}",
                    "must not be empty (leave the key out, or write null, to use another one)",
                )
                return
        chosen = [name for name in CREDENTIAL_KEYS if speechkit.get(name)]
        if len(chosen) != 1:
            found = f"found {' and '.join(chosen)}" if chosen else "none is set"
            self.problem(
                "speechkit",
                "set exactly one of api_key, iam_token, service_account_key_file, "
                f"metadata_service: true ({found})",
            )
            return
        if speechkit.get("iam_token"):
            self.warnings.append(
                f"{self.source}: at 'speechkit.iam_token': a static IAM token expires within "
                "12 hours, and then every request is refused; for a service that keeps running "
                "use service_account_key_file, metadata_service or api_key"
            )
        key_file = speechkit.get("service_account_key_file")
        if key_file is None or not self.with_secrets:
            return
        key_path = "speechkit.service_account_key_file"
        try:
            speechkit["service_account_key"] = secrets.read_key_file(key_file)
        except secrets.SecretFileError as error:
            self.problem(key_path, str(error))
            return
        self.warn_if_readable_by_others(Path(key_file), key_path)

    def recognition_checks(self, values: dict[str, Any]) -> None:
        """Pairs of settings the service refuses together, for the global and each folder's."""
        base = values["recognition"]
        places = [("recognition", base)] + [
            (f"watch[{index}].recognition", {**base, **_set_values(folder["recognition"])})
            for index, folder in enumerate(values["watch"])
            if _set_values(folder["recognition"])
        ]
        api = values["speechkit"].get("api")
        for prefix, settings in places:
            self.api_checks(prefix, settings, api)
            language, model = settings.get("language"), settings.get("model")
            if language is None or model is None:
                continue  # already reported
            allowed = LANGUAGE_MODELS.get(language)
            if allowed is not None and model not in allowed:
                self.problem(
                    f"{prefix}.language",
                    f"{language} is recognised only by model {' or '.join(allowed)}, and "
                    f"'{prefix}.model' is {model}: set model: {allowed[0]}, or another language",
                )
            if language == AUTO_LANGUAGE and settings.get("literature_text"):
                self.warnings.append(
                    f"{self.source}: at '{prefix}.literature_text': with language auto the "
                    "service does not normalize the text, so literature_text has no effect"
                )

    def api_checks(self, prefix: str, settings: Mapping[str, Any], api: str | None) -> None:
        """Settings only the other API understands: a problem naming both keys."""
        if api not in ("v2", "v3"):
            return  # already reported
        other = "v3" if api == "v2" else "v2"
        for name in V3_ONLY_KEYS if api == "v2" else V2_ONLY_KEYS:
            if settings.get(name):
                self.problem(
                    f"{prefix}.{name}",
                    f"exists only in SpeechKit API {other}, and 'speechkit.api' is {api}: set "
                    f"speechkit.api: {other}, or remove {name}",
                )
        model = settings.get("model")
        if api == "v3" and model is not None and model not in V3_MODELS:
            self.problem(
                f"{prefix}.model",
                f"{model} exists only in SpeechKit API v2, and 'speechkit.api' is v3: use "
                f"one of {', '.join(V3_MODELS)}, or speechkit.api: v2",
            )

    def cross_checks(self, values: dict[str, Any]) -> None:
        self.refused_alone = set(self.refused)
        if self.clean("speechkit"):
            self.credential_checks(values["speechkit"])
        if (
            self.clean("storage", "speechkit")
            and values.get("storage") is None
            and values["speechkit"].get("api") != "v3"
        ):
            self.problem(
                "storage",
                "required with 'speechkit.api' v2 (only API v3 can take the audio inline, "
                "without a bucket)",
            )
        if self.clean("recognition", "watch", "speechkit"):
            self.recognition_checks(values)
        if not self.clean("watch", "on_complete", "webhooks", "metrics"):
            return
        if not values["watch"]:
            self.problem("watch", "list at least one folder to watch")
        hook = values["on_complete"]
        if hook is not None and not hook["command"]:
            self.problem("on_complete.command", "give the program to run")
        for index, webhook in enumerate(values["webhooks"] or ()):
            if webhook.get("events") == []:
                self.problem(f"webhooks[{index}].events", "list done, failed or both")
        metrics = values["metrics"]
        if metrics is not None and metrics.get("listen") is not None:
            problem = listen_problem(metrics["listen"])
            if problem is not None:
                self.problem("metrics.listen", problem)
        seen: dict[str, int] = {}
        for index, folder in enumerate(values["watch"]):
            if folder["after_done"] == "move" and not folder["move_to"]:
                self.problem(f"watch[{index}].move_to", "required when after_done is move")
            if folder["after_failed"] == "move" and not folder["failed_move_to"]:
                self.problem(f"watch[{index}].failed_move_to", "required when after_failed is move")
            for action, days in (("after_done", "after_done_days"),
                                 ("after_failed", "after_failed_days")):  # fmt: skip
                if folder[action] == "keep" and folder[days]:
                    self.warnings.append(
                        f"{self.source}: at 'watch[{index}].{days}': {action} is keep, so the "
                        "audio is kept and the delay does nothing"
                    )
            resolved = str(Path(folder["path"]).resolve())
            if resolved in seen:
                self.problem(f"watch[{index}].path", f"the same folder as watch[{seen[resolved]}]")
            seen[resolved] = index


def listen_problem(listen: str) -> str | None:
    """Why `HOST:PORT` is not an address to listen on, or None."""
    host, colon, port = listen.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"'{listen}' is not HOST:PORT (for example 127.0.0.1:9464)"
    return None


def _check_str(validator: _Validator, raw: Any, key: Key, key_path: str) -> Any:
    text = validator.string(raw, key_path)
    if text is not None and not text and not key.nullable:
        validator.problem(key_path, "must not be empty")
        return None
    return text


def _check_url(validator: _Validator, raw: Any, key: Key, key_path: str) -> Any:
    text = validator.string(raw, key_path)
    if text is not None and not re.match(r"^https?://[^/\s]+", text):
        validator.problem(key_path, f"expected an http:// or https:// URL, got {text!r}")
        return None
    return text


def _check_path(validator: _Validator, raw: Any, key: Key, key_path: str) -> Any:
    text = _check_str(validator, raw, key, key_path)
    if text is None:
        return None
    return validator.resolve(text)


def _check_enum(validator: _Validator, raw: Any, key: Key, key_path: str) -> Any:
    text = validator.string(raw, key_path)
    if text is not None and text not in key.choices:
        validator.problem(key_path, _not_a_choice(text, key.choices))
        return None
    return text


def _check_language(validator: _Validator, raw: Any, key: Key, key_path: str) -> Any:
    """A language code in any case, as the service reads it; the canonical spelling is kept."""
    text = validator.string(raw, key_path)
    if text is None:
        return None
    canonical = {choice.lower(): choice for choice in key.choices}.get(text.lower())
    if canonical is None:
        validator.problem(key_path, _not_a_choice(text, key.choices))
    return canonical


def _check_bool(validator: _Validator, raw: Any, key: Key, key_path: str) -> Any:
    if isinstance(raw, bool):
        return raw
    validator.problem(key_path, f"expected true or false, got {_kind(raw)}")
    return None


def _check_number(validator: _Validator, raw: Any, key: Key, key_path: str) -> Any:
    integer = key.kind == "int"
    if (
        isinstance(raw, bool)
        or not isinstance(raw, int | float)
        or (integer and isinstance(raw, float))
    ):
        validator.problem(
            key_path, f"expected {'an integer' if integer else 'a number'}, got {_kind(raw)}"
        )
        return None
    if key.minimum is not None and raw < key.minimum:
        validator.problem(key_path, f"must be at least {key.minimum:g}, got {raw}")
        return None
    return int(raw) if integer else float(raw)


def _check_list(validator: _Validator, raw: Any, key: Key, key_path: str) -> Any:
    if not isinstance(raw, list):
        validator.problem(key_path, f"expected a list, got {_kind(raw)}")
        return None
    items: list[str] = []
    for index, item in enumerate(raw):
        text = validator.string(item, f"{key_path}[{index}]")
        if text is None:
            continue
        if key.item_choices and text not in key.item_choices:
            validator.problem(f"{key_path}[{index}]", _not_a_choice(text, key.item_choices))
            continue
        items.append(text)
    return items


def _check_languages(validator: _Validator, raw: Any, key: Key, key_path: str) -> Any:
    """A list of language codes (any case, as the service reads them), or `auto` alone."""
    if isinstance(raw, str):
        if raw.strip().lower() == AUTO_LANGUAGE:
            return [AUTO_LANGUAGE]
        validator.problem(key_path, f"expected a list of language codes or auto, got {raw!r}")
        return None
    if not isinstance(raw, list):
        validator.problem(key_path, f"expected a list of language codes or auto, got {_kind(raw)}")
        return None
    canonical = {choice.lower(): choice for choice in key.item_choices}
    items: list[str] = []
    for index, item in enumerate(raw):
        text = validator.string(item, f"{key_path}[{index}]")
        if text is None:
            continue
        found = canonical.get(text.lower())
        if found is None:
            validator.problem(f"{key_path}[{index}]", _not_a_choice(text, key.item_choices))
            continue
        items.append(found)
    return items


def _check_section(validator: _Validator, raw: Any, key: Key, key_path: str) -> Any:
    if not isinstance(raw, dict):
        validator.problem(key_path, f"expected a mapping of keys, got {_kind(raw)}")
        return None
    return validator.section(raw, key.children, key_path)


def _check_sections(validator: _Validator, raw: Any, key: Key, key_path: str) -> Any:
    if not isinstance(raw, list):
        validator.problem(key_path, f"expected a list of folders, got {_kind(raw)}")
        return []
    sections = []
    for index, item in enumerate(raw):
        item_path = f"{key_path}[{index}]"
        if not isinstance(item, dict):
            validator.problem(item_path, f"expected a mapping with 'path', got {_kind(item)}")
            continue
        sections.append(validator.section(item, key.children, item_path))
    return sections


_KIND_HANDLERS: dict[str, Callable[[_Validator, Any, Key, str], Any]] = {
    "str": _check_str,
    "url": _check_url,
    "path": _check_path,
    "enum": _check_enum,
    "language": _check_language,
    "bool": _check_bool,
    "int": _check_number,
    "float": _check_number,
    "list": _check_list,
    "languages": _check_languages,
    "section": _check_section,
    "sections": _check_sections,
}


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a mapping"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def _suggest(name: str, known: Mapping[str, Key]) -> str:
    import difflib  # noqa: PLC0415 - only needed on the error path

    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _folded(text: str) -> str:
    """A spelling compared loosely: case, `_` for `-` and spaces do not matter."""
    return text.strip().lower().replace("_", "-")


def _not_a_choice(text: str, choices: Sequence[str]) -> str:
    """The problem with a value outside a list, with the closest choice when one is near."""
    import difflib  # noqa: PLC0415 - only needed on the error path

    by_folded = {_folded(choice): choice for choice in choices}
    near = difflib.get_close_matches(_folded(text), list(by_folded), n=1, cutoff=0.6)
    hint = f" (did you mean {by_folded[near[0]]!r}?)" if near else ""
    return f"expected one of {', '.join(choices)}; got {text!r}{hint}"


def _set_values(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}
