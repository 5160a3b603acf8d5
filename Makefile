VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: broker test install bench clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PIP) install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

broker: install
	$(VENV)/bin/ferry broker

test: install
	$(PY) -m pytest

bench: install
	$(PIP) install --quiet -e '.[test,bench]'
	$(PY) benchmarks/storage_bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
