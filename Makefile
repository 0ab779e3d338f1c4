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
	touch $@ $(VENV)/.run-installed

# Transcribe the sample recordings shipped in samples/ into ./out with the bundled tiny.en model.
run: $(VENV)/.run-installed
	$(BIN)/scribefleet transcribe samples --out out --model tiny.en

# Install the test extras and run the whole suite.
test: $(VENV)/.test-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.test-installed
	$(BIN)/python bench/bench_transcribe.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) out .pytest_cache
