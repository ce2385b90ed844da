# Quick start: `make run` (the default experiment, offline) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The tests read real Fashion-MNIST: Debian's dataset-fashion-mnist puts its IDX files here.
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: run test benchmark results results-report clean

$(BIN)/activate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/activate

# As root, installed with apt-get; otherwise one line saying what to install.
$(FASHION_MNIST):
	@if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "make: the tests need Debian's dataset-fashion-mnist (real Fashion-MNIST, offline): run 'sudo apt-get install dataset-fashion-mnist', or make test as root" >&2; \
	  exit 1; fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
	@test -f $@ || { echo "make: dataset-fashion-mnist installed no $@" >&2; exit 1; }

run: $(BIN)/activate
	$(BIN)/python -m lth_tf.main $(ARGS)

test: $(BIN)/activate $(FASHION_MNIST)
	$(BIN)/python -m pytest -q -n 2 $(PYTEST_ARGS)

benchmark: $(BIN)/activate $(FASHION_MNIST)
	$(BIN)/python benchmarks/throughput.py

# RESULTS.md: `make results` runs the studies' sweeps (resumable; STUDIES=quick,mnist1d_paper for a
# subset), then rebuilds RESULTS.md and docs/results/ from every study's sweep on disk, even after a failure.
results: $(BIN)/activate $(FASHION_MNIST)
	status=0; $(BIN)/python -m lth_tf.results run --studies=$(STUDIES) || status=$$?; \
	$(BIN)/python -m lth_tf.results report && exit $$status

results-report: $(BIN)/activate
	$(BIN)/python -m lth_tf.results report

clean:
	rm -rf $(VENV) *.egg-info
