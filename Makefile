# Quick start: `make run` (the default experiment, offline) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The tests read real Fashion-MNIST: Debian's dataset-fashion-mnist puts its IDX files here.
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: run test mutation benchmark determinism ticket-inference results results-report analyses methods methods-report transfer infoplane clean

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
	$(BIN)/python -m pytest -q -n 2 --dist=loadgroup $(PYTEST_ARGS)

# Mutation testing of the core (pyproject.toml's [tool.mutmut]): every mutant of the pruning rules, the controls
# and the methods' selection against the tests that reach it, in a copy under mutants/ (resumable; not in make test).
# Ends with the surviving mutants (`mutmut show NAME` shows one); docs/tests.md says why each one left is harmless.
mutation: $(BIN)/activate $(FASHION_MNIST)
	$(BIN)/pip install --quiet -e '.[mutation]'
	$(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results

# docs/speed.md's tables: the throughput table and one branch's breakdown (about 7 min on 2 cores).
benchmark: $(BIN)/activate $(FASHION_MNIST)
	$(BIN)/python benchmarks/throughput.py --readme=docs/speed.md
	$(BIN)/python benchmarks/branch_breakdown.py --flagfile=configs/lenet_fashion_mnist.flags --train_steps=8000 \
	  --eval_every=500 --readme=docs/speed.md

# The quick start's table (README.md) from three fresh runs of the default, with the CPU it came from, and what
# --deterministic costs (docs/speed.md); about 5 min on 2 cores.
determinism: $(BIN)/activate
	$(BIN)/python benchmarks/determinism.py --readme=README.md --cost_doc=docs/speed.md

# Dense against sparse SavedModels of LeNet-300-100 tickets on Fashion-MNIST (benchmarks/ticket_inference.py):
# every round of the config's 20 exported in both forms (fc layers down to 0.8^20 = 1.2% of their weights).
# Short training: only the masks' density matters to size and latency. Resumable like any run.
TICKET_INFERENCE := runs/ticket_inference_lenet
ticket-inference: $(BIN)/activate $(FASHION_MNIST)
	$(BIN)/python -m lth_tf.main --flagfile=configs/lenet_fashion_mnist.flags --train_steps=1000 --eval_every=500 \
	  --controls=none --export=all --export_format=dense,sparse,tflite --output_dir=$(TICKET_INFERENCE)
	$(BIN)/python benchmarks/ticket_inference.py --output_dir=$(TICKET_INFERENCE) --readme=docs/speed.md \
	  --summary=README.md

# RESULTS.md: `make results` runs the studies' sweeps (resumable; STUDIES=quick,mnist1d_paper for a
# subset), then rebuilds RESULTS.md and docs/results/ from the records in docs/results/records/, to which it first
# adds the finished seeds of every study's sweep on disk (docs/sweeps.md), even after a failure.
results: $(BIN)/activate $(FASHION_MNIST)
	status=0; $(BIN)/python -m studies.results run --studies=$(STUDIES) || status=$$?; \
	$(BIN)/python -m studies.results report && exit $$status

results-report: $(BIN)/activate
	$(BIN)/python -m studies.results report

# docs/analyses.md's pictures (docs/analyze/): two seeds of the quick default with every control, one
# seed under two data orders (rewinding to step 100), two seeds under global pruning (where the rates do not fix
# each layer's share), and the analyses of them. Resumable like any sweep.
ANALYSES := runs/analyses
analyses: $(BIN)/activate
	$(BIN)/python -m lth_tf.sweep --flagfile=configs/quick.flags --seeds=0,1 --export=none \
	  --controls=reinit,random_prune,reinit_rescaled,reinit_signed,shuffle_layerwise --sweep_dir=$(ANALYSES)/seeds
	$(BIN)/python -m lth_tf.sweep --flagfile=configs/quick.flags --seeds=0 --grid=data_order_seed=0,1 \
	  --rewind_step=100 --controls=none --export=none --sweep_dir=$(ANALYSES)/data_order
	$(BIN)/python -m lth_tf.sweep --flagfile=configs/quick.flags --seeds=0,1 --prune_strategy=global --rounds=15 \
	  --controls=none --export=none --sweep_dir=$(ANALYSES)/global
	mkdir -p docs/analyze/sgd_noise docs/analyze/global
	cp $(ANALYSES)/seeds/accuracy.png docs/analyze/controls.png
	$(BIN)/python -m lth_tf.analyze overlap --report_dir=docs/analyze \
	  --output_dir=$(ANALYSES)/seeds/seed_0,$(ANALYSES)/seeds/seed_1
	$(BIN)/python -m lth_tf.analyze layers --report_dir=docs/analyze \
	  --output_dir=$(ANALYSES)/seeds/seed_0,$(ANALYSES)/seeds/seed_1
	$(BIN)/python -m lth_tf.analyze layers --report_dir=docs/analyze/global \
	  --output_dir=$(ANALYSES)/global/seed_0,$(ANALYSES)/global/seed_1
	$(BIN)/python -m lth_tf.analyze movement --report_dir=docs/analyze --round=3 \
	  --output_dir=$(ANALYSES)/seeds/seed_0,$(ANALYSES)/seeds/seed_1
	$(BIN)/python -m lth_tf.analyze overlap --report_dir=docs/analyze/sgd_noise \
	  --output_dir=$(ANALYSES)/data_order/data_order_seed=0/seed_0,$(ANALYSES)/data_order/data_order_seed=1/seed_0
	# The analyses that train (their runs under $(ANALYSES)/training; figures and tables copied to docs/).
	$(BIN)/python -m lth_tf.analyze removal --output_dir=$(ANALYSES)/seeds/seed_0 --report_dir=$(ANALYSES)/training \
	  --target_round=8 --tickets=3
	$(BIN)/python -m lth_tf.analyze instability --output_dir=$(ANALYSES)/seeds/seed_0 \
	  --report_dir=$(ANALYSES)/training --rewind_steps=0,50,200,500 --rounds=0,4,8 --pairs=2
	$(BIN)/python -m lth_tf.analyze landscape --output_dir=$(ANALYSES)/seeds/seed_0 \
	  --report_dir=$(ANALYSES)/training --rounds=0,4,8
	mkdir -p docs/analyze/training
	cp $(ANALYSES)/training/report.md $(ANALYSES)/training/*.png $(ANALYSES)/training/*.csv docs/analyze/training/

# docs/cheaper_tickets.md's chart (docs/methods/): every pruning method on configs/methods.flags, 3 seeds
# each; resumable like any sweep. methods-report redraws the chart from what is on disk.
METHODS := runs/methods
DENSITIES := 0.5,0.2,0.1,0.05
methods: $(BIN)/activate
	$(BIN)/python -m lth_tf.sweep --flagfile=configs/methods.flags --seeds=0,1,2 --export=none \
	  --grid=prune_method=snip,grasp,synflow,magnitude_init,random,early_bird --target_density=$(DENSITIES) \
	  --sweep_dir=$(METHODS)/at_init
	$(BIN)/python -m lth_tf.sweep --flagfile=configs/methods.flags --seeds=0,1,2 --export=none --prune_method=early_bird \
	  --early_bird_epsilon=0.01 --target_density=$(DENSITIES) --sweep_dir=$(METHODS)/early_bird
	$(BIN)/python -m lth_tf.sweep --flagfile=configs/methods.flags --seeds=0,1,2 --export=none --oneshot \
	  --target_density=$(DENSITIES) --sweep_dir=$(METHODS)/oneshot
	$(BIN)/python -m lth_tf.sweep --flagfile=configs/methods.flags --seeds=0,1,2 --export=none \
	  --grid=retrain=rewind,lr_rewind,finetune --sweep_dir=$(METHODS)/imp
	$(MAKE) methods-report

methods-report: $(BIN)/activate
	$(BIN)/python -m lth_tf.report --report_dir=docs/methods $(METHODS)/imp/*/seed_* $(METHODS)/oneshot/seed_* \
	  $(METHODS)/at_init/*/seed_* $(METHODS)/early_bird/seed_*

# docs/analyses.md's transfer picture (docs/analyze/transfer/): the quick default found on MNIST-1D's classes 0-4
# (task A), its tickets trained on classes 5-9 and on MNIST-1D generated with more noise and shear (task B).
# A and B share seed 0, so a transferred ticket and B's own start from the same hidden weights. Resumable.
TRANSFER := runs/transfer
SHIFTED := --mnist1d_corr_noise_scale=0.5 --mnist1d_shear_scale=1.5 --mnist1d_seed=7
transfer: $(BIN)/activate
	$(BIN)/python -m lth_tf.main --flagfile=configs/quick.flags --classes=0,1,2,3,4 --controls=none --export=none \
	  --output_dir=$(TRANSFER)/source
	$(BIN)/python -m lth_tf.analyze transfer --output_dir=$(TRANSFER)/source --report_dir=$(TRANSFER)/report \
	  --target_flags='--flagfile=configs/quick.flags --classes=5,6,7,8,9'
	$(BIN)/python -m lth_tf.analyze transfer --output_dir=$(TRANSFER)/source --report_dir=$(TRANSFER)/report \
	  --target_flags='--flagfile=configs/quick.flags --classes=0,1,2,3,4 $(SHIFTED)'
	mkdir -p docs/analyze/transfer
	cp $(TRANSFER)/report/report.md $(TRANSFER)/report/transfer.png $(TRANSFER)/report/transfer.csv docs/analyze/transfer/

# docs/analyses.md's information-plane picture (docs/analyze/infoplane/): the quick default (its reinit control
# included), rounds 0, 4 and 8 trained again with their activations recorded, by both estimators. Resumable.
INFOPLANE := runs/infoplane
KDE_VARIANCE := 0.1
infoplane: $(BIN)/activate
	$(BIN)/python -m lth_tf.main --flagfile=configs/quick.flags --export=none --output_dir=$(INFOPLANE)/run
	$(BIN)/python -m lth_tf.analyze infoplane --output_dir=$(INFOPLANE)/run --report_dir=$(INFOPLANE)/report \
	  --rounds=0,4,8 --branches=ticket,reinit --estimator=binning
	$(BIN)/python -m lth_tf.analyze infoplane --output_dir=$(INFOPLANE)/run --report_dir=$(INFOPLANE)/report \
	  --rounds=0,4,8 --branches=ticket,reinit --estimator=kde --kde_variance=$(KDE_VARIANCE)
	mkdir -p docs/analyze/infoplane
	cp $(INFOPLANE)/report/report.md $(INFOPLANE)/report/infoplane.csv $(INFOPLANE)/report/infoplane_*.png \
	  docs/analyze/infoplane/

clean:
	rm -rf $(VENV) *.egg-info
