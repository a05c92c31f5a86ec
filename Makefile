# climseg: `make demo` and `make test` are all a user needs.
# Both install into a project-local virtual environment first (once).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.climseg-installed

.PHONY: install demo demo-events test lint bench clean-venv

install: $(STAMP)

# Re-run only when the dependency declarations change.
$(STAMP): setup.cfg pyproject.toml tools/install_horovod.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[test,build]'
	tools/install_horovod.sh $(VENV)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -W ignore -c "import climseg_tf, official.vision.modeling, horovod.tensorflow.keras; print('climseg: environment ready in $(VENV)')"
	@touch $@

# DeepLabv3+ on the embedded synthetic data set (generated once into
# ~/.cache/climseg). Output stride 16: the paper's 8 is about 4x slower on a
# 2-core CPU. Results in runs/demo; re-running resumes (or says it is done).
DEMO_FLAGS ?= --model deeplabv3plus --output-stride 16 --epochs 6 --output-dir runs/demo

# Then, from masks to tracks (also alone: `make demo-events`, once the demo has
# trained): a 3-day synthetic sequence (24 3-hourly steps) at the demo's grid,
# predicted with the demo's best checkpoint; the masks' cyclone and river tracks
# scored against the sequence's true tracks, with maps. About a minute.
DEMO_DIR := runs/demo
DEMO_SEQUENCE_FLAGS ?= -n 24 --height 64 --width 96 --sequence --quiet

define DEMO_EVENTS
	@test -d $(DEMO_DIR)/checkpoints/best || { echo "no trained model in" \
	  "$(DEMO_DIR)/checkpoints/best: run make demo first"; exit 1; }
	$(VENV)/bin/climseg-synth $(DEMO_DIR)/sequence $(DEMO_SEQUENCE_FLAGS)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -W ignore::FutureWarning train.py predict \
	  --checkpoint $(DEMO_DIR)/checkpoints/best --input $(DEMO_DIR)/sequence \
	  --output-dir $(DEMO_DIR)/sequence-masks
	$(VENV)/bin/climseg-events --input $(DEMO_DIR)/sequence-masks --fields $(DEMO_DIR)/sequence \
	  --truth $(DEMO_DIR)/sequence --figures --output-dir $(DEMO_DIR)/events
	@echo "maps: $(DEMO_DIR)/sequence-masks/*.png (each step, prediction next to truth);" \
	  "$(DEMO_DIR)/events/frequency.png, genesis.png, lifetime.png, speed.png"
endef

demo: install
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -W ignore::FutureWarning train.py $(DEMO_FLAGS)
	$(DEMO_EVENTS)

demo-events: install
	$(DEMO_EVENTS)

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .

# The performance suite (issue 7): about 20 minutes on 2 cores; writes
# bench/results/report.md and report.json. BENCH_FLAGS=--quick for a shorter run.
bench: install
	$(PY) -m bench $(BENCH_FLAGS)

clean-venv:
	rm -rf $(VENV)
