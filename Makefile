# The two entry points of the README. Both (re)build the virtual environment first.
#   make run    the quick figure set on CPU (config.yaml)
#   make test   the test suite
#
# torch is installed before anything that depends on it so pip never pulls CUDA wheels on a
# CPU machine. A torch already present in the venv (e.g. a cluster's CUDA build) is kept;
# override the spec with `make TORCH_SPEC="torch==2.5.1" ...` if you need another one.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
CORES ?= 2
BIN := $(VENV)/bin

.PHONY: venv run report test test-slurm lint clean
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test,minilm]"
	touch $@

run: venv
	$(BIN)/snakemake --profile profiles/default --cores $(CORES)
	$(BIN)/snakemake --profile profiles/default --cores $(CORES) --report results/report.html

test: venv
	$(BIN)/ruff check diffcomp scripts tests bench
	$(BIN)/ruff format --check diffcomp scripts tests bench
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint
	$(BIN)/python -m pytest -q -ra -m "not slurm"

test-slurm: venv
	bash tests/slurm/run_slurm_test.sh

clean:
	rm -rf results/* .snakemake
