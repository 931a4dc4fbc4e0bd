"""Secrets as they arrive on disk: `*_file` keys and the service account's authorized key file.

The config reads every secret file through here at load (so a missing or unreadable file is a
config error naming its key), and the credentials providers use the parsed key. This module
imports nothing else of the daemon: config and credentials both depend on it, never on each
other through it.

Messages name the file and the problem, never the file's content.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

KEY_FILE_BANNER = "PLEASE DO NOT REMOVE THIS LINE!"  # `yc` may put this line before the PEM
MIN_KEY_LINE_CHARACTERS = 16  # a PEM's short last line could match ordinary text in a log


class Secret:
    """A secret string that never shows itself in repr, str, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class SecretFileError(Exception):
    """A secret file cannot be used; the message names the file and why, never its content."""


class FormatError(ValueError):
    """A key file or a token service's answer is not shaped as it should be."""


# ---------------------------------------------------------------------------------------------
# Secret files


def read_secret_file(name: str | os.PathLike[str]) -> str:
    """The secret in a file (systemd LoadCredential=), without surrounding whitespace."""
    return _read_text(name).strip()


def exposure_warning(name: str | os.PathLike[str]) -> str | None:
    """What to say when a file holding a secret is readable by every user of this machine."""
    try:
        mode = Path(name).stat().st_mode
    except OSError:
        return None
    if not mode & stat.S_IROTH:
        return None
    return (
        f"{name} holds a secret and every user of this machine can read it (mode "
        f"{stat.S_IMODE(mode):04o}): run chmod o-r on it, or hand it over with systemd "
        "LoadCredential="
    )


def read_key_file(name: str | os.PathLike[str]) -> ServiceAccountKey:
    """Read and parse an authorized key file; SecretFileError says what is wrong."""
    text = _read_text(name)
    try:
        return parse_key_file(text)
    except ValueError as error:
        raise SecretFileError(f"{name}: {error}") from None


def _read_text(name: str | os.PathLike[str]) -> str:
    try:
        return Path(name).read_text(encoding="utf-8")
    except OSError as error:
        raise SecretFileError(f"cannot read {name}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise SecretFileError(f"{name} is not UTF-8 text") from None


# ---------------------------------------------------------------------------------------------
# The authorized key file (pure)


@dataclass(frozen=True)
class ServiceAccountKey:
    """An authorized key of a service account; the private key never shows in repr."""

    key_id: str
    service_account_id: str
    private_key_pem: Secret
    private_key: rsa.RSAPrivateKey = field(repr=False, compare=False)

    def secret_texts(self) -> list[str]:
        """The PEM and each of its base64 lines: a log showing any one of them leaks the key."""
        pem = self.private_key_pem.reveal()
        lines = [line for line in pem.splitlines() if not line.startswith("-----")]
        return [pem, *(line for line in lines if len(line) >= MIN_KEY_LINE_CHARACTERS)]


def strip_key_banner(pem: str) -> str:
    """The PEM block alone: `yc` may write `PLEASE DO NOT REMOVE THIS LINE! ...` before it."""
    start = pem.find("-----BEGIN")
    return pem[start:] if start >= 0 else pem


def parse_key_file(text: str) -> ServiceAccountKey:
    """Parse the JSON of `yc iam key create --output key.json`; ValueError says what is wrong.

    Messages never quote the file's content.
    """
    # cryptography loads only when a key file is parsed: `status` and `retry` start without it.
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415

    try:
        document = json.loads(text)
    except ValueError:
        raise FormatError(
            "not an authorized key file: not JSON (expected the output of "
            "`yc iam key create --output key.json`)"
        ) from None
    if not isinstance(document, dict):
        raise FormatError("not an authorized key file: expected a JSON object")
    fields = {}
    for name in ("id", "service_account_id", "private_key"):
        value = document.get(name)
        if not isinstance(value, str) or not value.strip():
            raise FormatError(f"not an authorized key file: '{name}' is missing or empty")
        fields[name] = value.strip()
    pem = strip_key_banner(fields["private_key"])
    try:
        private_key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError):
        raise FormatError("'private_key' is not an unencrypted PEM private key") from None
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise FormatError("'private_key' is not an RSA key (PS256 needs RSA)")
    return ServiceAccountKey(
        key_id=fields["id"],
        service_account_id=fields["service_account_id"],
        private_key_pem=Secret(pem),
        private_key=private_key,
    )
