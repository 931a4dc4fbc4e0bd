"""speechkit-watch: a watch-folder transcription daemon for Yandex SpeechKit v2 recognition."""

from __future__ import annotations

__version__ = "0.1.0"
