# Two commands for a new machine (Python 3.10+ and this repo, with ../shared beside it):
#   make demo   - replay the intersection clip end to end and serve the API
#   make test   - run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The tests train small forecasters: PyTorch's CPU build (on disk here, about 200 MB) is
# enough; `make bench` replaces it with the build Ultralytics needs.
TORCH ?= torch==2.13.0

export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := false

.PHONY: demo test lint install bench bench-ingest bench-signals bench-routing clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[rsu,center,embedded,dev,forecast,sim]' $(TORCH)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/citybrain demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Benchmarks compare against Ultralytics (PyTorch): installed here, not for demo or tests.
# Ultralytics needs torchvision, and the torchvision builds here pair with torch 2.14.1 only
# (with the CPU build above, its NMS operator does not load).
BENCH_TORCH ?= torch==2.14.1 torchvision==0.29.1
$(VENV)/.installed-models: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[rsu,center,embedded,dev,forecast,sim,models]' $(BENCH_TORCH)
	touch $@

bench: $(VENV)/.installed-models
	$(BIN)/python benchmarks/rsu_latency.py $(BENCH_ARGS)

# Ingest and API under load (wrk is used when installed: apt-get install wrk).
bench-ingest: $(STAMP)
	$(BIN)/python benchmarks/ingest.py $(BENCH_ARGS)

# Signal controllers on every RESCO scenario in SUMO (about 10 minutes with 3 seeds).
bench-signals: $(STAMP)
	$(BIN)/python benchmarks/signals.py $(BENCH_ARGS)

# Route queries: the ALT router against networkx Dijkstra on a SUMO net and a 10,000-node grid.
bench-routing: $(STAMP)
	$(BIN)/python benchmarks/routing.py $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache
