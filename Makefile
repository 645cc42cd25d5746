# The two entry points of the README. Both (re)build the virtual environment first.
#   make run    the quick figure set on CPU (config.yaml)
#   make run-medium  the relational study over 3 seeds on CPU (config.medium.yaml)
#   make test   the test suite
#
# torch is installed first, before anything that depends on it could pull another build. Which
# build `pip install torch==2.13.0` takes depends on the index: the CPU one where pip's index or
# find-links serve it (as on the development machine), the CUDA one from PyPI on Linux. For the
# CPU build from PyPI's sister index: `make run TORCH_INDEX=https://download.pytorch.org/whl/cpu`.
# A torch already present in the venv (e.g. a cluster's CUDA build, docs/slurm.md) is kept;
# `make TORCH_SPEC="torch==2.5.1" ...` asks for another version.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
CORES ?= 2
BIN := $(VENV)/bin

.PHONY: venv test-venv run run-medium docs gallery mutation report test test-slurm gpu-wheels lint clean
# venv: what the workflow needs; test-venv adds the test tools and the minilm encoder the tests load.
venv: $(VENV)/.installed
test-venv: $(VENV)/.installed-test

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[test,minilm]"
	touch $@

# --report-after-run: the report from the same invocation, without parsing the workflow again
run: venv
	$(BIN)/snakemake --profile profiles/default --cores $(CORES) --report results/report.html --report-after-run

run-medium: venv
	$(BIN)/snakemake --profile profiles/default --cores $(CORES) --configfile config.medium.yaml \
		--report results/report.html --report-after-run

# docs/config.md from the config schemas; docs/img/ from the figures of the last `make run`.
docs: venv
	$(BIN)/python tools/config_reference.py

gallery: venv
	$(BIN)/python tools/gallery.py

# Mutation testing of the core math (mutmut, one module at a time against its own tests; slow, not
# in CI): results/mutation/summary.md. MUTATE=diffusion (or a path) for one module.
mutation: test-venv
	$(BIN)/python tools/mutation.py $(MUTATE)

test: test-venv
	$(BIN)/ruff check diffcomp scripts tests bench tools
	$(BIN)/ruff format --check diffcomp scripts tests bench tools
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint
	$(BIN)/python -m pytest -q -ra -m "not slurm" -n $(CORES) --dist loadfile

test-slurm: test-venv
	bash tests/slurm/run_slurm_test.sh

# Wheels a GPU machine's image may lack (the venv's versions), for bench/gpu_bench.sh there:
# carry .whl/ to that machine (Python 3.12, x86-64).
GPU_WHEELS := diffusers umap-learn pynndescent jsonschema jsonschema-specifications referencing rpds-py
gpu-wheels: venv
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
		$$($(BIN)/python -m pip freeze | grep -iE '^($(shell echo $(GPU_WHEELS) | tr ' ' '|'))==')

clean:
	rm -rf results/* .snakemake
