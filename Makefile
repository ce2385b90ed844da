# Quick start: `make run` (the default experiment, offline) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test benchmark clean

$(BIN)/activate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/activate

run: $(BIN)/activate
	$(BIN)/python -m lth_tf.main $(ARGS)

test: $(BIN)/activate
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

benchmark: $(BIN)/activate
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) *.egg-info
