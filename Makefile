# Two commands do everything (see README.md):
#   make paper   create .venv if missing, install, fetch the data, run the whole study (dvc repro)
#   make test    create .venv if missing, install, run the test suite
# and two are for exploring and teaching:
#   make demo     every stage on a small profile in about five minutes, under demo/ (the study is untouched)
#   make explore  the layer explorer as a web page without code (Voilà), at http://localhost:$(EXPLORE_PORT)/
# and one for GPUs: make profile-paper makes params.yaml the paper-scale profile (CIFAR-10, ImageNet).
# Both are idempotent: a second run reinstalls nothing and DVC reruns no stage whose inputs are unchanged.

VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
# Stages call papermill/jupyter/python by name: the venv must come first on PATH for them and their kernels.
export PATH := $(BIN):$(PATH)

EXPLORE_PORT ?= 8866

.PHONY: paper test install lock data validate clean-outputs demo explore profile-paper

# dvc repro, with a line at each stage's start: stage k of N and the time left by the last run's stage times.
paper: install data validate
	python -m study.repro
	@echo "Study regenerated: open report/index.html (tables in report/tables/)."

# Two workers (pytest-xdist), whole files each: the long pipeline test on one core, the rest on the other.
test: install
	python -m pytest -n 2 --dist loadfile

install: $(VENV)/.installed

# Reinstall only when the dependency list or its lock changes. The lock pins every package (tools/lock.py);
# the project itself goes in editable, without dependencies, so nothing resolves differently elsewhere.
# pip -qq: errors only. A machine's pip configuration can add a warning per package (an index location that does
# not exist), hundreds of lines that would bury the run's own progress.
$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "install: the locked environment into $(VENV) (about 2 minutes the first time)"
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq -r requirements.lock
	$(BIN)/python -m pip install -qq --no-deps -e '.[dev]'
	touch $@

# After editing pyproject.toml's dependencies: resolve them afresh in a scratch environment and pin the result.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet -e '.[dev]'
	.venv-lock/bin/python tools/lock.py --python .venv-lock/bin/python
	rm -rf .venv-lock

# Fetch (or verify) the raw data, then record it in DVC's cache so `dvc status` is clean. Skipped (~7 s of an
# unchanged `make paper`) while nothing under data/ and not data.dvc changed since the last pass: every stage
# checks the sha256 of the files it reads (params.yaml data.check_sha256) whatever happens here.
DATA_STAMP := tmp/make/data.verified
data: install
	@if [ -f $(DATA_STAMP) ] && [ -d data ] && [ ! data.dvc -nt $(DATA_STAMP) ] && [ -z "$$(find data -newer $(DATA_STAMP) -print -quit)" ]; then \
		echo "data: unchanged since it was verified (delete $(DATA_STAMP) to verify again)"; \
	else \
		python -m study.core.data fetch --root data && dvc add --quiet data && mkdir -p $(dir $(DATA_STAMP)) && touch $(DATA_STAMP); \
	fi

# params.yaml validated again only when it, the installed environment or the code that defines it changed.
PARAMS_STAMP := tmp/make/params.validated
validate: $(PARAMS_STAMP)
$(PARAMS_STAMP): params.yaml $(VENV)/.installed $(shell find study -name '*.py')
	python -m study.core.params params.yaml
	@mkdir -p $(@D) && touch $@

# The paper-scale profile (GPUs; docs/paper-scale.md): params.yaml becomes profiles/paper.yaml (git checkout
# params.yaml returns to the CPU profile), CIFAR-10 is fetched where the network allows, ImageNet is yours to place.
profile-paper: install
	python -m study.core.params profiles/paper.yaml
	cp profiles/paper.yaml params.yaml
	python -m study.core.vision_data fetch --root data
	@echo "params.yaml is now the paper profile: run dvc repro (or dvc exp run) on a machine with GPUs."

demo: install data
	python -m study.demo
	@echo "Demo report: open demo/report/index.html; the explorer (make explore) lists the demo's models."

explore: install data
	voila notebooks/explore.ipynb --no-browser --port=$(EXPLORE_PORT) --Voila.ip=127.0.0.1

# Remove what `make paper` produced (not the data, not the venv).
clean-outputs:
	rm -rf models results runs metrics report tmp demo
