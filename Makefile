# Two commands do all the set-up on a fresh machine:
#   make demo   build kernels for this host, check them against the reference, print timings
#   make test   run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

# torch and torchvision are pinned to the releases this machine image carries
# (a CPU-only torch 2.13 lacks a matching torchvision).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --no-compile torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q --no-compile -e '.[test]'
	# Bytecode for what was installed, in parallel: where PYTHONDONTWRITEBYTECODE is set
	# (CI images) nothing else writes it, and every Python process the tests start
	# would recompile torch's and TVM's sources on import (~4 s each).  Some packages
	# ship files that are not Python 3.11 (templates): compileall reports them, harmlessly.
	$(BIN)/python -m compileall -q -j 0 $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') >/dev/null || true
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/roigen demo

# Idle torch OpenMP workers spin on a core TVM's pool needs; on two cores that
# made the suite crawl.  (A setting for the test run only, not for users.)
# One pytest worker per core: most of the suite's time is TVM compiling, one
# core per build; workers share the kernel cache (its builds hold a lock).  The
# slowest tests are listed at the end: .ci/run must stay under 15 minutes here.
test: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q -n auto --dist loadgroup --durations=20

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_cpu.py --repeats 7

clean:
	rm -rf $(VENV)
