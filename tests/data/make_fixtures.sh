#!/usr/bin/env bash
# Regenerates the speech fixtures in tests/data and samples/ with espeak-ng + sox.
# The texts are in texts.json (file name -> what was said), the ground truth of WER checks.
# Needs: apt-get install -y espeak-ng sox ; run from anywhere.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
samples="$here/../../samples"
mkdir -p "$samples"
say() {  # say OUT VOICE TEXT
  local tmp; tmp="$(mktemp --suffix .wav)"
  espeak-ng -v "$2" -s 150 -w "$tmp" "$3"
  sox "$tmp" -r 16000 -c 1 -b 16 "$1"
  rm -f "$tmp"
}
python3 - "$here/texts.json" <<'PY' | while IFS=$'\t' read -r name voice text; do say "$here/$name" "$voice" "$text"; done
import json, sys
for name, (voice, text) in json.load(open(sys.argv[1])).items():
    print(f"{name}\t{voice}\t{text}")
PY
# a longer recording with real silences between sentences: exercises VAD and windows
parts=()
for n in en01 en02 en03 en04; do parts+=("$here/$n.wav"); done
sox -n -r 16000 -c 1 -b 16 "$here/_sil.wav" trim 0 3.0
sox "${parts[0]}" "$here/_sil.wav" "${parts[1]}" "$here/_sil.wav" "$here/_sil.wav" "${parts[2]}" "$here/_sil.wav" "${parts[3]}" "$here/long_pauses.wav"
rm -f "$here/_sil.wav"
# samples/ for `make run`
cp "$here/en01.wav" "$samples/fox.wav"
sox "$here/en05.wav" -C 5 "$samples/weather report.flac"
cp "$here/long_pauses.wav" "$samples/meeting.wav"
# recordings that change language (multilingual.json: file -> [[voice, words per minute, text], ...]):
# the parts joined with a second of silence between them, as Ogg Vorbis to keep them small
python3 - "$here/multilingual.json" <<'PY'
import json, subprocess, sys, tempfile
from pathlib import Path
spec = Path(sys.argv[1])
with tempfile.TemporaryDirectory() as tmp:
    silence = f"{tmp}/silence.wav"
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", silence, "trim", "0", "1.0"], check=True)
    for name, parts in json.loads(spec.read_text()).items():
        pieces = []
        for i, (voice, wpm, text) in enumerate(parts):
            raw, part = f"{tmp}/raw{i}.wav", f"{tmp}/part{i}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", raw, text], check=True)
            subprocess.run(["sox", raw, "-r", "16000", "-c", "1", "-b", "16", part], check=True)
            pieces += [silence, part] if pieces else [part]
        subprocess.run(["sox", *pieces, "-C", "1", str(spec.parent / name)], check=True)
PY
