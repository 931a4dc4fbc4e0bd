"""The echo engine: the text stored in the file's Opus comments, not recognition.

TRANSCRIPT holds channel 1's text, TRANSCRIPT_CH2 channel 2's; one utterance per sentence, the
words spread evenly over the audio. Deterministic, instant, and exact: what the fault and
pipeline tests need to check that what comes out is what went in.
"""

from __future__ import annotations

import threading

from speechkit_local import logic
from speechkit_local.audio import AudioFacts
from speechkit_local.recognition import Utterance


class EchoEngine:
    name = "echo"
    capacity = 1_000_000  # no recognition to wait for: only the worker pool bounds it

    def describe(self) -> str:
        return "echo (returns the transcripts stored in the files' Opus comments)"

    def recognize(
        self,
        data: bytes,
        facts: AudioFacts,
        request: logic.RecognizeRequest,
        stop: threading.Event,
    ) -> list[Utterance]:
        return logic.echo_utterances(
            logic.channel_transcripts(facts.comments, facts.channels), facts.duration_seconds
        )
