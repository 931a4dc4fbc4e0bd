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

for tool in espeak-ng sox opusenc oggenc speexenc flac soxi; do
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

# ---------------------------------------------------------------- samples/ for `make demo`
greeting_text="Good morning. This recording was dropped into the watch folder and turned into text."
speak en-us "$greeting_text" "$work_dir/greeting.wav" 16000
opus "$work_dir/greeting.wav" "$samples_dir/greeting.ogg" 2001 "$mono_bitrate" \
    --comment "TRANSCRIPT=$greeting_text"

privet_text="Привет! Это демонстрационная запись для распознавания речи."
speak ru "$privet_text" "$work_dir/privet.wav" 16000
opus "$work_dir/privet.wav" "$samples_dir/privet.ogg" 2002 "$mono_bitrate" \
    --comment "TRANSCRIPT=$privet_text"

# A phone-call style dialogue: the agent (left) speaks, then the caller (right) answers, so the
# two channels never talk over each other. Each side is padded with silence to line up.
agent_text="Hello, this is the support line. How can I help you?"
caller_text="Hi, I would like to check the status of my order."
speak en-us "$agent_text" "$work_dir/agent.wav" 16000
speak en-us+f3 "$caller_text" "$work_dir/caller.wav" 16000
agent_seconds="$(soxi -D "$work_dir/agent.wav")"
caller_seconds="$(soxi -D "$work_dir/caller.wav")"
sox -R "$work_dir/agent.wav" "$work_dir/agent_padded.wav" pad 0 "$caller_seconds"
sox -R "$work_dir/caller.wav" "$work_dir/caller_padded.wav" pad "$agent_seconds" 0
sox -R -M "$work_dir/agent_padded.wav" "$work_dir/caller_padded.wav" "$work_dir/call.wav"
opus "$work_dir/call.wav" "$samples_dir/call-stereo.ogg" 2003 "$stereo_bitrate" \
    --comment "TRANSCRIPT=$agent_text" --comment "TRANSCRIPT_CH2=$caller_text"

# ---------------------------------------------------------------- report
# The encoder's input length is the ground truth the tests compare the Ogg duration with.
for name in mono stereo unicode silence three; do
    printf 'measured input %-8s %s s\n' "$name" "$(soxi -D "$work_dir/$name.wav")"
done
for name in greeting privet call; do
    printf 'measured input %-8s %s s\n' "$name" "$(soxi -D "$work_dir/$name.wav")"
done
ls -l "$data_dir" "$samples_dir"
du -cb "$data_dir"/*.ogg "$data_dir"/*.oga "$data_dir"/*.wav "$samples_dir"/*.ogg | tail -1
