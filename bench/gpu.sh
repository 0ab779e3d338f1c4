#!/usr/bin/env bash
# The GPU path proved (issue 14), in one run of a few minutes on a machine with an NVIDIA GPU:
#
#   1. pytest -m gpu                  the GPU-marked tests pass
#   2. scribefleet doctor --json      a slot loads the model on cuda:0 and transcribes (CUDA really used)
#   3. bench/bench_gpu.py             with a large model: the ratio against plain faster-whisper
#                                     (batched and not) on an 11-minute recording, the device-busy
#                                     fraction over a 20-file batch (NVML sampling; goal 0.95), and
#                                     speed with 1, 2 and 4 slots on one GPU (--slots-per-gpu N)
#
# and a summary table at the end (also in bench/results/gpu/summary.txt). Nothing is downloaded:
# the machine may have no network. The model is, in order: the first argument (a CTranslate2 model
# folder, or a name scribefleet resolves from its cache), GPU_BENCH_MODEL, the largest
# faster-whisper model in the Hugging Face cache (large-v3, large-v2, large-v3-turbo, distil-large-v3,
# medium...), else the bundled tiny.en (said loudly: the ratios then say little about a large model).
#
# Usage: bench/gpu.sh [MODEL]            from the repository root, with the test extras installed
#        PYTHON=/path/to/python bench/gpu.sh   to use another interpreter (default: .venv/bin/python,
#                                         else python3); the `ray` extra is not needed
# Needs: nvidia-smi, the NVIDIA driver, and scribefleet's `transcribe --slots-per-gpu` (step 3c).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
RESULTS=$ROOT/bench/results/gpu
mkdir -p "$RESULTS"
SUMMARY=$RESULTS/summary.txt
: > "$SUMMARY"

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=$(command -v python3); fi
fi
export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH}
export SCRIBEFLEET_GPUS=${SCRIBEFLEET_GPUS:-0}   # one GPU: GPU 0 in nvidia-smi order

note() { printf '%s\n' "$*" | tee -a "$SUMMARY"; }
step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

# -- what is there -------------------------------------------------------------------------------
if ! command -v nvidia-smi > /dev/null; then
  echo "nvidia-smi is not installed: this script needs a machine with an NVIDIA GPU and its driver" >&2
  exit 2
fi
if ! "$PYTHON" -c 'import scribefleet, faster_whisper, pynvml, jiwer, pytest' 2> /dev/null; then
  echo "$PYTHON lacks scribefleet or its test extras: run 'make .venv/.test-installed' (or set PYTHON)" >&2
  exit 2
fi
step "GPU"
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader | tee "$RESULTS/gpus.csv"
note "machine: $(head -n1 "$RESULTS/gpus.csv"), $(nproc) CPU cores, load $(cut -d' ' -f1 /proc/loadavg)"

# -- the model -----------------------------------------------------------------------------------
find_cached_model() {
  # Hugging Face's own cache, then scribefleet's (where `--model large-v3` downloads to)
  local hubs=("${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}")
  hubs+=("$("$PYTHON" -c 'from scribefleet.config import Settings; print(Settings().hf_home / "hub")')")
  local name hub dir
  for name in faster-whisper-large-v3 faster-whisper-large-v2 faster-whisper-large-v3-turbo \
      faster-whisper-large-v3-turbo-ct2 faster-distil-whisper-large-v3 faster-whisper-large-v1 \
      faster-whisper-medium faster-whisper-medium.en; do
    for hub in "${hubs[@]}"; do
      for dir in "$hub"/models--*--"$name"/snapshots/*/; do
        if [[ -f "$dir/model.bin" ]]; then
          printf '%s\n' "${dir%/}"
          return 0
        fi
      done
    done
  done
  return 1
}
MODEL=${1:-${GPU_BENCH_MODEL:-}}
if [[ -z "$MODEL" ]]; then
  if ! MODEL=$(find_cached_model); then
    MODEL=tiny.en
    note "WARNING: no large model given or in the Hugging Face cache; measuring the bundled tiny.en"
  fi
fi
note "model: $MODEL"

# -- 1. the GPU tests -----------------------------------------------------------------------------
step "1/3 pytest -m gpu"
"$PYTHON" -m pytest -m gpu -q -p no:cacheprovider 2>&1 | tee "$RESULTS/pytest-gpu.txt"
PYTEST_STATUS=${PIPESTATUS[0]}
note "pytest -m gpu: exit $PYTEST_STATUS, $(tail -n1 "$RESULTS/pytest-gpu.txt")"

# -- 2. doctor: CUDA really used ---------------------------------------------------------------
step "2/3 scribefleet doctor"
"$PYTHON" -m scribefleet.cli.main doctor --json --model "$MODEL" > "$RESULTS/doctor.json"
DOCTOR_STATUS=$?
"$PYTHON" - "$RESULTS/doctor.json" << 'EOF' | tee -a "$SUMMARY"
import json, sys
report = json.load(open(sys.argv[1]))
cuda = [d for d in report["devices"] if d.get("device") == "cuda"]
for d in cuda:
    if d.get("ok"):
        extra = {k: d[k] for k in d if k.startswith("gpu") or k in ("compute_type", "load_s", "infer_s")}
        print(f"doctor: cuda:{d.get('gpu_index')} used, {extra}")
    else:
        print(f"doctor: cuda:{d.get('gpu_index')} NOT usable: {d.get('error')}")
if not cuda:
    print(f"doctor: no CUDA device found; problems: {report.get('problems')}")
EOF
note "doctor: exit $DOCTOR_STATUS"

# -- 3. the bench: ratio, busy fraction, slots per GPU --------------------------------------------
step "3/3 bench/bench_gpu.py"
"$PYTHON" bench/bench_gpu.py --model "$MODEL" --work "$RESULTS" 2>&1 | tee "$RESULTS/bench.txt"
BENCH_STATUS=${PIPESTATUS[0]}
sed -n '/^summary/,$p' "$RESULTS/bench.txt" >> "$SUMMARY"
note "bench: exit $BENCH_STATUS"

step "summary"
cat "$SUMMARY"
[[ $PYTEST_STATUS -eq 0 && $DOCTOR_STATUS -eq 0 && $BENCH_STATUS -eq 0 ]]
