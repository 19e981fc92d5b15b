# Two commands do all the set-up on a fresh machine (see README.md):
#   make demo   install everything, then run the whole pipeline on the demo corpus (dvc repro)
#               and print the comparison of the fusion heads
#   make test   install everything, then run the test suite
# Re-running either on a ready machine skips the installs (a stamp file records them).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
INSTALL := $(BIN)/python -m pip install --disable-pip-version-check --progress-bar off -q
STAMP  := $(VENV)/.jmt-installed
REQS   := requirements/torch.txt requirements/nodeps.txt requirements/base.txt \
          requirements/lock.txt pyproject.toml

export HF_HUB_OFFLINE ?= 1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup system-deps demo test clean-venv

setup: system-deps $(STAMP)

system-deps:
	@bash scripts/ensure-system-deps.sh

# Order matters (see docs/install.md): torch first, then the two packages whose metadata
# pins ancient torch/numpy go in with --no-deps, then the rest under the lock file.
$(STAMP): $(REQS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(INSTALL) -r requirements/torch.txt
	$(INSTALL) --no-deps -r requirements/nodeps.txt
	$(INSTALL) -r requirements/base.txt -c requirements/lock.txt
	$(INSTALL) --no-deps -e .
	@touch $(STAMP)

# The whole pipeline (demo corpus -> stage 1 -> stage 2 -> comparison -> report), then a
# cache check, README's results section from metrics/compare.json, and the tables.
# The comparison (24 training runs, most of the time) runs on a Ray instance started on this
# machine, one run per core: the same numbers as the local engine (each run uses
# run.compare.cpus threads in both; tests/stage2/test_compare_ray.py), about half the time on
# 2 cores. `dvc commit` records it as the compare stage's result; `dvc repro` alone runs the
# same stage on the local engine (params run.engine).
demo: setup
	dvc repro evaluate
	dvc status compare | grep -q "up to date" || \
	  { jmt compare --engine ray && dvc commit -f compare; }
	dvc repro
	jmt cache verify data/cache/embeddings --params params.yaml
	jmt readme
	jmt evaluate --show
	jmt compare --show
	@echo "make demo: figures in reports/figures/, the report in reports/index.md"

test: setup
	$(BIN)/python -m pytest

clean-venv:
	rm -rf $(VENV)
