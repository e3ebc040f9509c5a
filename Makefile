# Two-command quickstart: `make demo` and `make test` set up .venv when missing or stale.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Two workers: the suite is about 15 CPU-minutes, and much of it waits on subprocesses and disk.
PYTEST_ARGS ?= -n 2

.PHONY: setup demo test browser bench bench-full bench-paper lint format clean

setup: $(STAMP)

# Re-install when pyproject.toml changes (the stamp is older than it).
$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) (Python 3.11+); set PY=python3.x"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vreid demo

# The browser test of `vreid serve` needs Debian's chromium + chromedriver: installed here when
# missing and apt-get is available (non-fatal; the test skips, saying so, without them).
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && \
	    { apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } || \
	      echo "note: could not install chromium; the browser test will be skipped"; } || \
	    echo "note: no chromium and no apt-get; the browser test will be skipped"; }

test: $(STAMP) browser
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Each benchmark prints a table and compares against a straightforward reference in the same run.
# `make bench` takes minutes; `make bench-full` adds the 100k-image re-ranking, a longer
# detector training and the demo pipeline with vs without cropping (about an hour on 2 cores).
bench: $(STAMP)
	$(BIN)/python benchmarks/rerank.py --sizes veri,aic20
	$(BIN)/python benchmarks/synth_speed.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/bench_dataset_read.py
	$(BIN)/python benchmarks/bench_data_check.py
	$(BIN)/python benchmarks/crop_quality.py --train-minutes 3
	$(BIN)/python benchmarks/extract_speed.py
	$(BIN)/python benchmarks/index.py --sizes 10k,100k --json benchmarks/results/index-10k-100k.json

bench-full: bench
	$(BIN)/python benchmarks/rerank.py --sizes 100k
	$(BIN)/python benchmarks/index.py --sizes 1m --backends faiss --dim 512 \
		--json benchmarks/results_index_1m_512_pq.json
	$(BIN)/python benchmarks/crop_quality.py
	$(BIN)/python benchmarks/crop_reid.py --out runs/bench/crop_reid

# The paper's claims, measured: Table 2 extended (floor, plain and wider trunks, GLAMOR, Counter
# GLAMOR, ensemble, + re-ranking, + metadata, + tracks) over 2 training seeds, with detector
# cropping, without it, tuned vs default post-processing, and GLAMOR with vs without synthetic
# pre-training; writes runs/bench-paper/paper_bench.{json,md}. 59.9 min on the idle 2-core
# machine (bf16 autocast; docs/readme/paper.md).
bench-paper: $(STAMP)
	$(BIN)/python benchmarks/paper.py --seeds 0,1 --out runs/bench-paper

lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
