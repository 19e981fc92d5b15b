# Two commands do all the set-up on a fresh machine (see README.md):
#   make demo   install everything, then run the pipeline on the demo corpus (dvc repro) and
#               print the comparison of the fusion heads on all three tasks
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

.PHONY: setup system-deps demo compare-va three-streams tsav openface text tune test clean-venv

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

# The demo on all three tasks (demo corpus -> stage 1 -> the default model -> the comparison of the
# fusion heads trained on valence-arousal, expression and action units together -> report), then
# cache checks, the results page (docs/results.md) and README's headline from metrics/compare-tasks.json, and the tables.
# The comparison (24 training runs, most of the time) runs on a Ray instance started on this
# machine, one run per core: the same numbers as the local engine (each run uses
# run.compare.cpus threads in both; tests/stage2/test_compare_ray.py), about half the time on
# 2 cores. `dvc commit` records it as the stage's result; `dvc repro` alone runs the same stages
# on the local engine (params run.engine). `make compare-va`: the paper's setting (valence-arousal
# only, the default params.yaml); `make three-streams`: a third stream (params-3streams.yaml).
demo: setup
	dvc repro evaluate labels
	dvc status compare_tasks | grep -q "up to date" || \
	  { jmt compare --params params-tasks.yaml --engine ray && dvc commit -f compare_tasks; }
	dvc repro report_tasks
	jmt cache verify data/cache/embeddings --params params.yaml
	jmt cache verify data/cache/labels --params params.yaml
	jmt readme --params params-tasks.yaml
	jmt evaluate --show
	jmt compare --params params-tasks.yaml --show
	@echo "make demo: figures in reports/tasks/figures/, the report in reports/tasks/index.md"

# The paper's setting: the fusion heads on valence-arousal alone (params.yaml), two streams.
compare-va: setup
	dvc repro embed labels
	dvc status compare | grep -q "up to date" || \
	  { jmt compare --engine ray && dvc commit -f compare; }
	dvc repro report
	jmt readme
	jmt compare --show

# A third stream (prosody) beside the two (params-3streams.yaml): embed it, then the comparison.
three-streams: setup
	dvc repro faces audio labels
	jmt embed --params params-3streams.yaml
	jmt compare --params params-3streams.yaml --engine ray
	jmt report --params params-3streams.yaml
	jmt compare --params params-3streams.yaml --show

# The JMT authors' two streams (params-tsav.yaml: R(2+1)D-18 on face clips, ResNet-18 on log-mel),
# offline: weight files of their names in their published layouts, with RANDOM values (real files
# go in the same place: docs/pipeline.md, "The JMT authors' streams"), then embed, train and evaluate.
tsav: setup
	dvc repro faces audio labels
	test -f data/weights/vision_TSAV_Sub4_544k.pt || $(BIN)/python scripts/make_tsav_checkpoints.py --out data/weights
	jmt embed --params params-tsav.yaml
	jmt train --params params-tsav.yaml
	jmt evaluate --params params-tsav.yaml

# A stream read from files another tool wrote (params-openface.yaml): OpenFace 2.2-layout CSVs beside
# the two computed streams, all three tasks. On the demo the CSVs are SYNTHETIC, made from the demo's
# own AU labels plus noise (scripts/make_openface_demo.py; not OpenFace output), then embed, train
# and evaluate; metrics/eval-openface.json against metrics/eval-tasks.json: docs/measurements.md.
openface: setup
	dvc repro faces audio labels
	$(BIN)/python scripts/make_openface_demo.py --corpus data/demo --out data/openface-demo
	jmt embed --params params-openface.yaml
	jmt train --params params-openface.yaml
	jmt evaluate --params params-openface.yaml

# A third stream from what is said (params-text.yaml; docs/pipeline.md, "Text streams"): the demo
# corpus with words (espeak-ng says words whose sentiment follows valence; a WebVTT transcript beside
# each video) in data/demo-text, its stage 1 with `jmt transcribe`, then the comparison of the heads
# with the text stream (only:text among them) beside the two-stream one on the same corpus
# (params-text-av.yaml), both on a Ray instance on this machine, and their reports. pocketsphinx's
# word error rate on the demo's speech: bench/transcribe_wer.py.
text: setup
	jmt demo --params params-text.yaml
	jmt faces --params params-text.yaml
	jmt audio --params params-text.yaml
	jmt labels --params params-text.yaml
	jmt transcribe --params params-text.yaml
	jmt embed --params params-text.yaml
	jmt embed --params params-text-av.yaml
	jmt compare --params params-text-av.yaml --engine ray
	jmt compare --params params-text.yaml --engine ray
	jmt report --params params-text-av.yaml
	jmt report --params params-text.yaml
	jmt compare --params params-text-av.yaml --show
	jmt compare --params params-text.yaml --show

# Verdicts that survive tuning (params-tune.yaml; docs/compare.md, "Tuning"): every head searched
# with the same CPU-seconds on validation (`jmt tune`: Optuna TPE + ASHA, the study in
# runs/tune/study.db, trials on a Ray instance on this machine, one per core), then each head with
# its best configuration x seeds beside the default comparison of the same heads and seeds, the
# ensembles, the report (reports/tuned/) and README's tuned headline. A killed run resumes: the
# finished trials and runs are kept.
tune: setup
	dvc repro embed labels
	dvc status tune | grep -q "up to date" || \
	  { jmt tune --params params-tune.yaml --engine ray && dvc commit -f tune; }
	dvc status compare_tuned | grep -q "up to date" || \
	  { jmt compare --params params-tune.yaml --engine ray && dvc commit -f compare_tuned; }
	dvc repro ensemble_tuned report_tuned
	jmt readme --params params-tune.yaml
	jmt compare --params params-tune.yaml --show
	@echo "make tune: the search in reports/tuned/tune.md, the tuned comparison in reports/tuned/index.md"

test: setup
	$(BIN)/python -m pytest

clean-venv:
	rm -rf $(VENV)
