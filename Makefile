# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv and installs the pinned
# dependencies on first use (about two minutes), and is quick once .venv exists.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Deterministic, 2-core friendly runs: one intra-op thread pool of fixed size, no network for HF.
export OMP_NUM_THREADS ?= 2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: demo test lab notebooks env-check bench toy compat clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed: set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m omni_ref.tools.demo

# Tests and notebooks run on TEST_WORKERS processes (pytest-xdist), one thread each; `--dist loadscope` keeps
# every notebook's cells, and every test module's fixtures, on one worker.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m omni_ref.tools.env_check
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope tests notebooks --nbval \
		--nbval-sanitize-with tests/sanitize.cfg --nbval-current-env

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

# Re-execute every notebook top to bottom in a fresh kernel and save its outputs in place.
notebooks: $(STAMP)
	$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=600 notebooks/*.ipynb

env-check: $(STAMP)
	$(PY) -m omni_ref.tools.env_check

bench: $(STAMP)
	$(PY) -m omni_ref.tools.bench --out bench/

# The upgrade path: `make compat V=5.25.0` installs that transformers beside the pinned one (in
# .compat/transformers-V, no dependencies; it checks the installed ones meet its requirements), runs the
# parity sweep under it and prints one row per stage. TESTS=1 also runs the oddity register and the
# *_equal_hf tests under it. The pinned environment is left as it is.
compat: $(STAMP)
	@test -n "$(V)" || { echo "usage: make compat V=x.y.z   (a transformers release, e.g. V=5.24.0)"; exit 2; }
	OMP_NUM_THREADS=1 $(PY) -m omni_ref.tools.compat $(V) $(if $(TESTS),--tests)

# Retrain the toy checkpoint from its seed (data/toy/: weights + training log); not part of `make test`.
toy: $(STAMP)
	$(PY) -m omni_ref.train_toy

clean:
	rm -rf .cache
