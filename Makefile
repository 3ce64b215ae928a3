# Quick start: `make demo` and `make test` on a fresh machine; nothing else is needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo test lint test-deps bench soak clean check-deploy fuzz bench-deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(UNSLOW)
	rm -f $(VENV)/.installed-* && touch $@

# pyqlib (dev only) pulls in jupyter, whose jsonschema extra installs rfc3987-syntax; `import ray`
# loads jsonschema's format checkers, and that one builds an Earley grammar at import: 2.3 s of
# CPU in every Ray worker process (an actor, an executor), so ~4 s on each test's service
# start. Nothing here checks IRI formats. Operations: docs/operations.md, "Worker start-up".
UNSLOW = $(BIN)/python -m pip uninstall --quiet --yes rfc3987-syntax

demo: $(STAMP)
	$(BIN)/python -m raytasks.demo

# System parts the tests use: PostgreSQL server binaries (store suite) and Chromium (dashboard).
# Installed with apt when missing; the tests fail loudly, never skip, if they are still absent.
APT_INSTALL = DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends
test-deps:
	@need=""; \
	command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  need="$$need postgresql"; \
	test -x /usr/bin/chromium || need="$$need chromium"; \
	if [ -n "$$need" ]; then echo "installing:$$need"; apt-get update -qq && \
	  $(APT_INSTALL) $$need >/dev/null; fi

# deploy/ against KubeRay's CRDs (shipped in tests/data/kuberay) and Ray's launcher validation
# (make test runs the same check in tests/head/test_deploy.py)
check-deploy: $(STAMP)
	$(BIN)/python -m tests.manifests deploy

lint: $(STAMP)
	$(BIN)/ruff check raytasks tests
	$(BIN)/mypy

test: $(STAMP) test-deps lint
	$(BIN)/python -m pytest -ra -p no:cacheprovider --durations=40 tests

# A longer schemathesis pass than the one `make test` runs (tests/ray/test_fuzz.py).
fuzz: $(STAMP)
	RAYTASKS_FUZZ_EXAMPLES=300 RAYTASKS_FUZZ_SECONDS=900 \
	  $(BIN)/python -m pytest -ra -p no:cacheprovider --timeout 1800 tests/ray/test_fuzz.py

bench: $(STAMP)
	$(BIN)/raytasks bench

# What `raytasks bench --celery` compares with: Celery and a Redis server.
bench-deps: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(UNSLOW)
	command -v redis-server >/dev/null 2>&1 || (apt-get update -qq && \
	  $(APT_INSTALL) redis-server >/dev/null)

# The long runs, each printing its figures as JSON: `make soak` runs them all (an hour or
# more); each has a target of its own. SOAK_ARGS=--postgres runs the chaos and store runs on a
# throwaway PostgreSQL server they start and stop (SOAK_ARGS="--store-url postgresql://..."
# on one of yours).
.PHONY: soak-chaos soak-nodes
soak: soak-chaos soak-store soak-nodes soak-oom soak-flood soak-endurance

# The chaos run: ~2,000 tasks, ~45 random kills and pauses.
soak-chaos: $(STAMP)
	$(BIN)/python -m tests.chaos --tasks 2000 --kills 45 --seconds 240 $(SOAK_ARGS)

# Nodes lost and drained at length (issue 23, item 3): 30 rounds of node turnover under a
# stream of tasks, two in three drained with a deadline, the third removed without notice;
# `make test` runs one drain (tests/ray/test_cluster_restart.py).
soak-nodes: $(STAMP)
	mkdir -p .raytasks && $(BIN)/python -m tests.scripts.node_drain \
	  $$(mktemp -d $$PWD/.raytasks/soak-nodes.XXXX) --soak 30

# The floods and the long run of issue 23 at full size (minutes to tens of minutes each):
# a million submits against max_queue_size=100,000 and an HTTP client at full speed; a
# million tasks with retention on. `make test` runs the short versions
# (tests/ray/test_floods.py, tests/ray/test_attack_floods.py).
.PHONY: soak-flood soak-endurance
soak-flood: $(STAMP)
	$(BIN)/raytasks bench flood --tasks 1000000 --max-queue-size 100000

soak-endurance: $(STAMP)
	$(BIN)/raytasks bench endurance --tasks 1000000

# Out of memory at length (issue 23, item 4): 20 tasks that eat the node's memory until Ray's
# memory monitor kills their executor, small tasks beside each; `make test` runs one
# (tests/ray/test_oom.py).
.PHONY: soak-oom
soak-oom: $(STAMP)
	$(BIN)/python -m tests.scripts.oom_kill .raytasks/soak-oom 5000 --rounds 20

# Store outages at length (issue 23, item 1): the chaos soak while the store goes away six
# times for 15 s (the SQLite file locked by another process; with SOAK_ARGS=--postgres, the
# throwaway PostgreSQL stopped with pg_ctl stop -m immediate and started again).
.PHONY: soak-store
soak-store: $(STAMP)
	$(BIN)/python -m tests.chaos --tasks 2000 --kills 45 --seconds 240 --store-outages 6 $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .raytasks build *.egg-info
