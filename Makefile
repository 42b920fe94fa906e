# Two commands: `make demo` and `make test`. Each builds .venv on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DATA    ?= $(abspath ../shared/data)
export VAEKIT_DATA ?= $(DATA)
# 1 intra-op thread by default: on a busy 2-core box, 2 threads are often slower.
export OMP_NUM_THREADS ?= 1

.PHONY: venv demo test lint bench clean chromium wheel mutants

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vaekit demo --out runs/demo

test: $(STAMP) chromium
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

# The browser tests drive Debian's chromium through Playwright (no browser download).
chromium:
	@test -x /usr/bin/chromium || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/speed.py
	$(BIN)/python benchmarks/eval_speed.py
	$(BIN)/python benchmarks/quality.py

# sdist + wheel in dist/: python -m build (pinned in requirements-dev.txt) without isolation, on
# the venv's setuptools
wheel: $(STAMP)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist .
	@ls -l dist

# Mutation testing of the numerical core (files, test subset and exclusions: [tool.mutmut] in
# pyproject.toml; results in docs/reliability.md). Niced: it keeps both cores busy for ~1 h.
# Survivors: $(BIN)/mutmut results; one mutant's diff: $(BIN)/mutmut show NAME.
mutants: $(STAMP)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	nice -n 10 $(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut export-cicd-stats && cat mutants/mutmut-cicd-stats.json
	@echo "per module (count, module, status):"
	@$(BIN)/mutmut results --all true | sed -E 's/^ *([a-z_.]+)\.x.*: (.*)$$/\1 \2/' | sort | uniq -c

clean:
	rm -rf runs .pytest_cache dist build mutants
