# nasprune: `make demo` and `make test` are all a new checkout needs (both install into $(VENV) first).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint demo coverage

install: $(STAMP)

# torch/torchvision are pinned and installed first, and only when missing: a plain `pip install -e .` would pull a
# different (CUDA) torch from the index. The stamp makes repeated `make` calls instant until pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -c "import torch, torchvision" 2>/dev/null || $(PYTHON) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PYTHON) -m pip install -e '.[dev]'
	touch $(STAMP)

test: install
	$(VENV)/bin/pytest -q -m "not zoo and not slow"
	$(VENV)/bin/pytest -q -m "zoo and not slow"; status=$$?; if [ $$status -ne 0 ] && [ $$status -ne 5 ]; then exit $$status; fi

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

demo: install
	$(VENV)/bin/nasprune search --model nasprune_cli.demo:build --recipe recipes/demo.yaml --flops 50%

# the torchvision zoo at full input size (224, inception_v3: 299): regenerates docs/COVERAGE.md (about an hour on 2 cores)
coverage: install
	$(PYTHON) tools/coverage.py

# ---- benchmarks (not part of `make test`): nasprune vs nvidia-modelopt and Torch-Pruning, see BENCHMARKS.md ----
# The peers come from the optional `bench` extra; torch/torchvision are named on the same pip line so that the
# peers' `torch>=...` requirements are resolved against the venv's torch instead of pulling another one.
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: bench bench-quick bench-install

bench-install: $(BENCH_STAMP)

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(PYTHON) -m pip install -e '.[bench]' torch==2.14.1 torchvision==0.29.1
	touch $(BENCH_STAMP)

# about 80 minutes on two CPU cores; each script writes bench/results/<name>.json
bench: $(BENCH_STAMP)
	$(PYTHON) bench/quality.py
	$(PYTHON) bench/overhead.py
	$(PYTHON) bench/latency.py
	$(PYTHON) bench/training.py
	$(PYTHON) bench/scale.py
	$(PYTHON) bench/map_cut.py
	$(PYTHON) bench/text.py
	$(PYTHON) bench/report.py

# smoke run of the whole harness (a few minutes); writes bench/results/*_quick.json and BENCHMARKS_quick.md there
bench-quick: $(BENCH_STAMP)
	$(PYTHON) bench/quality.py --quick
	$(PYTHON) bench/overhead.py --quick
	$(PYTHON) bench/latency.py --quick
	$(PYTHON) bench/scale.py --quick
	$(PYTHON) bench/text.py --quick
	$(PYTHON) bench/report.py --suffix _quick --output bench/results/BENCHMARKS_quick.md
