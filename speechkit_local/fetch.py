"""Reading the audio an operation names, the way the real service does.

SpeechKit reads `audio.uri` with the service account's own rights and ignores the query string.
When the server knows the storage credentials and the URI points at that storage endpoint, the
object is read path-style with boto3 (so a plain, unsigned link works, and a presigned link's
expiry does not matter); any other URI is fetched with a plain GET (a presigned link carries its
own rights). Failures become the gRPC-style error the operation ends with.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import boto3
import botocore.config
import botocore.exceptions
import requests

from speechkit_local import logic

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MAX_AUDIO_BYTES = 1024**3  # the service's object size limit; a larger object is refused
DOWNLOAD_CHUNK_BYTES = 1024**2  # reads bounded memory steps while enforcing MAX_AUDIO_BYTES
DEFAULT_FETCH_TIMEOUT_SECONDS = 30.0  # a stalled storage server must not pin a worker forever

NOT_FOUND_MESSAGE = "Cannot read audio: object not found"
ACCESS_DENIED_MESSAGE = "Cannot read audio: access denied"
STORAGE_FAILED_MESSAGE = "Cannot read audio: storage request failed"
TOO_LARGE_MESSAGE = "Cannot read audio: the object is larger than 1 GB"

_NOT_FOUND_S3_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound"})
_DENIED_S3_CODES = frozenset(
    {"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "403", "Forbidden"}
)


# One boto3 session for every fetcher in the process: a new session reloads the S3 service
# model (~0.1 s), a client from a warm one takes milliseconds. Sessions are not thread-safe,
# so clients are made under the lock; the clients themselves are.
_SESSION_LOCK = threading.Lock()
_SESSION: boto3.session.Session | None = None


def _new_client(storage: StorageAccess, timeout_seconds: float) -> S3Client:
    global _SESSION  # noqa: PLW0603 - a process-wide cache, see above
    with _SESSION_LOCK:
        if _SESSION is None:
            _SESSION = boto3.session.Session()
        return _SESSION.client(
            "s3",
            endpoint_url=storage.endpoint_url,
            aws_access_key_id=storage.access_key_id,
            aws_secret_access_key=storage.secret_access_key,
            region_name=storage.region,
            config=botocore.config.Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                connect_timeout=timeout_seconds,
                read_timeout=timeout_seconds,
                retries={"max_attempts": 1, "mode": "standard"},
            ),
        )


class FetchError(Exception):
    """The audio could not be read; `code`/`message` become the operation's error."""

    def __init__(self, code: int, message: str, detail: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail  # for the log only; never holds a query string or a secret


@dataclass(frozen=True)
class StorageAccess:
    """The service account's view of the object storage."""

    endpoint_url: str
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    region: str


def _failure_for_status(status: int, detail: str) -> FetchError:
    if status == 404:
        return FetchError(logic.CODE_NOT_FOUND, NOT_FOUND_MESSAGE, detail)
    if status in (401, 403):
        return FetchError(logic.CODE_PERMISSION_DENIED, ACCESS_DENIED_MESSAGE, detail)
    return FetchError(logic.CODE_INTERNAL, STORAGE_FAILED_MESSAGE, detail)


class AudioFetcher:
    """Reads audio objects; safe to call from several worker threads."""

    def __init__(self, storage: StorageAccess | None, *, timeout_seconds: float) -> None:
        self._storage = storage
        self._timeout_seconds = timeout_seconds
        self._client: S3Client | None = None
        self._client_lock = threading.Lock()

    def fetch(self, uri: str) -> bytes:
        """The object's bytes; FetchError when it cannot be read."""
        storage_endpoint = self._storage.endpoint_url if self._storage else None
        location = logic.storage_object_location(uri, storage_endpoint)
        if location is not None:
            return self._fetch_from_storage(*location)
        return self._fetch_over_http(uri)

    def _s3_client(self) -> S3Client:
        # Made once, lazily: a server that is only sent presigned links never needs it.
        with self._client_lock:
            if self._client is None:
                assert self._storage is not None  # noqa: S101 - only called with storage set
                self._client = _new_client(self._storage, self._timeout_seconds)
            return self._client

    def _fetch_from_storage(self, bucket: str, key: str) -> bytes:
        detail = f"s3://{bucket}/{key}"
        try:
            answer = self._s3_client().get_object(Bucket=bucket, Key=key)
            size = answer.get("ContentLength", 0)
            if size > MAX_AUDIO_BYTES:
                answer["Body"].close()
                raise FetchError(logic.CODE_INVALID_ARGUMENT, TOO_LARGE_MESSAGE, detail)
            return answer["Body"].read()
        except botocore.exceptions.ClientError as error:
            error_code = str(error.response.get("Error", {}).get("Code", ""))
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            described = f"{detail}: {error_code or status}"
            if error_code in _NOT_FOUND_S3_CODES:
                status = 404
            elif error_code in _DENIED_S3_CODES:
                status = 403
            raise _failure_for_status(status, described) from error
        except (botocore.exceptions.BotoCoreError, OSError) as error:
            raise FetchError(
                logic.CODE_INTERNAL, STORAGE_FAILED_MESSAGE, f"{detail}: {type(error).__name__}"
            ) from error

    def _fetch_over_http(self, uri: str) -> bytes:
        detail = logic.strip_query(uri)
        try:
            with requests.get(uri, timeout=self._timeout_seconds, stream=True) as answer:
                if answer.status_code != 200:
                    raise _failure_for_status(
                        answer.status_code, f"{detail}: HTTP {answer.status_code}"
                    )
                body = bytearray()
                for piece in answer.iter_content(DOWNLOAD_CHUNK_BYTES):
                    body += piece
                    if len(body) > MAX_AUDIO_BYTES:
                        raise FetchError(logic.CODE_INVALID_ARGUMENT, TOO_LARGE_MESSAGE, detail)
                return bytes(body)
        except requests.RequestException as error:
            raise FetchError(
                logic.CODE_INTERNAL, STORAGE_FAILED_MESSAGE, f"{detail}: {type(error).__name__}"
            ) from error
