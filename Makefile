# Two commands on a fresh machine:  `make demo`  and  `make test`  (both create .venv first).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.segops-installed

.PHONY: demo demo-instances test test-fast lint install clean

install: $(STAMP)

# torch/torchvision are pinned in pyproject.toml; pip takes them from the machine's local wheels.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing segops and its dependencies into $(VENV) (first time: a few minutes, ~6.5 GB)..."
	@$(PY) -m pip install -q --upgrade pip > $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	@$(PY) -m pip install -q -e ".[dev,integration]" >> $(VENV)/pip.log 2>&1 || (grep -v "is ignored" $(VENV)/pip.log; exit 1)
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/segops synth ct data/quickstart-ct --seed 0
	$(VENV)/bin/segops run workflows/quickstart.yaml

# Mask R-CNN on synthetic instances (touching/overlapping cells and rods): instance PNGs, COCO RLE, mask AP.
demo-instances: $(STAMP)
	$(VENV)/bin/segops synth instances data/instances --count 100 --seed 0
	$(VENV)/bin/segops run workflows/instances-quickstart.yaml

# pytest exits 5 when it collects nothing: that is a failure here, not a pass.
# ruff first: a formatting or lint problem fails in seconds, before the suite's minutes.
test: $(STAMP) lint
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

# Local iteration: everything but the Ray/MLflow end-to-end tests (marked slow); `make test` runs them too.
test-fast: $(STAMP) lint
	@$(PY) -m pytest -m "not slow" $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: $(STAMP)
	@$(VENV)/bin/ruff format --check --quiet . || (echo "ruff format: files above need formatting (run $(VENV)/bin/ruff format .)" >&2; exit 1)
	@$(VENV)/bin/ruff check --quiet .

clean:
	rm -rf runs data mlruns.db mlartifacts .pytest_cache
