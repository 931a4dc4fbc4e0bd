"""SubRip (.srt) and WebVTT (.vtt) subtitles of a finished operation.

Pure functions. The cue text is each chunk's text (what `.txt` says), timed by the chunk's word
timings: with `literature_text` the text has capitals, punctuation and digits while `words[]`
may stay raw (lower case, no punctuation, numbers as words), so the words give only the times.
Cues last a few seconds and hold at most two lines of about 42 characters; they never overlap
and are in time order. With several channels each cue starts with `[channel N] ` and the
channels' cues are merged by time (ties by channel). When two channels talk at once, each cue
stays on screen at least MIN_READABLE_SECONDS (or its own length, if shorter): a cue that would
cut the one before it shorter than that starts that much after it instead. SubRip players show
one cue at a time, so cues never overlap: a cue may come up to a second late, never cut to
nothing. Without word timings (the service may omit them) each chunk
becomes one cue, timed by an estimate from its length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from daemon.render import transcripts

LINE_CHARACTERS = 42  # the usual subtitle line length (Netflix, BBC guidelines)
MAX_LINES = 2  # more than two lines covers the picture and cannot be read in time
MAX_CUE_SECONDS = 6.0  # "a few seconds": long enough to read two lines
MAX_WORD_GAP_SECONDS = 1.5  # a pause this long starts a new cue
MIN_CUE_SECONDS = 0.1  # the shortest cue players display reliably
MIN_READABLE_SECONDS = 1.0  # another channel's cue never cuts one shorter: a few words at a glance
ESTIMATED_WORDS_PER_SECOND = 2.5  # typical speech rate, for chunks without timings


@dataclass
class Cue:
    start: float
    end: float
    lines: list[str]


@dataclass(frozen=True)
class _Word:
    text: str
    start: float
    end: float


def _word_timings(chunk: Mapping[str, Any]) -> list[_Word]:
    """The chunk's words with a text and a start time, as `words[]` gives them."""
    alternatives = chunk.get("alternatives")
    if (
        not isinstance(alternatives, list)
        or not alternatives
        or not isinstance(alternatives[0], dict)
    ):
        return []
    found = []
    for word in alternatives[0].get("words") or []:
        if not isinstance(word, dict):
            continue
        text = " ".join(str(word.get("word", "")).split())
        start = transcripts.parse_duration(word.get("startTime"))
        end = transcripts.parse_duration(word.get("endTime"))
        if not text or start is None:
            continue
        found.append(_Word(text, max(0.0, start), max(start, end if end is not None else start)))
    return found


def text_tokens(text: str) -> list[str]:
    """The chunk text cut into one token per spoken word, as written.

    A run of punctuation standing alone (a dash, a lone quote) is no spoken word and gets no
    entry in `words[]`: it stays with the token before it (the one after it at the start).
    """
    tokens: list[str] = []
    leading: list[str] = []
    for part in text.split():
        if any(character.isalnum() for character in part):
            tokens.append(" ".join([*leading, part]))
            leading = []
        elif tokens:
            tokens[-1] += " " + part
        else:
            leading.append(part)
    if leading:  # a text of punctuation only
        tokens.append(" ".join(leading))
    return tokens


def spread(tokens: Sequence[str], start: float, end: float) -> list[_Word]:
    """Tokens one after another from `start` to `end`, each lasting in proportion to its length.

    Longer words take longer to say, so a cue break inside the chunk lands near where it
    was spoken. A pause inside the span is not kept: the tokens follow one another.
    """
    total = sum(len(token) for token in tokens)
    timed, done = [], 0
    for token in tokens:
        token_start = start + (end - start) * done / total
        done += len(token)
        timed.append(_Word(token, token_start, start + (end - start) * done / total))
    return timed


def timed_tokens(chunk: Mapping[str, Any]) -> list[_Word]:
    """The chunk's text token by token, timed by its word timings.

    As many tokens as words: token i takes word i's times (by position). Otherwise (the text
    says "25" where the words say "twenty five") the tokens share the chunk's span, from the
    first word's start to the last word's end, by `spread`. No word timings: nothing (the
    caller estimates); no text but words: the words themselves, so nothing said is lost.
    """
    words = _word_timings(chunk)
    tokens = text_tokens(transcripts.chunk_text(chunk))
    if not words or not tokens:
        return words
    if len(tokens) == len(words):
        return [
            _Word(token, word.start, word.end) for token, word in zip(tokens, words, strict=True)
        ]
    return spread(tokens, min(word.start for word in words), max(word.end for word in words))


def wrap(text: str, width: int = LINE_CHARACTERS) -> list[str]:
    """Greedy word wrap; a word longer than the width gets a line of its own."""
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def _fits(words: Sequence[str], prefix: str) -> bool:
    return len(wrap(prefix + " ".join(words))) <= MAX_LINES


def _starts_new_cue(group: Sequence[_Word], word: _Word, prefix: str) -> bool:
    """Does `word` belong in a new cue: after a pause, past the length, or past two lines?"""
    start = min(item.start for item in group)
    end = max(item.end for item in [*group, word])
    return (
        word.start - group[-1].end > MAX_WORD_GAP_SECONDS
        or end - start > MAX_CUE_SECONDS
        or not _fits([*(item.text for item in group), word.text], prefix)
    )


def channel_cues(words: Sequence[_Word], prefix: str = "") -> list[Cue]:
    """Group one channel's timed tokens, in reading order, into cues."""
    cues: list[Cue] = []
    group: list[_Word] = []

    def close() -> None:
        if group:
            text = prefix + " ".join(word.text for word in group)
            start = min(word.start for word in group)
            cues.append(Cue(start, max(word.end for word in group), wrap(text)))
            group.clear()

    for word in words:
        if group and _starts_new_cue(group, word, prefix):
            close()
        group.append(word)
    close()
    return cues


def _estimated_cues(operation: Mapping[str, Any], several: bool) -> list[Cue]:
    """One cue per chunk, one after another, when the service gave no word timings."""
    cues, clock = [], 0.0
    for chunk in transcripts.chunks(operation):
        text = transcripts.chunk_text(chunk)
        if not text:
            continue
        if several:
            text = f"[{transcripts.label(chunk)}] {text}"
        seconds = max(1.0, len(text.split()) / ESTIMATED_WORDS_PER_SECOND)
        cues.append(Cue(clock, clock + seconds, wrap(text)))
        clock += seconds
    return cues


def without_overlaps(cues: Sequence[Cue]) -> list[Cue]:
    """Cues in time order, each ending by the time the next begins, none cut below a second."""
    ordered = sorted(cues, key=lambda cue: cue.start)
    result: list[Cue] = []
    for cue in ordered:
        start, end = cue.start, cue.end
        if result:
            previous = result[-1]
            readable = min(MIN_READABLE_SECONDS, previous.end - previous.start)
            start = max(start, previous.start + max(readable, MIN_CUE_SECONDS))
            previous.end = min(previous.end, start)
        # A cue pushed later keeps a readable length too (its own, if that is shorter).
        own = max(min(MIN_READABLE_SECONDS, cue.end - cue.start), MIN_CUE_SECONDS)
        result.append(Cue(start, max(end, start + own), list(cue.lines)))
    return result


def build_cues(operation: Mapping[str, Any]) -> list[Cue]:
    """Every cue of an operation, merged across channels, in time order, never overlapping."""
    found = transcripts.chunks(operation)
    tags = sorted(
        {transcripts.channel_tag(chunk) for chunk in found},
        key=lambda tag: transcripts.channel_order({"channelTag": tag}),
    )  # cues are merged by a stable sort on start time: ties go by this channel order
    several = transcripts.labelled(found)
    labels = {transcripts.channel_tag(chunk): transcripts.label(chunk) for chunk in found}
    by_channel: dict[str, list[list[_Word]]] = {tag: [] for tag in tags}
    for chunk in found:
        timed = timed_tokens(chunk)
        if timed:
            by_channel[transcripts.channel_tag(chunk)].append(timed)
    if not any(by_channel.values()):
        return without_overlaps(_estimated_cues(operation, several))
    cues: list[Cue] = []
    for tag, chunk_tokens in by_channel.items():
        # Chunks by start time, each chunk's tokens in the order they are written.
        ordered = sorted(chunk_tokens, key=lambda timed: min(token.start for token in timed))
        reading = [token for timed in ordered for token in timed]
        cues.extend(channel_cues(reading, f"[{labels[tag]}] " if several else ""))
    return without_overlaps(cues)


def _timestamp(seconds: float, separator: str) -> str:
    milliseconds = round(seconds * 1000)
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    secs, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{milliseconds:03d}"


def render_srt(operation: Mapping[str, Any]) -> str:
    """SubRip: numbered cues from 1, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, a blank line after each."""
    blocks = [
        f"{number}\n{_timestamp(cue.start, ',')} --> {_timestamp(cue.end, ',')}\n"
        + "\n".join(cue.lines)
        + "\n"
        for number, cue in enumerate(build_cues(operation), start=1)
    ]
    return "\n".join(blocks)


def render_vtt(operation: Mapping[str, Any]) -> str:
    """WebVTT: the `WEBVTT` header, then cues `HH:MM:SS.mmm --> HH:MM:SS.mmm`."""
    blocks = [
        f"{_timestamp(cue.start, '.')} --> {_timestamp(cue.end, '.')}\n"
        + "\n".join(cue.lines)
        + "\n"
        for cue in build_cues(operation)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)
