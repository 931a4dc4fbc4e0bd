#!/usr/bin/env bash
# Regenerate the committed audio fixtures (tests/data/) and demo recordings (samples/).
#
# The tests never run this script: they read the committed files. It exists so that anyone can
# see exactly how each file was made and make it again with real encoders.
#
# Needs the Debian packages: espeak-ng, sox, opus-tools, vorbis-tools, speex, flac
#   apt-get install -y espeak-ng sox opus-tools vorbis-tools speex flac
#
# Usage (from anywhere):  bash tests/data/make_fixtures.sh
#
# Reproducibility: every Ogg stream gets a fixed serial number, sox runs with -R (repeatable
# dither), and espeak-ng is deterministic, so the same tool versions give the same bytes.
# Versions used for the committed files: espeak-ng 1.51, SoX 14.4.2, opus-tools 0.2 with
# libopus 1.3.1, vorbis-tools 1.4.2, speex 1.2.1, flac 1.4.2 (Debian 12).
#
# After regenerating, compare the "measured" lines printed at the end with tests/data/README.md
# and tests/unit/test_oggopus.py, which hard-code the durations.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
data_dir="$repo_root/tests/data"
samples_dir="$repo_root/samples"
work_dir="$(mktemp -d)"
trap 'rm -rf "$work_dir"' EXIT

# ---------------------------------------------------------------- tests/data/formats: other formats
# Recordings as people have them, for the conversion to Ogg Opus. Their speech is the committed
# mono.ogg and stereo.ogg decoded again (opusdec), so this part runs on its own:
#   bash tests/data/make_fixtures.sh formats      (needs ffmpeg, lame, opusdec, .venv with PyAV)
# The sentences travel as tags (ID3 TXXX in WAV and MP3, MP4 metadata tags, Vorbis comments in
# FLAC, Matroska tags in WebM); the daemon copies TRANSCRIPT* tags into the Opus comments, so the
# local server's echo engine answers with them. `-fflags +bitexact` keeps the bytes repeatable.
# Versions used: FFmpeg 5.1.9, LAME 3.100, opus-tools 0.2 (Debian 12).
# wav_tags FILE.wav KEY=VALUE...: append an "id3 " chunk of ID3v2.4 TXXX frames (FFmpeg's WAV
# muxer writes no custom tags; its demuxer reads this chunk when there is no LIST/INFO chunk).
wav_tags() {
    python3 - "$@" <<'PYTHON'
import struct, sys
def syncsafe(n): return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])
path, pairs = sys.argv[1], sys.argv[2:]
frames = b""
for pair in pairs:
    key, _, value = pair.partition("=")
    body = b"\x03" + key.encode() + b"\x00" + value.encode()
    frames += b"TXXX" + syncsafe(len(body)) + b"\x00\x00" + body
tag = b"ID3\x04\x00\x00" + syncsafe(len(frames)) + frames
chunk = b"id3 " + struct.pack("<I", len(tag)) + tag + (b"\x00" if len(tag) % 2 else b"")
data = bytearray(open(path, "rb").read()) + chunk
data[4:8] = struct.pack("<I", len(data) - 8)
open(path, "wb").write(bytes(data))
PYTHON
}

make_format_fixtures() {
    local formats_dir="$data_dir/formats" mono_text left_text right_text
    mono_text="Hello from the watch folder. This is a test recording."
    left_text="The left channel says good morning."
    right_text="The right channel answers good evening."
    mkdir -p "$formats_dir"
    opusdec --quiet --rate 48000 "$data_dir/mono.ogg" "$work_dir/f_mono.wav"
    opusdec --quiet --rate 48000 "$data_dir/stereo.ogg" "$work_dir/f_stereo.wav"
    local ff=(ffmpeg -nostdin -loglevel error -y)
    local exact=(-fflags +bitexact -flags +bitexact)
    local mono_tags=(-metadata "TRANSCRIPT=$mono_text")
    local stereo_tags=(-metadata "TRANSCRIPT=$left_text" -metadata "TRANSCRIPT_CH2=$right_text")
    # A stereo telephone call: 8 kHz 16-bit PCM, one speaker per channel.
    "${ff[@]}" -i "$work_dir/f_stereo.wav" -ar 8000 -c:a pcm_s16le -map_metadata -1 "${exact[@]}" \
        "$formats_dir/call_stereo.wav"
    wav_tags "$formats_dir/call_stereo.wav" "TRANSCRIPT=$left_text" "TRANSCRIPT_CH2=$right_text"
    # A-law 8 kHz mono WAV, as telephone systems write.
    "${ff[@]}" -i "$work_dir/f_mono.wav" -ar 8000 -c:a pcm_alaw -map_metadata -1 "${exact[@]}" \
        "$formats_dir/alaw_8k.wav"
    wav_tags "$formats_dir/alaw_8k.wav" "TRANSCRIPT=$mono_text"
    # MP3 by LAME (16 kHz mono, 24 kbit/s), the sentence in an ID3v2 TXXX frame.
    "${ff[@]}" -i "$work_dir/f_mono.wav" -ar 16000 "${exact[@]}" "$work_dir/f_mono16.wav"
    lame --quiet -b 24 --resample 16 --add-id3v2 --tv "TXXX=TRANSCRIPT=$mono_text" \
        "$work_dir/f_mono16.wav" "$formats_dir/mono.mp3"
    # M4A (AAC-LC in MP4), as phones record.
    "${ff[@]}" -i "$work_dir/f_mono.wav" -ar 16000 -c:a aac -b:a 24k \
        -movflags +use_metadata_tags "${mono_tags[@]}" "${exact[@]}" "$formats_dir/mono.m4a"
    # FLAC, as archives hold; 8 kHz keeps it small.
    "${ff[@]}" -i "$work_dir/f_mono.wav" -ar 8000 -sample_fmt s16 -c:a flac \
        "${mono_tags[@]}" "${exact[@]}" "$formats_dir/mono.flac"
    # WebM with stereo Opus, as browsers and meeting tools write.
    "${ff[@]}" -i "$work_dir/f_stereo.wav" -c:a libopus -b:a 24k \
        "${stereo_tags[@]}" "${exact[@]}" "$formats_dir/stereo.webm"
    # MP4 video (a tiny black picture) with AAC stereo audio, and the same without audio.
    "${ff[@]}" -f lavfi -i "color=black:size=32x32:rate=5" -i "$work_dir/f_stereo.wav" \
        -map 0:v -map 1:a -shortest -c:v libx264 -preset ultrafast -crf 51 -pix_fmt yuv420p \
        -c:a aac -ar 16000 -b:a 32k -movflags +use_metadata_tags "${stereo_tags[@]}" \
        "${exact[@]}" "$formats_dir/video.mp4"
    "${ff[@]}" -f lavfi -i "color=black:size=32x32:rate=5" -t 2 -c:v libx264 -preset ultrafast \
        -crf 51 -pix_fmt yuv420p "${exact[@]}" "$formats_dir/video_no_audio.mp4"
    # Matroska with stereo Vorbis, as screen and meeting recorders write.
    "${ff[@]}" -i "$work_dir/f_stereo.wav" -ar 16000 -c:a libvorbis -q:a 0 \
        "${stereo_tags[@]}" "${exact[@]}" "$formats_dir/stereo.mkv"
    # A QuickTime MOV video (a tiny black picture) with mono AAC, as phones' cameras write.
    "${ff[@]}" -f lavfi -i "color=black:size=32x32:rate=5" -i "$work_dir/f_mono.wav" \
        -map 0:v -map 1:a -shortest -c:v libx264 -preset ultrafast -crf 51 -pix_fmt yuv420p \
        -c:a aac -ar 16000 -b:a 24k -movflags +use_metadata_tags "${mono_tags[@]}" \
        "${exact[@]}" "$formats_dir/video.mov"
    # AMR-NB at 12.2 kbit/s, as old phones' voice memos: Debian's ffmpeg has no AMR encoder,
    # PyAV's FFmpeg carries opencore-amr's. The format has no tags, so no sentence travels.
    "${ff[@]}" -i "$work_dir/f_mono.wav" -ar 8000 "${exact[@]}" "$work_dir/f_mono8.wav"
    "$fixture_python" - "$work_dir/f_mono8.wav" "$formats_dir/mono.amr" <<'PYTHON'
import sys
import av
with av.open(sys.argv[1]) as source, av.open(sys.argv[2], "w", format="amr") as target:
    stream = target.add_stream("libopencore_amrnb", rate=8000, layout="mono")
    stream.bit_rate = 12200
    for frame in source.decode(audio=0):
        frame.pts = None
        target.mux(stream.encode(frame))
    target.mux(stream.encode(None))
PYTHON
    # Not media at all, named like audio.
    printf 'These are meeting notes, not a recording.\n' > "$formats_dir/notes.wav"
    ls -l "$formats_dir"
}

if [[ "${1:-}" == formats ]]; then
    fixture_python="${FIXTURE_PYTHON:-$repo_root/.venv/bin/python}"  # with PyAV: `make install` first
    for tool in ffmpeg lame opusdec "$fixture_python"; do
        command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
    done
    make_format_fixtures
    exit 0
fi

required_tools=(espeak-ng sox opusenc oggenc speexenc flac soxi)
[[ "${1:-}" == speech ]] && required_tools=(espeak-ng sox soxi opusenc)
for tool in "${required_tools[@]}"; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done

# Low bitrates keep each committed file to a few KB; speech stays intelligible at 16 kbit/s.
mono_bitrate=16
stereo_bitrate=24

# speak VOICE TEXT OUT.wav RATE: espeak-ng speech resampled to RATE Hz, 16-bit mono.
speak() {
    local voice="$1" text="$2" out="$3" rate="$4"
    espeak-ng -v "$voice" -s 150 -w "$work_dir/raw.wav" "$text"
    sox -R "$work_dir/raw.wav" -r "$rate" -b 16 -c 1 "$out"
}

# opus IN.wav OUT.ogg SERIAL BITRATE [opusenc args...]: Ogg Opus with a fixed serial number.
opus() {
    local in="$1" out="$2" serial="$3" bitrate="$4"
    shift 4
    opusenc --quiet --serial "$serial" --bitrate "$bitrate" "$@" "$in" "$out"
}

# ---------------------------------------------------------------- speech for the whisper engine
# Real speech WITHOUT transcript tags, for the local server's real engine (`--engine whisper`)
# and the demo: tests/data/speech/ (the whisper test tier; its expected texts are in
# tests/integration/test_whisper_engine.py and tests/data/README.md) and samples/ (`make demo`).
# The Russian voice speaks slower with pauses between words (-s 130 -g 4): at espeak-ng's
# default pace Whisper base hears too little of it. 24 kbit/s per channel keeps the words clear.
#   bash tests/data/make_fixtures.sh speech      (needs espeak-ng, sox, soxi, opusenc)
speech_bitrate=24
speech_stereo_bitrate=48
say_en() { speak en-us "$1" "$2" 16000; }
say_en_caller() { speak en-us+f3 "$1" "$2" 16000; }
say_ru() {
    espeak-ng -v ru -s 130 -g 4 -w "$work_dir/raw.wav" "$1"
    sox -R "$work_dir/raw.wav" -r 16000 -b 16 -c 1 "$2"
}
# dialogue LEFT.wav RIGHT.wav OUT.wav: left speaks, then right answers; each padded to line up.
dialogue() {
    local left_seconds right_seconds
    left_seconds="$(soxi -D "$1")"
    right_seconds="$(soxi -D "$2")"
    sox -R "$1" "$work_dir/left_padded.wav" pad 0 "$right_seconds"
    sox -R "$2" "$work_dir/right_padded.wav" pad "$left_seconds" 0
    sox -R -M "$work_dir/left_padded.wav" "$work_dir/right_padded.wav" "$3"
}

make_speech_fixtures() {
    local speech_dir="$data_dir/speech"
    mkdir -p "$speech_dir"
    say_en "Good morning. Please send the report to the team before Friday." "$work_dir/en.wav"
    opus "$work_dir/en.wav" "$speech_dir/en.ogg" 3001 "$speech_bitrate"
    say_ru "Здравствуйте! Чем я могу вам помочь?" "$work_dir/ru.wav"
    opus "$work_dir/ru.wav" "$speech_dir/ru.ogg" 3002 "$speech_bitrate"
    say_en "Hello, this is the support line." "$work_dir/agent.wav"
    say_en_caller "I would like to check my order." "$work_dir/caller.wav"
    dialogue "$work_dir/agent.wav" "$work_dir/caller.wav" "$work_dir/dialogue.wav"
    opus "$work_dir/dialogue.wav" "$speech_dir/dialogue.ogg" 3003 "$speech_stereo_bitrate"
    # Pink noise at a steady hiss level, no speech at all: recognition must find nothing.
    sox -R -n -r 16000 -b 16 -c 1 "$work_dir/noise.wav" synth 2 pinknoise vol 0.2
    opus "$work_dir/noise.wav" "$speech_dir/noise.ogg" 3004 "$speech_bitrate"

    # samples/ for `make demo`: the demo runs the whisper engine, so no tags here either.
    say_en "Good morning. This recording was dropped into the watch folder and turned into text." \
        "$work_dir/greeting.wav"
    opus "$work_dir/greeting.wav" "$samples_dir/greeting.ogg" 2001 "$speech_bitrate"
    say_ru "Здравствуйте! Спасибо за звонок. Чем я могу вам помочь?" "$work_dir/privet.wav"
    opus "$work_dir/privet.wav" "$samples_dir/privet.ogg" 2002 "$speech_bitrate"
    say_en "Hello, this is the support line. How can I help you?" "$work_dir/agent.wav"
    say_en_caller "Hi, I would like to check the status of my order." "$work_dir/caller.wav"
    dialogue "$work_dir/agent.wav" "$work_dir/caller.wav" "$work_dir/call.wav"
    opus "$work_dir/call.wav" "$samples_dir/call-stereo.ogg" 2003 "$speech_stereo_bitrate"
    for name in en ru dialogue noise greeting privet call; do
        printf 'measured input %-8s %s s\n' "$name" "$(soxi -D "$work_dir/$name.wav")"
    done
    ls -l "$speech_dir" "$samples_dir"
}

if [[ "${1:-}" == speech ]]; then
    make_speech_fixtures
    exit 0
fi

# ---------------------------------------------------------------- tests/data: good Ogg Opus
mono_text="Hello from the watch folder. This is a test recording."
speak en-us "$mono_text" "$work_dir/mono.wav" 16000
opus "$work_dir/mono.wav" "$data_dir/mono.ogg" 1001 "$mono_bitrate" \
    --comment "TRANSCRIPT=$mono_text"

# Stereo: each channel says its own sentence at the same time; 48 kHz input for variety.
left_text="The left channel says good morning."
right_text="The right channel answers good evening."
speak en-us "$left_text" "$work_dir/left.wav" 48000
speak en-us+f3 "$right_text" "$work_dir/right.wav" 48000
sox -R -M "$work_dir/left.wav" "$work_dir/right.wav" "$work_dir/stereo.wav"
opus "$work_dir/stereo.wav" "$data_dir/stereo.ogg" 1002 "$stereo_bitrate" \
    --comment "TRANSCRIPT=$left_text" --comment "TRANSCRIPT_CH2=$right_text"

unicode_text="Привет, это проверка."
speak ru "$unicode_text" "$work_dir/unicode.wav" 16000
opus "$work_dir/unicode.wav" "$data_dir/unicode.ogg" 1003 "$mono_bitrate" \
    --comment "TRANSCRIPT=$unicode_text"

# Silence: real Opus audio packets, no speech and deliberately no TRANSCRIPT comment.
sox -R -n -r 16000 -b 16 -c 1 "$work_dir/silence.wav" trim 0 1
opus "$work_dir/silence.wav" "$data_dir/silence.ogg" 1004 "$mono_bitrate"

# ---------------------------------------------------------------- tests/data: refused inputs
# Three channels: opusenc uses channel mapping family 1 for more than two channels. Below about
# 16 kbit/s per channel it silently downmixes to stereo, hence the higher bitrate here.
three_channel_bitrate=48
speak en-us "One." "$work_dir/ch1.wav" 16000
speak en-us "Two." "$work_dir/ch2.wav" 16000
speak en-us "Three." "$work_dir/ch3.wav" 16000
sox -R -M "$work_dir/ch1.wav" "$work_dir/ch2.wav" "$work_dir/ch3.wav" "$work_dir/three.wav"
opus "$work_dir/three.wav" "$data_dir/three_channels.ogg" 1005 "$three_channel_bitrate" \
    --comment "TRANSCRIPT=One." --comment "TRANSCRIPT_CH2=Two." --comment "TRANSCRIPT_CH3=Three."

# Other codecs in Ogg, and a WAV: short clips, they only need a valid first page.
# speexenc has no option for the serial number: speex.ogg differs in its serial on each run.
speak en-us "This is not Opus." "$work_dir/other.wav" 16000
oggenc --quiet --serial 1006 --quality 0 --comment "TRANSCRIPT=This is not Opus." \
    -o "$data_dir/vorbis.ogg" "$work_dir/other.wav"
speexenc --wideband --comment "TRANSCRIPT=This is not Opus." \
    "$work_dir/other.wav" "$data_dir/speex.ogg"
sox -R "$work_dir/other.wav" -r 8000 "$work_dir/other8k.wav" trim 0 0.5
flac --silent --force --ogg --serial-number=1008 --best \
    --tag "TRANSCRIPT=This is not Opus." -o "$data_dir/flac.oga" "$work_dir/other8k.wav"
sox -R "$work_dir/other.wav" -r 8000 -b 8 -c 1 "$data_dir/sample.wav" trim 0 0.5

make_speech_fixtures

command -v ffmpeg >/dev/null && command -v lame >/dev/null && make_format_fixtures

# ---------------------------------------------------------------- report
# The encoder's input length is the ground truth the tests compare the Ogg duration with.
for name in mono stereo unicode silence three; do
    printf 'measured input %-8s %s s\n' "$name" "$(soxi -D "$work_dir/$name.wav")"
done
ls -l "$data_dir" "$samples_dir"
du -cb "$data_dir"/*.ogg "$data_dir"/*.oga "$data_dir"/*.wav "$samples_dir"/*.ogg | tail -1
