# Thin wrappers around the `arena` CLI. Every target sets up the virtualenv first.
# Override with e.g.: make train CONFIG=configs/gemma2-9b-qlora-t4x2.yaml SET="train.epochs=2"
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= configs/default.yaml
SET    ?=
RUN    ?= $(shell ls -td runs/*/ 2>/dev/null | head -1)
DATA   ?= data/test.csv
OUT    ?=
FOLDS  ?= 5
ROWS   ?= 600
ARGS   ?=
SET_ARGS := $(foreach s,$(SET),--set $(s))

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup data sample train cv predict package submit bench test-caches test test-fast lint clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt -c constraints.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# kaggle.competition: llm-classification-finetuning unless set; LMSYS's own: SET=kaggle.competition=lmsys-chatbot-arena
data: setup  ## download kaggle.competition's data with the kaggle CLI (needs Kaggle credentials: data/README.md, docs/kaggle.md)
	$(BIN)/arena data download --out data --config $(CONFIG) $(SET_ARGS)

sample: setup
	$(BIN)/arena data sample --rows $(ROWS) --out data/sample/train-$(ROWS).csv  # where data.train: sample reads it

train: setup
	$(BIN)/arena train --config $(CONFIG) $(SET_ARGS) $(ARGS)

cv: setup
	$(BIN)/arena cv --config $(CONFIG) --folds $(FOLDS) $(SET_ARGS) $(ARGS)

predict: setup
	$(BIN)/arena predict --run $(RUN) --data $(DATA) $(if $(OUT),--out $(OUT)) --tta $(ARGS)

package: setup
	$(BIN)/arena package --run $(RUN) $(if $(OUT),--out $(OUT)) $(ARGS)

submit: setup  ## package the latest run and push it to its kaggle.competition; make submit ARGS=--dry-run to only print
	$(BIN)/arena push --run $(RUN) $(ARGS)

bench: setup  ## quality vs baselines on ../shared/data + speed ratios -> docs/benchmarks.md (99 min on 2 cores for the committed report)
	$(BIN)/python -m benchmarks --out docs/benchmarks.md $(ARGS)

# The suite's cache (the embedded model converted, the Kaggle twin): built once per machine, before pytest.
test-caches: setup
	$(BIN)/python -m tests.caches

# Two pytest workers (pytest-xdist): most tests wait on subprocesses and imports, so two share two cores well;
# each worker and the processes it starts take their share of the threads (OMP_NUM_THREADS, tests/conftest.py).
test: test-caches
	$(BIN)/python -m pytest -n 2 --durations=25 $(ARGS)

test-fast: test-caches
	$(BIN)/python -m pytest -n 2 -m "not e2e" $(ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks

clean-venv:
	rm -rf $(VENV)
