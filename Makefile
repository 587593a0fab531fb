# Face Analytics: `make run` serves the API on 127.0.0.1:8000, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= ../shared/data

.PHONY: setup run test test-fast test-deploy triton models publish loadtest bench profile eval stop clean help chromium

help:
	@echo "make run      set everything up, start Triton + the API on 127.0.0.1:8000"
	@echo "make test     run the test suite (real Triton, real models, SQLite and MariaDB)"
	@echo "make test-fast  the unit tests only: pure functions and files, no Triton, no models (<30 s)"
	@echo "make test-deploy  the compose stack run as processes, as deployed (root; ~4 min)"
	@echo "make setup    virtualenv, dependencies, local Triton, models, model repository"
	@echo "make triton   run the local Triton server in the foreground"
	@echo "make eval     accuracy on labelled photos (DATA=../shared/data) through Triton"
	@echo "make bench    side-by-side benchmark per photo size class: in-process, Triton, API, peers; gallery"
	@echo "make profile  where a request's time goes (CLASS=1080p): Triton per-model stats, py-spy, onnxruntime"
	@echo "make loadtest locust against a running 'make run' (CSV + PNG in loadtests/results/)"
	@echo "make stop     stop a Triton left running by 'make eval'"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	# only the tritonserver binary + python backend of this wheel are used; its own Python
	# dependencies (PyTriton's API) are not needed, hence --no-deps
	$(PY) -m pip install -q --no-deps nvidia-pytriton==0.7.0
	@touch $@

models: $(STAMP)
	$(PY) -m export bootstrap

publish: models
	$(PY) -m export publish --no-load

# the browser test of the web console drives Debian's chromium through its chromedriver
chromium:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver; \
	  else echo "install Debian's chromium and chromium-driver (as root) for tests/integration/test_console.py"; fi; \
	fi

setup: publish chromium

triton: setup
	$(PY) -m tools.triton_local run

run: setup
	$(PY) -m tools.serve

test: $(STAMP)
	$(PY) -m pytest -q -ra -m "not deployed"

# feedback on a change to NMS, alignment, names, rates or SQL text without a Triton boot
test-fast: $(STAMP)
	$(PY) -m pytest -q -ra tests/unit

# the compose stack (docker-compose.yml + the CPU override) as processes in private
# namespaces, as root: mysql, mlflow, export, triton, face-api, then /analyze, /register and
# the documented promotion (tests/deploy/test_as_deployed.py; ~4 min, so not in `make test`)
test-deploy: setup
	$(PY) -m pytest -q -ra -m deployed tests/deploy

loadtest: $(STAMP)
	$(PY) -m pip install -q -e ".[loadtest]"
	@mkdir -p loadtests/results
	$(VENV)/bin/locust -f loadtests/locustfile.py --config loadtests/locust.conf
	$(PY) -m loadtests.plot loadtests/results/locust_stats_history.csv loadtests/results/locust.png

eval: setup
	$(PY) -m tools.triton_local start
	$(PY) -m export evaluate --data $(DATA)

bench: setup
	-bash ../shared/peers/setup.sh
	$(PY) -m loadtests.benchmark
	$(PY) -m loadtests.small_faces_benchmark
	$(PY) -m loadtests.gallery_benchmark

CLASS ?= 1080p
profile: setup
	$(PY) -m pip install -q -e ".[profile]"
	$(PY) -m loadtests.profile --size-class $(CLASS) --ort

stop:
	$(PY) -m tools.triton_local stop

clean:
	rm -rf model_repository var/build var/triton
