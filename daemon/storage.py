"""Object storage (Yandex Object Storage, any S3-compatible store) through boto3, except the
two calls every file makes: a small object's PUT and its presigned link.

Those two are signed by botocore's own SigV4 signers (`S3SigV4Auth`, `S3SigV4QueryAuth`) on a
bare `AWSRequest` for the path-style URL, and the PUT goes out through `daemon.transport`
(urllib3). A boto3 `put_object` costs ~1.5 ms of CPU, most of it botocore's machinery around the
request (event hooks, parameter validation, serialisation, endpoint rules, response parsing);
`generate_presigned_url` ~0.4 ms. Multipart uploads, HEAD, deletes and listings stay on boto3.

The object key comes from the content hash, so uploading the same bytes twice writes the same
object: a crash during upload is repaired by uploading again. An object under a hash key holds
exactly the bytes with that hash: the upload hashes the bytes as they are sent (each byte is read
from the file once; retries resend what was read), and an object whose bytes turn out not to
match (the file was rewritten while it went up) is deleted at once and never used.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import boto3
import boto3.s3.transfer
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials
import botocore.exceptions

from daemon import __version__, outcomes, transport
from daemon.config import Storage

# The object key of a row recorded without storage (API v3, audio sent inline): no object.
INLINE_KEY_PREFIX = "inline:"

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 10.0  # storage is a nearby service; a slow connect means it is down
READ_TIMEOUT_SECONDS = 60.0  # a part upload of 16 MB over a slow line still fits
BOTOCORE_ATTEMPTS = 3  # botocore's own standard-mode retries; our outer retry does the rest
# A small PUT is sent at most twice: one quick retry after a 5xx or a connection that closed
# without an answer (a kept-alive connection the store dropped, a node restarting), as botocore
# retried it. The PUT is idempotent (the key is the content's hash, the bytes are the ones in
# memory), so sending it again is safe. Not after a 4xx (the same request gets the same answer),
# a refused connect or a timeout (the store is down or slow; waiting again at once only delays
# the step's own retry with backoff, daemon/steps/upload.py, which takes it from there).
SMALL_PUT_ATTEMPTS = 2
SMALL_PUT_RETRY_PAUSE_SECONDS = 0.2  # a blip passes; an outage is the outer retry's business
SIGNING_SERVICE = "s3"  # the SigV4 service name of S3 and of Yandex Object Storage
USER_AGENT = f"speechkit-watch/{__version__}"
# The code of an S3 error answer (`<Error><Code>NoSuchBucket</Code>...`): all that is used of it,
# so a pattern rather than an XML parser over whatever a proxy sends.
_ERROR_CODE = re.compile(rb"<Code>\s*([^<\s]{1,100})\s*</Code>")
# Uploads read the file once, into memory, so that what is sent is what was hashed (a retry
# resends those bytes instead of reading a file that may have changed): below the threshold the
# whole file is one PUT from memory; above it, parts. Small parts keep the memory of one upload
# near TRANSFER_THREADS x MULTIPART_CHUNK (a 4-hour 1 GiB recording goes up within 120 MB RSS).
MULTIPART_THRESHOLD = 8 * 1024 * 1024
MULTIPART_CHUNK = 5 * 1024 * 1024  # the S3 minimum; 1 GiB / 5 MiB = 205 parts, far from 10,000
TRANSFER_THREADS = 4  # parts of one large upload in flight at once (and parts held in memory)
DELETE_BATCH_KEYS = 1000  # the most keys one S3 DeleteObjects request takes
HASH_METADATA = "sha256"  # x-amz-meta-sha256: the hash of the bytes the daemon sent

AUTH_ERROR_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "Forbidden"}
)


class StorageError(outcomes.Failure):
    """A storage call failed: the keys were refused (`auth`), or anything else, which is retried
    (a `Failure` whose service is storage)."""

    def __init__(self, message: str, *, auth: bool = False) -> None:
        kind = outcomes.Kind.AUTH if auth else outcomes.Kind.TRANSIENT
        super().__init__(kind, message, service=outcomes.Service.STORAGE)


class ContentChangedError(Exception):
    """The bytes read for an upload do not have the expected hash: the file changed meanwhile.

    The object written from them has been deleted again (or its deletion failed: `left_behind`).
    """

    def __init__(self, sent_sha256: str, *, left_behind: bool) -> None:
        super().__init__(f"the bytes sent hash to {sent_sha256[:12]}")
        self.sent_sha256 = sent_sha256
        self.left_behind = left_behind


class HashingReader:
    """A non-seekable reader that hashes every byte it hands out, in order, exactly once.

    Being non-seekable makes s3transfer read each byte once into memory and resend that memory on
    a retry, so the hash covers precisely what was sent.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._digest.update(data)
        self.size += len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def object_key(prefix: str, sha256: str, suffix: str = ".ogg") -> str:
    """The object key of some content: the prefix, then the hash (idempotent re-uploads)."""
    return f"{prefix}{sha256}{suffix}"


def plain_url(endpoint_url: str, bucket: str, key: str) -> str:
    """The path-style URL of an object, the form SpeechKit expects in `audio.uri`."""
    return f"{endpoint_url.rstrip('/')}/{bucket}/{urllib.parse.quote(key)}"


def without_query(url: str) -> str:
    """A URL safe for logs: presigned signatures live in the query string."""
    return url.split("?", 1)[0]


def _refused(status: int, body: bytes) -> StorageError:
    """An error answer, described as botocore's parser and `_describe` do: the S3 error code,
    or the status when the body has none."""
    found = _ERROR_CODE.search(body)
    code = found.group(1).decode("utf-8", "replace") if found else str(status)
    return StorageError(
        f"storage refused the request: {code} (HTTP {status})",
        auth=code in AUTH_ERROR_CODES or status == 403,
    )


def _unanswered(error: transport.TransportError) -> StorageError:
    """A request without an answer, in the words `_describe` uses for botocore's exceptions."""
    if error.timed_out:
        return StorageError("storage unreachable: timed out")
    if error.reason.startswith(transport.TUNNEL_REFUSALS):
        return StorageError(f"storage unreachable: {error.reason}")
    if not error.sent or error.reason == "the proxy failed":
        return StorageError("storage unreachable: connection failed")
    if error.reason == "TLS failed":
        return StorageError("storage request failed: SSLError")
    return StorageError("storage request failed: ConnectionClosedError")


def _retried(error: transport.TransportError | None, status: int) -> bool:
    """Whether a small PUT that failed so is worth one quick retry (SMALL_PUT_ATTEMPTS)."""
    if error is not None:
        return error.sent and not error.timed_out and error.reason in _DROPPED_REASONS
    return status >= 500


# A connection that closed (or was reset) after the request went out, before an answer.
_DROPPED_REASONS = frozenset({"connection closed without an answer", "ProtocolError"})


class _KnownPayloadAuth(botocore.auth.S3SigV4Auth):
    """botocore's S3 SigV4 signer, handed the payload's sha256 (already computed to name the
    object) instead of hashing the body a second time. Everything else is botocore's."""

    def payload(self, request: botocore.awsrequest.AWSRequest) -> str:
        known = request.context.get(_PAYLOAD_SHA256)
        return str(known) if known else str(super().payload(request))


_PAYLOAD_SHA256 = "speechkit_watch_payload_sha256"  # the request context entry it reads


def _describe(error: Exception) -> StorageError:
    if isinstance(error, botocore.exceptions.ClientError):
        details = error.response.get("Error", {})
        code = str(details.get("Code", "error"))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return StorageError(
            f"storage refused the request: {code} (HTTP {status})",
            auth=code in AUTH_ERROR_CODES or status == 403,
        )
    if isinstance(
        error, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectionError
    ):
        refusal = transport.tunnel_refusal(error)
        if refusal is not None:
            return StorageError(f"storage unreachable: {refusal}")
        return StorageError("storage unreachable: connection failed")
    if isinstance(
        error, botocore.exceptions.ReadTimeoutError | botocore.exceptions.ConnectTimeoutError
    ):
        return StorageError("storage unreachable: timed out")
    return StorageError(f"storage request failed: {type(error).__name__}")


class ObjectStore:
    """Upload, link and delete objects in one bucket."""

    def __init__(self, settings: Storage) -> None:
        self.settings = settings
        session = boto3.session.Session(
            aws_access_key_id=settings.access_key_id.reveal(),
            aws_secret_access_key=settings.secret_access_key.reveal(),
            region_name=settings.region,
        )
        self.client: S3Client = session.client(
            "s3",
            endpoint_url=settings.endpoint_url,
            config=botocore.config.Config(
                s3={"addressing_style": "path"},
                signature_version="s3v4",
                retries={"mode": "standard", "max_attempts": BOTOCORE_ATTEMPTS},
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                read_timeout=READ_TIMEOUT_SECONDS,
                # boto3 >= 1.36 sends checksum headers some S3-compatible stores reject.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                max_pool_connections=max(10, TRANSFER_THREADS * 4),
            ),
        )
        # The per-file calls: botocore's signers without the client around them (module doc).
        # A small PUT is made here, so botocore's `Expect: 100-continue` (a round trip, and an
        # interim answer read a byte per system call) is not sent; multipart parts keep it.
        credentials = botocore.credentials.Credentials(
            settings.access_key_id.reveal(), settings.secret_access_key.reveal()
        )
        self._put_signer = _KnownPayloadAuth(credentials, SIGNING_SERVICE, settings.region)
        self._link_signer = botocore.auth.S3SigV4QueryAuth(
            credentials, SIGNING_SERVICE, settings.region, expires=settings.presign_seconds
        )
        self.transport = transport.Transport(ca_variables=transport.BOTOCORE_CA_VARIABLES)
        self.transfer = boto3.s3.transfer.TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=MULTIPART_CHUNK,
            max_concurrency=TRANSFER_THREADS,
        )
        # s3transfer's own setting (boto3's constructor does not take it): parts read ahead.
        self.transfer.max_in_memory_upload_chunks = TRANSFER_THREADS

    def key_for(self, sha256: str) -> str:
        return object_key(self.settings.prefix, sha256)

    def exists(self, key: str, size: int, sha256: str) -> bool:
        """True if the object is already there as the daemon sent these bytes: this size and our
        hash in its metadata (a previous upload finished; objects of unknown origin are not
        trusted and are overwritten)."""
        try:
            head = self.client.head_object(Bucket=self.settings.bucket, Key=key)
        except botocore.exceptions.ClientError as error:
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404:
                return False
            raise _describe(error) from None
        except (botocore.exceptions.BotoCoreError, OSError) as error:
            raise _describe(error) from None
        metadata = head.get("Metadata") or {}
        return int(head.get("ContentLength", -1)) == size and metadata.get(HASH_METADATA) == sha256

    def upload(
        self,
        path: Path,
        key: str,
        size: int,
        sha256: str,
        progress: Callable[[int], None] | None = None,
    ) -> bool:
        """Put the file's bytes at `key`; True if uploaded. A large file is not sent again when
        the object is already there as the daemon sent it (False).

        ContentChangedError (after deleting the object) when the bytes read are not the ones
        with `sha256`. Large files go up in parts; s3transfer aborts an unfinished multipart
        upload on failure (unfinished uploads are billed). `progress` is called with the bytes
        of each piece sent (from s3transfer's threads).
        """
        if size < MULTIPART_THRESHOLD:
            return self._put_small(path, key, sha256, progress)
        if self.exists(key, size, sha256):
            return False
        with path.open("rb") as stream:
            reader = HashingReader(stream)
            self._put(reader, key, sha256, progress)
        if reader.hexdigest() != sha256:
            left_behind = False
            try:
                self.delete(key)
            except StorageError as error:
                log.error("could not delete object %s, whose bytes are not the ones of its "
                          "name (%s); the sweep retries", key, error)  # fmt: skip
                left_behind = True
            raise ContentChangedError(reader.hexdigest(), left_behind=left_behind)
        return True

    def _put_small(
        self, path: Path, key: str, sha256: str, progress: Callable[[int], None] | None
    ) -> bool:
        """One PUT of bytes read once and hashed before they are sent (a retry resends them).

        No HEAD first: for a small file, asking costs as much as sending it again, and the
        object key holds these bytes either way. Bytes that do not hash to `sha256` are never
        sent (ContentChangedError, nothing left behind).
        """
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise ContentChangedError(digest, left_behind=False)
        url = plain_url(self.settings.endpoint_url, self.settings.bucket, key)
        for attempt in range(1, SMALL_PUT_ATTEMPTS + 1):
            try:
                answer = self._send_put(url, data, sha256)
            except transport.TransportError as error:
                failure, retry = _unanswered(error), _retried(error, 0)
            else:
                if answer.status_code < 300:  # as botocore: 3xx and above are errors
                    break
                failure = _refused(answer.status_code, answer.content)
                retry = _retried(None, answer.status_code)
            if not retry or attempt == SMALL_PUT_ATTEMPTS:
                raise failure
            log.debug("storage PUT of %s failed (%s); sending it once more", key, failure)
            time.sleep(SMALL_PUT_RETRY_PAUSE_SECONDS)
        if progress is not None:
            progress(len(data))
        return True

    def _send_put(self, url: str, data: bytes, sha256: str) -> transport.Response:
        """One signed PUT of `data`, the headers boto3's put_object signs (the content type,
        our metadata, the payload's sha256, the date, the host), without `Expect: 100-continue`.
        Signed anew per attempt: the signature carries the time."""
        request = botocore.awsrequest.AWSRequest(
            method="PUT", url=url, data=data,
            headers={"Content-Type": "audio/ogg", f"x-amz-meta-{HASH_METADATA}": sha256},
        )  # fmt: skip
        request.context[_PAYLOAD_SHA256] = sha256
        self._put_signer.add_auth(request)
        headers = dict(request.headers.items())
        headers["Content-Length"] = str(len(data))  # unsigned, as botocore sends it
        headers["User-Agent"] = USER_AGENT
        return self.transport.request(
            "PUT", url, headers=headers, body=data,
            timeout=READ_TIMEOUT_SECONDS, connect_timeout=CONNECT_TIMEOUT_SECONDS,
        )  # fmt: skip

    def _put(
        self, reader: HashingReader, key: str, sha256: str, progress: Callable[[int], None] | None
    ) -> None:
        try:
            self.client.upload_fileobj(
                reader,  # type: ignore[arg-type]  # a reader is all s3transfer needs
                self.settings.bucket,
                key,
                ExtraArgs={"ContentType": "audio/ogg", "Metadata": {HASH_METADATA: sha256}},
                Callback=progress,
                Config=self.transfer,
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise _describe(error) from None
        except boto3.exceptions.S3UploadFailedError as error:
            cause = error.__cause__ or error.__context__
            if isinstance(
                cause, botocore.exceptions.BotoCoreError | botocore.exceptions.ClientError
            ):
                raise _describe(cause) from None
            raise StorageError(f"upload failed: {_first_line(str(error))}") from None

    def audio_uri(self, key: str) -> str:
        """The `audio.uri` for the recognition request, per `storage.link`."""
        url = plain_url(self.settings.endpoint_url, self.settings.bucket, key)
        if self.settings.link == "plain":
            return url
        # What generate_presigned_url("get_object") makes, by the signer it uses, without the
        # client's request pipeline around it (a test compares the two).
        request = botocore.awsrequest.AWSRequest(method="GET", url=url)
        self._link_signer.add_auth(request)
        return str(request.url)

    def delete(self, key: str) -> None:
        """Delete an object; deleting a missing object succeeds (S3 semantics)."""
        try:
            self.client.delete_object(Bucket=self.settings.bucket, Key=key)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise _describe(error) from None

    def delete_many(self, keys: list[str]) -> list[str]:
        """Delete objects with one request per DELETE_BATCH_KEYS keys; the keys that were not
        deleted (StorageError for a request that failed as a whole)."""
        failed: list[str] = []
        for start in range(0, len(keys), DELETE_BATCH_KEYS):
            batch = keys[start : start + DELETE_BATCH_KEYS]
            try:
                answer = self.client.delete_objects(
                    Bucket=self.settings.bucket,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                )
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
                raise _describe(error) from None
            failed.extend(str(error.get("Key")) for error in answer.get("Errors", []))
        return failed

    def list_keys(self) -> list[str]:
        """Every key under our prefix (to find objects orphaned by a crash)."""
        keys: list[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(
                Bucket=self.settings.bucket, Prefix=self.settings.prefix
            ):
                keys.extend(item["Key"] for item in page.get("Contents", []))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise _describe(error) from None
        return keys


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else text
