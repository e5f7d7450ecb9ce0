# Two commands set everything up on a fresh machine:
#   make run    installs Mentor and trains the default example on this machine (no cluster)
#   make test   installs Mentor, builds the local control plane from Go modules, runs the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install control-plane prometheus mlflow run test lint
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,trainer]'
	touch $@

control-plane:
	tests/cluster/tools/build.sh
	tests/cluster/tools/build-kueue.sh

# The tracking tests' MLflow server, from PyPI, in a virtual environment of its own.
mlflow:
	tests/cluster/tools/build-mlflow.sh

# The observability tests scrape the operator with a real Prometheus (Debian's package).
prometheus:
	@command -v prometheus >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends prometheus; }

run: install
	$(BIN)/mentor data shakespeare
	$(BIN)/mentor run

# pip, the Go builds, apt and MLflow's pip at once: the first waits on the network, the second on the CPU.
# Three pytest processes, one per group of tests/conftest.py: the suites that wait on a control
# plane's clock run beside the ones that keep the cores busy.
test:
	$(MAKE) --no-print-directory -j4 install control-plane prometheus mlflow
	tests/run_groups.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
