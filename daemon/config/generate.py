"""`speechkit-watch config generate`: a commented config written from the one declaration of keys.

Every key of `SCHEMA` appears with its meaning and its default; required keys get a placeholder
to replace (secrets as `${ENV}` references, never a value), and optional sections (`on_complete`)
are written commented out, so that the output is safe to use as it is and valid once the
placeholders are filled in. Nothing here is written by hand per key: a new key in the declaration
appears here by itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePath
from typing import Any

import yaml

from daemon.config.declaration import SCHEMA
from daemon.config.schema import REQUIRED, Key

# What a required key is given, to be replaced: a folder, a bucket, secrets from the environment.
PLACEHOLDERS: dict[str, Any] = {
    "watch[].path": "/srv/speech/inbox",
    "storage.bucket": "my-bucket",
    "storage.access_key_id": "${YC_ACCESS_KEY_ID}",
    "storage.secret_access_key": "${YC_SECRET_ACCESS_KEY}",
    "speechkit.api_key": "${YC_API_KEY}",
    "on_complete.command": ["/usr/local/bin/notify-transcript"],
    "webhooks[].url": "https://hooks.example.org/transcripts",
    "webhooks[].secret": "${WEBHOOK_SECRET}",
}
COMMENT_COLUMN = 36  # comments line up after the longest ordinary `key: value`
INDENT = "  "

HEADER = """\
# speechkit-watch configuration, written by `speechkit-watch config generate` from the
# declaration of its keys: every key is here with its meaning and default. Replace the
# placeholders (the watched folder, the bucket) and set the variables named in ${...}.
# Any string may use ${ENV_VAR}; $$ is a literal $. Every secret also has a *_file form
# (api_key_file: /run/credentials/speechkit-watch.service/api_key). A relative path is taken
# from this file's folder. Check it with `speechkit-watch check -c FILE`.
"""


def generate(*, switch_on: bool = False) -> str:
    """The commented YAML of every declared key; `switch_on` writes the optional sections out
    uncommented too (the tests read every key that way)."""
    lines = [HEADER]
    for key in SCHEMA:
        lines.extend(_key_lines(key, "", 0, commented=False, switch_on=switch_on))
        if key.kind in ("section", "sections"):
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _value(key: Key, path: str) -> Any:
    if path in PLACEHOLDERS:
        return PLACEHOLDERS[path]
    if key.default is REQUIRED:
        return None
    if key.secret and key.default is None and path == "speechkit.api_key":
        return PLACEHOLDERS[path]
    return list(key.default) if isinstance(key.default, tuple) else key.default


def _scalar(value: Any) -> str:
    if isinstance(value, PurePath):
        value = str(value)
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000)
    return text.removesuffix("\n...\n").strip()


def _line(indent: str, text: str, doc: str, *, commented: bool) -> str:
    body = f"{indent}{text}"
    if commented:
        body = f"# {body}"
    return f"{body:<{COMMENT_COLUMN - 1}} # {doc}" if doc else body


def _key_lines(
    key: Key, prefix: str, depth: int, *, commented: bool, switch_on: bool = False
) -> Iterator[str]:
    path = f"{prefix}.{key.name}" if prefix else key.name
    indent = INDENT * depth
    doc = key.doc + ("; required" if key.default is REQUIRED and not key.secret else "")
    if key.secret:
        doc += f" (or {key.name}_file: a file holding it)"
    if key.choices and key.kind != "language" and not any(c in key.doc for c in key.choices):
        doc += f" ({', '.join(key.choices)})"
    if key.kind == "sections":
        # A list that is empty unless set (webhooks): one example item, commented out.
        off = commented or (key.default == () and not switch_on)
        yield _line(indent, f"{key.name}:", doc, commented=off)
        first = True
        for child in key.children:
            child_lines = list(
                _key_lines(child, f"{path}[]", depth + 2, commented=off, switch_on=switch_on)
            )
            if first:  # `- ` opens the one example item
                head = child_lines[0]
                marker = "# " if off else ""
                start = len(marker) + len(INDENT * (depth + 2))
                child_lines[0] = head[: start - 2] + "- " + head[start:]
                first = False
            yield from child_lines
        return
    if key.kind == "section":
        # A feature to switch on (default None): shown commented out.
        off = commented or (key.default is None and not switch_on)
        yield _line(indent, f"{key.name}:", doc, commented=off)
        for child in key.children:
            yield from _key_lines(child, path, depth + 1, commented=off, switch_on=switch_on)
        return
    value = _value(key, path)
    yield _line(indent, f"{key.name}: {_scalar(value)}", doc, commented=commented)
