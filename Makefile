# otel-audit: `make run` and `make test` are the front door; `make help` lists all.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
WASM_TARGET := wasm32-wasip2
WASM := target/$(WASM_TARGET)/wasm/audit_processor.wasm
BIN := target/release/otel-audit
VENV := .venv
JCO_DIR := tests/jco

# Test-only components (`make fixtures`), built in their own target dir (one
# after the other; the dependencies are shared) so the shipped $(WASM) is
# never overwritten.
FIXTURES := target/wasm-fixtures

# Tests and benches find the component, the test-only fixtures and a
# private module cache here.
export OTEL_AUDIT_WASM := $(abspath $(WASM))
export OTEL_AUDIT_WASM_KEEP_ALL := $(abspath $(FIXTURES)/keep-all.wasm)
export OTEL_AUDIT_WASM_TRAP_CONFIGURE := $(abspath $(FIXTURES)/trap-in-configure.wasm)
export OTEL_AUDIT_WASM_NO_CHAIN_EVENTS := $(abspath $(FIXTURES)/no-chain-events.wasm)
export OTEL_AUDIT_CACHE_DIR := $(abspath target/module-cache)

.PHONY: help wasm fixtures build run test lint unit jco venv bench clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

wasm: ## Build the processor component (wasm32-wasip2, opt-level 3, lto, strip, panic=abort)
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)
	$(CARGO) build -p audit-processor --target $(WASM_TARGET) --profile wasm
	@ls -l $(WASM) | awk '{print "component: " $$NF " (" $$5 " bytes)"}'

fixtures: ## Test-only components for hot-swap tests: keep-all (process-* keep every record), trap-in-configure, no-chain-events
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)
	@mkdir -p $(FIXTURES)
	$(CARGO) build -p audit-processor --target $(WASM_TARGET) --profile wasm --features test-keep-all --target-dir target/fixtures
	cp target/fixtures/$(WASM_TARGET)/wasm/audit_processor.wasm $(OTEL_AUDIT_WASM_KEEP_ALL)
	$(CARGO) build -p audit-processor --target $(WASM_TARGET) --profile wasm --features test-trap-in-configure --target-dir target/fixtures
	cp target/fixtures/$(WASM_TARGET)/wasm/audit_processor.wasm $(OTEL_AUDIT_WASM_TRAP_CONFIGURE)
	$(CARGO) build -p audit-processor --target $(WASM_TARGET) --profile wasm --features test-no-chain-events --target-dir target/fixtures
	cp target/fixtures/$(WASM_TARGET)/wasm/audit_processor.wasm $(OTEL_AUDIT_WASM_NO_CHAIN_EVENTS)

build: wasm ## Build the component and the host (release)
	$(CARGO) build --release -p otel-audit

DEV_KEY := dev-keys/otel-audit-dev.key

run: build ## Build everything, create development keys if none exist, validate the default config and serve it (Ctrl-C stops)
	@if [ ! -f $(DEV_KEY) ]; then \
	  $(BIN) keygen --name otel-audit-dev --out dev-keys >/dev/null && \
	  echo "NOTICE: created a DEVELOPMENT checkpoint signing key in dev-keys/ (git-ignored)." && \
	  echo "        It is for trying otel-audit out only: use your own key (otel-audit keygen) in production."; \
	fi
	$(BIN) validate
	$(BIN) serve

lint: ## cargo fmt --check and clippy -D warnings
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy rustfmt
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p audit-processor --target $(WASM_TARGET) --profile wasm -- -D warnings
	$(CARGO) clippy -p audit-processor --target $(WASM_TARGET) --profile wasm --features test-keep-all,test-trap-in-configure,test-no-chain-events -- -D warnings

jco: ## Install jco (the second component host, on Node) and transpile the component
	@cd $(JCO_DIR) && { [ node_modules/.installed -nt package-lock.json ] || { npm ci --no-audit --no-fund && touch node_modules/.installed; }; }
	cd $(JCO_DIR) && npx jco transpile $(abspath $(WASM)) -o transpiled --no-typescript -q --map 'otel-audit:processor/hashing=../hashing.js'
	@echo '{"type":"module"}' > $(JCO_DIR)/transpiled/package.json

venv: ## Python venv for the e2e tests: OpenTelemetry SDK, rotel (tests/e2e/requirements.txt)
	@[ $(VENV)/.installed -nt tests/e2e/requirements.txt ] || { \
	  { [ -x $(VENV)/bin/python ] || python3 -m venv $(VENV); } && \
	  $(VENV)/bin/python -m pip install -q --disable-pip-version-check -r tests/e2e/requirements.txt && \
	  touch $(VENV)/.installed; }

unit: ## Unit tests only (no component needed)
	$(CARGO) test --release -p audit-processor

test: lint wasm fixtures jco venv ## Everything: lint, unit, end-to-end (real .wasm, jco, OTel SDK, rotel), known answers, policy tests
	$(CARGO) test --release --workspace
	$(BIN) test collector-config/policies --module $(WASM) --coverage --fail-uncovered

bench: wasm fixtures venv ## Benchmarks: guest spans/s wasm vs native, empty-call cost; end to end OTLP -> store -> OK vs rotel; hot-swap latency and trigger -> serving time; the seed SQL query on 10^6 records and evidence for 10^4
	$(CARGO) build --release -p otel-audit
	$(CARGO) bench -p otel-audit --bench guest
	$(CARGO) bench -p otel-audit --bench e2e
	$(CARGO) bench -p otel-audit --bench verify
	$(CARGO) bench -p otel-audit --bench proofs
	$(CARGO) bench -p otel-audit --bench sql
	$(CARGO) bench -p otel-audit --bench reload

clean: ## Remove build outputs
	$(CARGO) clean
	rm -rf $(JCO_DIR)/node_modules $(JCO_DIR)/transpiled $(VENV)
