"""The whisper engine's pure parts: languages, words and times from segments, model checks.

None of these load a model; tests/integration/test_whisper_engine.py runs the real one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from speechkit_local import cli
from speechkit_local.audio import InvalidAudio
from speechkit_local.engines import models
from speechkit_local.engines.whisper import (
    RecognizedSegment,
    RecognizedWord,
    channel_utterances,
    decode_channels,
    segment_utterance,
    whisper_language,
)
from speechkit_local.logic import RecognizeRequest
from tests.fixtures_audio import fixture_path

SECOND = 1_000_000_000


@pytest.mark.parametrize(
    ("code", "language"),
    [("ru-RU", "ru"), ("en-US", "en"), ("pt-BR", "pt"), ("kk-KZ", "kk"), ("auto", None)],
)
def test_the_requests_language_code_decides_whispers_language(
    code: str, language: str | None
) -> None:
    assert whisper_language(code) == language


def segment(
    *words: tuple[str, float, float], text: str = "", logprob: float = -0.2
) -> RecognizedSegment:
    return RecognizedSegment(
        text or "".join(word for word, _, _ in words),
        logprob,
        tuple(RecognizedWord(word, start, end, 0.9) for word, start, end in words),
    )


def test_words_are_raw_and_the_text_keeps_whispers_capitals_and_punctuation() -> None:
    found = segment((" Hello,", 0.0, 0.4), (" world!", 0.5, 1.0), (" -", 1.0, 1.1))

    utterance = segment_utterance(0, found, not_before_ns=0, duration_ns=2 * SECOND)

    assert utterance is not None
    assert [word.text for word in utterance.words] == ["hello", "world"]
    assert utterance.normalized_text == "Hello, world! -"
    assert (utterance.start_ns, utterance.end_ns) == (0, SECOND)
    assert 0.0 < utterance.confidence <= 1.0


def test_times_never_go_back_and_stay_inside_the_audio() -> None:
    found = segment((" one", 0.5, 0.9), (" two", 0.7, 0.6), (" three", 1.8, 2.5))

    utterance = segment_utterance(1, found, not_before_ns=SECOND // 2, duration_ns=2 * SECOND)

    assert utterance is not None
    times = [(word.start_ns, word.end_ns) for word in utterance.words]
    assert times == [(SECOND // 2, 9 * SECOND // 10), (9 * SECOND // 10, 9 * SECOND // 10),
                     (18 * SECOND // 10, 2 * SECOND)]  # fmt: skip
    assert utterance.channel == 1


def test_a_word_holding_two_shares_its_time_and_inner_marks_stay() -> None:
    found = segment((" e-mail — fax", 1.0, 2.0))

    utterance = segment_utterance(0, found, not_before_ns=0, duration_ns=3 * SECOND)

    assert utterance is not None
    timed = [(word.text, word.start_ns, word.end_ns) for word in utterance.words]
    assert timed == [("e-mail", SECOND, 3 * SECOND // 2), ("fax", 3 * SECOND // 2, 2 * SECOND)]


def test_segments_without_words_give_no_utterance_and_later_ones_start_after_earlier() -> None:
    segments = [
        segment((" First.", 0.0, 1.0)),
        segment((" ...", 1.0, 1.2)),
        segment((" Second", 0.8, 1.5)),
    ]

    utterances = channel_utterances(0, segments, 2 * SECOND)

    assert [u.raw_text for u in utterances] == ["first", "second"]
    assert utterances[1].start_ns >= utterances[0].end_ns


def test_a_model_folder_must_hold_a_ctranslate2_model(tmp_path: Path) -> None:
    with pytest.raises(models.ModelError, match=r"not 'base', 'tiny\.en' or a folder"):
        models.resolve_model(str(tmp_path / "missing"))
    with pytest.raises(models.ModelError, match=r"no model\.bin"):
        models.resolve_model(str(tmp_path))
    (tmp_path / "model.bin").write_bytes(b"weights")
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    assert models.resolve_model(str(tmp_path)).path == tmp_path


def test_a_damaged_joined_model_is_refused_naming_the_file(tmp_path: Path) -> None:
    folder = tmp_path / f"whisper-base-{models.BASE_MODEL_SHA256[:16]}"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"not the model we pinned")

    with pytest.raises(models.ModelError, match=r"model\.bin: sha256 .* expected 905e5bf8"):
        models.resolve_model(models.BASE_MODEL, cache=tmp_path)


def test_the_cache_follows_xdg_cache_home(tmp_path: Path) -> None:
    assert models.cache_directory({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "speechkit-local"


def test_speechkit_local_refuses_a_model_it_cannot_use_with_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-model"

    assert cli.main(["--engine", "whisper", "--model", str(missing)]) == 2

    error = capsys.readouterr().err
    assert error.startswith(f"localserver: --model {missing}: not 'base'"), error
    assert "Traceback" not in error


def test_each_channel_is_decoded_on_its_own_at_16_khz() -> None:
    np = pytest.importorskip("numpy", reason="the whisper extra is not installed")

    data = fixture_path("speech/dialogue.ogg").read_bytes()
    left, right = decode_channels(data, RecognizeRequest(uri="x"), 2)

    assert len(left) == len(right) == pytest.approx(4.676 * 16_000, abs=400)
    assert left.dtype == right.dtype == np.float32
    half = len(left) // 2  # the agent (left) speaks first, the caller (right) after
    assert np.abs(left[:half]).mean() > 10 * np.abs(right[:half]).mean()
    assert np.abs(right[half:]).mean() > 10 * np.abs(left[half:]).mean()


def test_raw_pcm_is_deinterleaved_and_resampled() -> None:
    np = pytest.importorskip("numpy", reason="the whisper extra is not installed")

    seconds = np.arange(8000) / 8000  # one second at 8 kHz: a tone left, silence right
    tone = (np.sin(2 * np.pi * 440 * seconds) * 16000).astype("<i2")
    interleaved = np.column_stack([tone, np.zeros_like(tone)]).reshape(-1)
    request = RecognizeRequest(uri="x", audio_encoding="LINEAR16_PCM", sample_rate_hertz=8000)

    left, right = decode_channels(interleaved.tobytes(), request, 2)

    assert len(left) == pytest.approx(16_000, abs=100)
    assert np.abs(left).max() == pytest.approx(16000 / 32768, rel=0.1)
    assert np.abs(right).max() < 1e-3


def test_audio_that_will_not_decode_is_invalid_audio() -> None:
    pytest.importorskip("numpy", reason="the whisper extra is not installed")

    with pytest.raises(InvalidAudio, match="cannot decode"):
        decode_channels(b"not audio at all" * 100, RecognizeRequest(uri="x"), 1)
