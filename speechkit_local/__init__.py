"""A local, SpeechKit-v2-compatible HTTP server for developing and testing the daemon.

The real Yandex cloud is not reachable from development machines or CI, so the daemon is built
against this server and must work unchanged against the real endpoints by changing only URLs
and credentials. It is faithful in every shape the daemon sees: paths, JSON field names, HTTP
status plus gRPC code error bodies, operation objects, duration strings, channelTag strings.

Recognition is done by an engine (`engines`): the *echo engine* (the default) does not recognise
speech, it returns the text stored in the file's Opus comments (TRANSCRIPT for channel 1,
TRANSCRIPT_CH2 for channel 2), one chunk per sentence, with word timings spread evenly over the
audio's duration; the *whisper engine* recognises speech with faster-whisper, channel by
channel. Without `literature_text` the text is lower-cased and stripped of punctuation, as the
real service normalises it.
`profanityFilter` and `rawResults` are accepted and validated but change nothing.

Timing: an operation is done at creation + base_delay_seconds + seconds_per_minute x audio
minutes x channels, or when the worker has read and inspected the audio if that is later.
Unreadable or non-Opus audio fails after base_delay_seconds; the fault `operation_error_rate`
fails good audio at its normal completion time. Results are forgotten (404) retention_seconds
after completion.

Credentials: API keys and static IAM tokens from the settings; an IAM token exchange
(`POST /iam/v1/tokens`) that verifies PS256 JWTs against registered public keys and issues
tokens with a configurable lifetime (tests shorten it to watch renewals); and a VM metadata
service endpoint. Issued tokens expire on the server's clock.

Modules: `logic` (pure decisions), `iam` (pure JWT verification and token answers), `faults`
(fault injection settings and draws), `fetch` (reading the audio like the service does),
`engines` (echo, whisper and the whisper model's origin),
`service` (operations and counters), `server` (HTTP and the in-process `LocalSpeechKit`), `cli`
(`python -m speechkit_local`).
"""

from __future__ import annotations

from speechkit_local.faults import FaultSettings
from speechkit_local.server import LocalSpeechKit
from speechkit_local.service import ServerSettings

__all__ = ["FaultSettings", "LocalSpeechKit", "ServerSettings"]
