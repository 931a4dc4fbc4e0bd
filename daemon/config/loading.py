"""Loading: which file, its YAML, `${ENV}` references, then validation and the typed config."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from daemon.config import validate
from daemon.config.declaration import SCHEMA, Config
from daemon.config.schema import build

DEFAULT_CONFIG_PATH = Path("/etc/speechkit-watch/config.yaml")
CONFIG_PATH_ENV = "SPEECHKIT_WATCH_CONFIG"

_ENV_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def resolve_path(cli_value: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """`-c`, else `$SPEECHKIT_WATCH_CONFIG`, else the system default."""
    environ = os.environ if environ is None else environ
    if cli_value:
        return Path(cli_value)
    if environ.get(CONFIG_PATH_ENV):
        return Path(environ[CONFIG_PATH_ENV])
    return DEFAULT_CONFIG_PATH


def load(
    path: Path, environ: Mapping[str, str] | None = None, *, with_secrets: bool = True
) -> Config:
    """Read, interpolate and validate the config file; raise ConfigError listing every problem.

    `with_secrets=False` is for commands that never talk to the cloud (`status`, `retry`,
    `render`): secrets are neither read nor required to be available, so an operator can run
    them without the service's credentials.
    """
    environ = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise validate.ConfigError(
            [f"{path}: cannot read the config file: {error.strerror}"]
        ) from None
    except UnicodeDecodeError:
        raise validate.ConfigError([f"{path}: the config file is not UTF-8 text"]) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = ""
        mark = getattr(error, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise validate.ConfigError([f"{path}: not valid YAML{where}: {problem}"]) from None
    return parse(document, source=path, environ=environ, with_secrets=with_secrets)


def parse(
    document: Any, *, source: Path, environ: Mapping[str, str], with_secrets: bool = True
) -> Config:
    """Validate an already-parsed YAML document (pure apart from reading `*_file` secrets)."""

    def interpolate(text: str) -> tuple[str, list[str]]:
        return interpolate_environment(text, environ)

    values, warnings = validate.document(
        document, SCHEMA, source=source, interpolate=interpolate, with_secrets=with_secrets
    )
    return build(Config, SCHEMA, {**values, "source": source, "warnings": warnings}, values)


def interpolate_environment(text: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """`text` with each `${NAME}` replaced by the variable and `$$` by `$`, and the names of the
    variables that are not set (replaced by nothing)."""
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        if name not in environ:
            missing.append(name)
            return ""
        return environ[name]

    return _ENV_REFERENCE.sub(substitute, text), missing
