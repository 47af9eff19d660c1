# nbaops — the two commands are `make demo` and `make test`; everything else is a helper.
SHELL := /bin/bash
export PATH := $(CURDIR)/.venv/bin:$(HOME)/.cargo/bin:$(PATH)
export CARGO_TARGET_DIR ?= $(CURDIR)/target
CARGO ?= cargo
LOCAL := $(CARGO_TARGET_DIR)/debug/nbaops-local

.PHONY: setup build demo test test-dates lint unit e2e infra-lint infra-scan up invoke down bench package clean fuzz

setup:            ## venv with moto, cargo-lambda, cfn-lint; rustfmt and clippy
	@scripts/setup.sh

build: setup      ## every function binary and the local-stack driver, one cargo invocation
	$(CARGO) build --workspace --bins

demo: build       ## the local stack: fixtures in, remediations out, as a readable report
	$(LOCAL) demo

up: build         ## the local stack stays up (moto + PostgreSQL, seeded): prints endpoints, writes target/local-stack/{state.json,env}
	$(LOCAL) up

invoke: build     ## make invoke FN=scale-on-alarm EVENT=events/cloudwatch-alarm/eventbridge-single-metric-alarm.json (on `make up`'s stack when it is up)
	@test -n "$(FN)" -a -n "$(EVENT)" || { echo "usage: make invoke FN=<function> EVENT=<file>"; exit 2; }
	$(LOCAL) invoke $(FN) $(EVENT)

down:             ## stops what `make up` started (only that), removes its state; idempotent
	@if [ -x $(LOCAL) ]; then $(LOCAL) down; else echo "no $(LOCAL): nothing was started"; fi

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

infra-lint: setup infra-scan
	cfn-lint infra/template.yaml infra/member-role.yaml
	.venv/bin/python infra/tests/check_template.py
	.venv/bin/python infra/tests/check_aws_operations.py
	.venv/bin/python infra/tests/check_member_role.py
	.venv/bin/python infra/tests/check_workflow.py
	infra/tests/check_ca_bundle.sh

infra-scan:       ## checkov + parliament on the SAM-transformed template and infra/member-role.yaml, offline (own venv .venv-scan)
	@scripts/setup-scan.sh
	.venv-scan/bin/python infra/tests/scan.py

unit: build
	$(CARGO) test --workspace --lib --bins

e2e: build
	scripts/test-suites

# Tests never read today's date: the suite runs on a fixed test clock (tests/src/clock.rs), and the
# date-sensitive suites run again at each of these instants (month end, year end, the US DST changes
# at America/New_York, Feb 29).
TEST_DATES ?= 2026-11-30T23:40:00Z 2026-12-31T23:40:00Z 2027-03-14T06:50:00Z 2027-11-07T05:50:00Z 2028-02-29T12:00:00Z
DATE_SUITES ?= e2e_cli e2e_approval_chain e2e_approval_backup e2e_approval_vacuum e2e_replay e2e_backup e2e_offhours e2e_alert_router e2e_cost e2e_failover e2e_scale_offpeak e2e_scale_sustained e2e_scale_gamenight e2e_backup_s3 e2e_backup_dr e2e_pg_signals

# moto's request recordings of the whole suite: every call a function made must be declared in its
# crate's src/aws_operations.rs (which check_aws_operations.py holds the template's role to).
export NBAOPS_AWS_CALLS_DIR ?= $(CARGO_TARGET_DIR)/aws-calls

# The end-to-end package's test binaries run TEST_JOBS at a time, and so do the (suite, instant)
# runs of the date matrix (scripts/test-suites): each test has its own moto and PostgreSQL, so
# runs share nothing but the CPU.
export TEST_JOBS ?= 2
export SOLO_SUITES ?= e2e_storm
export TEST_DATES DATE_SUITES

test: lint infra-lint build ## everything CI runs
	@rm -rf $(NBAOPS_AWS_CALLS_DIR)
	@echo "== make test: lint, infra-lint and build done at $$(date -u +%T)"
	@set -o pipefail; { $(CARGO) test --workspace --exclude nbaops-tests --all-targets --no-fail-fast -- --test-threads=2 2>&1 && \
	  echo "== make test: unit tests done at $$(date -u +%T); the end-to-end suites" && \
	  scripts/test-suites 2>&1 && \
	  .venv/bin/python infra/tests/check_observed_calls.py $(NBAOPS_AWS_CALLS_DIR) && \
	  echo "== make test: end-to-end suites done at $$(date -u +%T); the date matrix" && \
	  scripts/test-suites dates 2>&1; } \
	  | tee $(CARGO_TARGET_DIR)/test.log; \
	  status=$${PIPESTATUS[0]}; scripts/summarize-tests $(CARGO_TARGET_DIR)/test.log; \
	  echo "== make test: done at $$(date -u +%T)"; exit $$status

test-dates: build ## only the date-sensitive suites at each instant of TEST_DATES
	@scripts/test-suites dates

bench: package     ## cold start, warm invoke, peak RSS, arm64 zip size of every function; parse/plan CPU time
	$(CARGO) build --workspace --bins --release
	scripts/zip-artifacts
	$(CARGO_TARGET_DIR)/release/nbaops-local bench

package: setup     ## sam build: every function as an arm64 bootstrap.zip, via cargo-lambda (SAM CLI in its own venv)
	@test -x .venv-sam/bin/sam || { python3 -m venv .venv-sam && .venv-sam/bin/pip install --quiet --disable-pip-version-check aws-sam-cli; }
	@rustup target add aarch64-unknown-linux-gnu >/dev/null
	SAM_CLI_TELEMETRY=0 .venv-sam/bin/sam validate --lint --template-file infra/template.yaml --region us-east-1
	SAM_CLI_TELEMETRY=0 .venv-sam/bin/sam build --beta-features --template-file infra/template.yaml --build-dir .aws-sam/build

# cargo fuzz (libFuzzer, nightly toolchain; not part of `make test` or CI): each target for
# FUZZ_SECONDS, its corpus seeded with every fixture under events/. Panics found land in
# fuzz/artifacts/<target>/. Without sanitizers: the parsers are safe Rust (what we look for is
# panics and wrong answers), and the shared crate links C (aws-lc) that ASan builds poorly.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= classify parsers alert_of
# e.g. FUZZ_FLAGS=--dev: a debug build (overflow checks, much quicker to build on 2 cores, slower to run)
FUZZ_FLAGS ?=
fuzz:             ## make fuzz [FUZZ_SECONDS=60] [FUZZ_TARGETS="classify parsers alert_of"]
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || cargo +nightly install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t && find events -name '*.json' -exec cp {} fuzz/corpus/$$t/ \; && \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s" && \
	  CARGO_TARGET_DIR=$(CARGO_TARGET_DIR)/fuzz cargo +nightly fuzz run --fuzz-dir fuzz --sanitizer none $(FUZZ_FLAGS) $$t \
	    fuzz/corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -max_len=65536 || exit 1; done

clean:
	$(CARGO) clean
	rm -rf .venv
