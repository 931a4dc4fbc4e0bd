"""Pure decisions of the local IAM token exchange and metadata service: no sockets, no clock.

`POST /iam/v1/tokens {"jwt": ...}` verifies the JWT as Yandex IAM does (SPEECHKIT.md,
"Authentication"): a PS256 signature by the public half of a registered authorized key, found by
the header's `kid`; `iss` is that key's service account; `aud` is the IAM audience; `exp` is in
the future and at most an hour after `iat`. The answer is `{"iamToken", "expiresAt"}`.
`GET .../service-accounts/default/token` with `Metadata-Flavor: Google` answers
`{"access_token", "expires_in", "token_type"}` like the metadata service of a cloud VM.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from speechkit_local.logic import (
    CODE_INVALID_ARGUMENT,
    CODE_UNAUTHENTICATED,
    RequestRejectedError,
)

IAM_PATH = "/iam/v1/tokens"
METADATA_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
IAM_AUDIENCE = "https://iam.api.cloud.yandex.net/iam/v1/tokens"  # what Yandex IAM expects
MAX_JWT_LIFETIME_SECONDS = 3600  # Yandex IAM refuses a JWT with exp - iat above an hour
CLOCK_SKEW_SECONDS = 300  # an `iat` this far in the future is still accepted (clients' clocks)
DEFAULT_TOKEN_LIFETIME_SECONDS = 12 * 3600.0  # real IAM tokens live at most 12 h
TOKEN_PREFIX = "t1."  # noqa: S105 - a prefix, not a secret: real IAM tokens start so


@dataclass(frozen=True)
class AuthorizedKey:
    """The public half of a service account's authorized key, as IAM stores it."""

    key_id: str
    service_account_id: str
    public_key_pem: str

    def public_key(self) -> rsa.RSAPublicKey:
        key = serialization.load_pem_public_key(self.public_key_pem.encode("ascii"))
        if not isinstance(key, rsa.RSAPublicKey):
            raise TypeError(f"key {self.key_id}: not an RSA public key")
        return key


def _unauthenticated(message: str) -> RequestRejectedError:
    return RequestRejectedError(CODE_UNAUTHENTICATED, message)


def _invalid(message: str) -> RequestRejectedError:
    return RequestRejectedError(CODE_INVALID_ARGUMENT, message)


def _decode_part(part: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise _invalid(f"Invalid JWT: the {what} is not base64url") from None


def _json_part(part: str, what: str) -> dict[str, Any]:
    try:
        document = json.loads(_decode_part(part, what))
    except ValueError:
        raise _invalid(f"Invalid JWT: the {what} is not JSON") from None
    if not isinstance(document, dict):
        raise _invalid(f"Invalid JWT: the {what} is not a JSON object")
    return document


def _int_claim(claims: dict[str, Any], name: str) -> int:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"Invalid JWT: claim '{name}' must be an integer")
    return value


def jwt_from_request(body: bytes) -> str:
    """The `jwt` field of an exchange request; RequestRejectedError 400 otherwise."""
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _invalid("Invalid JSON payload") from None
    if not isinstance(document, dict) or not isinstance(document.get("jwt"), str):
        raise _invalid("Field 'jwt' is required")
    return str(document["jwt"])


def verify_jwt(
    jwt: str, keys: Sequence[AuthorizedKey], *, audience: str = IAM_AUDIENCE, now: float
) -> str:
    """The service account a JWT proves, or RequestRejectedError (401 for a bad proof)."""
    parts = jwt.split(".")
    if len(parts) != 3:
        raise _invalid("Invalid JWT: expected header.claims.signature")
    header, claims = _json_part(parts[0], "header"), _json_part(parts[1], "claims")
    if header.get("alg") != "PS256":
        raise _unauthenticated("Invalid JWT: only PS256 is accepted")
    key = next((key for key in keys if key.key_id == header.get("kid")), None)
    if key is None:
        raise _unauthenticated("Invalid JWT: unknown key id (kid)")
    signature = _decode_part(parts[2], "signature")
    try:
        key.public_key().verify(
            signature,
            f"{parts[0]}.{parts[1]}".encode("ascii"),
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH),
            hashes.SHA256(),
        )
    except InvalidSignature:
        raise _unauthenticated("Invalid JWT: signature verification failed") from None
    if claims.get("iss") != key.service_account_id:
        raise _unauthenticated("Invalid JWT: 'iss' is not the service account of the key")
    if claims.get("aud") != audience:
        raise _unauthenticated(f"Invalid JWT: 'aud' must be {audience}")
    issued_at, expires_at = _int_claim(claims, "iat"), _int_claim(claims, "exp")
    if expires_at - issued_at > MAX_JWT_LIFETIME_SECONDS:
        raise _invalid(f"Invalid JWT: exp - iat must be at most {MAX_JWT_LIFETIME_SECONDS} s")
    if expires_at <= now:
        raise _unauthenticated("Invalid JWT: expired")
    if issued_at > now + CLOCK_SKEW_SECONDS:
        raise _unauthenticated("Invalid JWT: issued in the future")
    return key.service_account_id


def format_expires_at(epoch_seconds: float) -> str:
    """RFC 3339 UTC with nanoseconds, as IAM writes `expiresAt`: `...T23:41:31.938779385Z`."""
    moment = datetime.datetime.fromtimestamp(epoch_seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}000Z"


def iam_answer(token: str, expires_at: float) -> dict[str, str]:
    return {"iamToken": token, "expiresAt": format_expires_at(expires_at)}


def metadata_answer(token: str, lifetime_seconds: float) -> dict[str, Any]:
    return {"access_token": token, "expires_in": int(lifetime_seconds), "token_type": "Bearer"}
