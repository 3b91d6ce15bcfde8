# fraudops developer targets; CI (.ci/run) runs `make lint` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON_VERSION ?= 3.11
VENV := .venv
VENV_SERVING := .venv-serving
PY := $(VENV)/bin/python
# The stamps are keyed on pyproject.toml: a changed dependency list reinstalls.
STAMP := $(VENV)/.installed
STAMP_SERVING := $(VENV_SERVING)/.installed
UV = $(shell command -v uv || echo "$$HOME/.local/bin/uv")
# The local services (Kafka, Postgres, MLflow, Airflow): `$(DEVSTACK) up|down|status|env`.
DEVSTACK := $(PY) -m devstack
# The Kafka broker's jars, resolved from Maven Central; refreshed when the pom changes.
KAFKA_LIBS := build/kafka/libs
KAFKA_STAMP := $(KAFKA_LIBS)/.resolved

# The IP country database (CC0 package of CC BY 4.0 NRO data, see README), pinned by version:
# fetched from the npm registry by the install step, never at run time; changing the pin
# fetches and places the new file, which running scorers pick up (fraudops.geoip).
GEOIP_PACKAGE := @ip-location-db/geo-whois-asn-country-mmdb
GEOIP_VERSION := 2.3.2026061719
GEOIP_FILE := geo-whois-asn-country.mmdb
GEOIP_DIR := build/geoip
GEOIP_DB := $(GEOIP_DIR)/$(GEOIP_FILE)
GEOIP_STAMP := $(GEOIP_DIR)/.stamp-$(GEOIP_VERSION)

# The console's frontend, built into console/web/dist (served by the console's backend).
CONSOLE_WEB := console/web
CONSOLE_WEB_BUILT := $(CONSOLE_WEB)/dist/index.html
CONSOLE_WEB_SOURCES := $(shell find $(CONSOLE_WEB)/src -type f 2>/dev/null) \
	$(addprefix $(CONSOLE_WEB)/,package.json package-lock.json index.html vite.config.ts tsconfig.json)

.PHONY: help install system-packages install-serving kafka-jars geoip-db console-web console-web-test proto lint test test-unit test-integration test-pipeline test-faults services-up services-down \
	services-status demo bench bench-tools clean

help:
	@echo "make install          system packages (apt), .venv with the serving, pipeline and dev groups, the Kafka jars"
	@echo "make install-serving  .venv-serving with the light scoring install only"
	@echo "make geoip-db         fetch and place the pinned IP country database (build/geoip)"
	@echo "make console-web      build the console's frontend (npm ci && npm run build)"
	@echo "make test             install, start Kafka + Postgres, run pytest (what CI runs)"
	@echo "make test-unit        the quick tier only: no services, no TensorFlow (under 2 min)"
	@echo "make test-integration real Kafka + Postgres; make test-pipeline: the pipeline stack"
	@echo "make test-faults      the fault suite: restarts, kills, full disks (own services)"
	@echo "make lint             ruff check + format --check; console API types current; tsc, ESLint, Prettier"
	@echo "make demo             install, start every service, run the pipeline and the demo"
	@echo "make bench            the benchmark (python -m bench.run)"
	@echo "make bench-tools      build the Go load generator the capacity benchmark uses"
	@echo "make services-up|services-down|services-status"
	@echo "make proto            regenerate the gRPC stubs from proto/"
	@echo "make clean            remove caches and run/ (stops the services first)"

# System packages first: on a machine without them, stop before any download.
install: system-packages $(STAMP) kafka-jars geoip-db console-web

# Debian's packages of infra/system-packages.txt: installed when missing (as root), else
# the one apt-get command that installs them is printed and make stops.
system-packages:
	scripts/system-packages.sh

console-web: $(CONSOLE_WEB_BUILT)

$(CONSOLE_WEB_BUILT): $(CONSOLE_WEB_SOURCES) | system-packages
	@command -v npm >/dev/null || { echo "npm not found (Node 20+ is needed)" >&2; exit 1; }
	cd $(CONSOLE_WEB) && npm ci --no-audit --no-fund && npm run build

console-web-test: console-web
	cd $(CONSOLE_WEB) && npm test

$(STAMP): pyproject.toml | system-packages
	@command -v uv >/dev/null || [ -x "$$HOME/.local/bin/uv" ] || \
		python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
	@[ -x $(PY) ] || $(UV) venv --python $(PYTHON_VERSION) $(VENV)
	$(UV) pip install --python $(PY) -e '.[serving,pipeline,stripe,console,dev]'
	@touch $@

kafka-jars: $(KAFKA_STAMP)

$(KAFKA_STAMP): infra/kafka/pom.xml | system-packages
	@command -v mvn >/dev/null || { echo "mvn not found (apt-get install -y maven)" >&2; exit 1; }
	rm -rf $(KAFKA_LIBS)
	mvn -B -q -Dstyle.color=never -f infra/kafka/pom.xml dependency:copy-dependencies \
		-DoutputDirectory=$(CURDIR)/$(KAFKA_LIBS)
	@touch $@

geoip-db: $(GEOIP_STAMP)

# npm pack fetches the package's tarball (checked against the registry's integrity hash);
# `fraudops.geoip install` checks the file, records package, version and build date beside
# it, and renames it into place.
$(GEOIP_STAMP): Makefile
	@command -v npm >/dev/null || { echo "npm not found (Node 20+ is needed)" >&2; exit 1; }
	rm -rf $(GEOIP_DIR)/.fetch && mkdir -p $(GEOIP_DIR)/.fetch
	cd $(GEOIP_DIR)/.fetch && npm pack --silent $(GEOIP_PACKAGE)@$(GEOIP_VERSION) >/dev/null \
		&& tar xzf *.tgz
	$(PY) -m fraudops.geoip install --source $(GEOIP_DIR)/.fetch/package/$(GEOIP_FILE) \
		--dest $(GEOIP_DB) --package $(GEOIP_PACKAGE) --version $(GEOIP_VERSION)
	cp $(GEOIP_DIR)/.fetch/package/README.md $(GEOIP_DIR)/.fetch/package/NRO_LICENSE $(GEOIP_DIR)/
	rm -rf $(GEOIP_DIR)/.fetch $(GEOIP_DIR)/.stamp-*
	@touch $@

install-serving: $(STAMP_SERVING)

$(STAMP_SERVING): pyproject.toml
	@command -v uv >/dev/null || [ -x "$$HOME/.local/bin/uv" ] || \
		python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
	@[ -x $(VENV_SERVING)/bin/python ] || $(UV) venv --python $(PYTHON_VERSION) $(VENV_SERVING)
	$(UV) pip install --python $(VENV_SERVING)/bin/python -e '.[serving]'
	@touch $@

proto: install
	$(PY) -m grpc_tools.protoc -Ifraudops/proto_gen=proto --python_out=. --pyi_out=. \
		--grpc_python_out=. proto/fraud/v1/fraud.proto

# The frontend's API types are regenerated from the backend's OpenAPI schema; a difference
# from the committed files fails (commit them), and `tsc` fails a screen the change broke.
CONSOLE_API_TYPES := $(addprefix $(CONSOLE_WEB)/src/lib/,api-schema.json api-types.ts)

lint: install console-web
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m console openapi > $(CONSOLE_WEB)/src/lib/api-schema.json
	cd $(CONSOLE_WEB) && npm run --silent api-types
	git diff --exit-code -- $(CONSOLE_API_TYPES) || \
		{ echo "the console's API types are stale: commit $(CONSOLE_API_TYPES)" >&2; exit 1; }
	cd $(CONSOLE_WEB) && npm run lint

# Every tier runs even when one fails; each prints its duration and its 15 slowest tests.
# pytest exits 5 when it collected no tests: that is a failure, said out loud.
TEST_TIERS := unit integration pipeline faults
PYTEST_ARGS ?=

test: install console-web-test
	$(DEVSTACK) up kafka postgres
	@failed=""; for tier in $(TEST_TIERS); do \
		start=$$SECONDS; \
		$(VENV)/bin/pytest tests/$$tier --durations=15 $(PYTEST_ARGS) || { rc=$$?; \
			[ $$rc -ne 5 ] || echo "FAILED: pytest ran no tests in tests/$$tier" >&2; \
			failed="$$failed $$tier"; }; \
		echo "=== tier $$tier took $$((SECONDS - start)) s ==="; \
	done; \
	[ -z "$$failed" ] || { echo "FAILED tiers:$$failed" >&2; exit 1; }

# The quick tier: no services, no TensorFlow; under two minutes.
test-unit: install
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

test-integration: install
	$(DEVSTACK) up kafka postgres
	$(VENV)/bin/pytest tests/integration --durations=15 $(PYTEST_ARGS)

test-pipeline: install
	$(DEVSTACK) up kafka postgres
	$(VENV)/bin/pytest tests/pipeline --durations=15 $(PYTEST_ARGS)

# The fault suite: each case starts its own Kafka, Postgres or Redis and breaks it.
test-faults: install
	$(DEVSTACK) up kafka postgres
	$(VENV)/bin/pytest tests/faults --durations=15 $(PYTEST_ARGS)

services-up: install
	$(DEVSTACK) up

services-down:
	$(DEVSTACK) down

services-status:
	$(DEVSTACK) status

# The demo reports its whole duration, install included: it starts counting here.
DEMO_STARTED := $(shell date +%s)
demo: install
	$(DEVSTACK) up
	DEMO_STARTED=$(DEMO_STARTED) scripts/demo.sh

bench: install
	$(DEVSTACK) up kafka postgres
	$(PY) -m bench.run

# The Go gRPC load generator the capacity benchmark uses when it is built (not needed by
# the tests or CI); its module pins google.golang.org/grpc (bench/loadgen/go.mod).
bench-tools: build/bench/loadgen

build/bench/loadgen: bench/loadgen/main.go bench/loadgen/go.mod bench/loadgen/go.sum
	@command -v go >/dev/null || { echo "go not found (Go 1.26+ is needed)" >&2; exit 1; }
	cd bench/loadgen && go build -o $(CURDIR)/$@ .

clean:
	$(DEVSTACK) down || true
	rm -rf run .pytest_cache .ruff_cache build
	find . -name __pycache__ -type d -prune -not -path './.venv*' -exec rm -rf {} +
