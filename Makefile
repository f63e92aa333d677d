# openjepa: the two commands a new user runs are `make demo` and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: install install-core data test demo bench lint docs

# torch first and pinned when none is installed: a looser requirement resolved on its own pulls the
# CUDA build (gigabytes). GPU users with their own torch build keep it. `install-core` is the package
# alone (what `make demo` needs); `install` adds the test, lint and interop dependencies.
TORCH_FIRST := $(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install "torch==2.13.0"

install-core:
	@$(TORCH_FIRST)
	$(PIP) install -e .

install:
	@$(TORCH_FIRST)
	$(PIP) install -e ".[test]"

# Fashion-MNIST from Debian's package where apt is available; elsewhere point --data / OPENJEPA_DATA at the files.
data:
	@if [ -d "$(FMNIST_DIR)" ]; then exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "apt-get not found: download Fashion-MNIST's four idx files and set OPENJEPA_DATA to their folder"; \
	fi

# Lint (ruff, mypy), then every test; `pytest -m "not slow"` skips the end-to-end runs (tests/e2e).
test: install data lint
	$(PYTHON) -m pytest -q

# Pretrain configs/demo.yaml (4 to 6 minutes on 2 CPU cores with bf16), then kNN and a linear probe of the
# frozen target encoder next to raw pixels and a randomly initialised ViT, each on the features as they are
# and PCA-whitened. Running it again resumes (a finished run is only re-evaluated).
demo: install-core data
	$(PYTHON) -m openjepa.cli pretrain configs/demo.yaml
	$(PYTHON) -m openjepa.cli eval knn runs/demo --baselines
	$(PYTHON) -m openjepa.cli eval knn runs/demo --baselines --whiten
	$(PYTHON) -m openjepa.cli eval linear runs/demo --baselines
	$(PYTHON) -m openjepa.cli eval linear runs/demo --baselines --whiten

bench: install
	$(PYTHON) benchmarks/train_step.py --model vit_tiny --img 28 --channels 1 --patch 4 --batch 128 \
		--pred-depth 6 --pred-dim 96 --steps 30

lint: install
	$(PYTHON) -m ruff check src tests benchmarks
	$(PYTHON) -m ruff format --check src tests benchmarks
	$(PYTHON) -m mypy src

# Regenerate docs/config.md from the config classes' descriptions (a test checks it is current).
docs: install
	$(PYTHON) -m openjepa.cli config --markdown > docs/config.md
