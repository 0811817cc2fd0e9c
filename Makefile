# rollback-flows: the rag-api rollback playbook as Prefect flows.
#   make demo   set everything up, start the local stack with the Prefect UI, run a rollback
#   make test   set everything up and run the tests against a real local stack
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PACKAGES := prometheus prometheus-alertmanager postgresql redis-server chromium
PYTEST_ARGS ?=

.PHONY: setup system-packages python binaries test lint rules mutation rollback-prod rollback-staging canary-start stack-up stack-down stack-status demo clean

# The Go build (CPU-bound, minutes on a fresh machine) runs while Debian's packages and the
# Python environment install (mostly downloads); setup fails if either fails.
setup:
	@$(PYTHON) -m stack.build & build=$$!; status=0; \
	$(MAKE) -s --no-print-directory system-packages python || status=$$?; \
	wait $$build || status=1; exit $$status

# Debian's Prometheus 2.42, Alertmanager 0.25, PostgreSQL and Redis (the local Prefect
# server's database and message broker) and Chromium (the browser test of the Prefect UI,
# driven by Playwright; no browser download); installed only when missing.
system-packages:
	@if ! command -v prometheus >/dev/null || ! command -v prometheus-alertmanager >/dev/null \
		|| ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 \
		|| ! command -v redis-server >/dev/null \
		|| ! test -x /usr/bin/chromium; then \
		echo "setup: installing $(APT_PACKAGES) from Debian"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi

python: $(STAMP)
$(STAMP): pyproject.toml
	@echo "setup: creating $(VENV) and installing the project"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $@

# Kubernetes, etcd and KWOK built from Go modules, cached outside the repo by version (with
# the system Python: the build needs nothing of the virtual environment).
binaries:
	@$(PYTHON) -m stack.build

# Two pytest workers, each with its own local stack, each running whole test files (module
# fixtures and the order inside a file hold); the stack tests mostly wait on the cluster, so
# two halve the wall time on 2 cores. TEST_WORKERS=0 runs them in this one process.
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

# Mutation testing of the pure decision logic (playbook/, receiver's parsing and routing, and
# tasks/boundary.py's translation of the libraries' errors) over the unit tests; prints the
# score and every surviving mutant, fails under MUTATION_MIN % (of playbook/).
# Not part of `make test`. Equivalent mutants are reviewed in tests/equivalent_mutants.txt.
# Always from scratch: mutmut keeps a survivor's cached result even after the tests change.
# MODULES="playbook/notices.py playbook/review.py" mutates only those files (the score and the
# gate are then theirs); MUTANTS="playbook.recovery.x_stall*" only the mutants of those names.
MUTATION_MIN ?= 90
MUTATION_CHILDREN ?= 2
MODULES ?=
MUTANTS ?= $(foreach m,$(MODULES),$(subst /,.,$(m:.py=)).*)
QUOTED_MUTANTS = $(foreach p,$(MUTANTS),'$(p)')
mutation: python
	@rm -rf mutants && mkdir mutants
	@echo "mutation: mutmut run --max-children $(MUTATION_CHILDREN) $(MUTANTS) (log in mutants/run.log)"
	@$(VENV)/bin/mutmut run --max-children $(MUTATION_CHILDREN) $(QUOTED_MUTANTS) \
		>mutants/run.log 2>&1 || { tail -n 40 mutants/run.log; exit 1; }
	@grep -a -o '[0-9.]* mutations/second' mutants/run.log || true
	$(PY) tests/mutation_report.py --min $(MUTATION_MIN) $(QUOTED_MUTANTS)

lint: python
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy stack flows tasks playbook receiver bench warm_worker
	@test -x "$(ACTIONLINT)" || { echo "lint: $(ACTIONLINT) is missing; make setup builds it"; exit 1; }
	$(ACTIONLINT) -shellcheck= .github/workflows/*.yml

# The shipped alert rules, generated from the decision matrix (stack/prometheus.py): run after
# editing deployments/decision-matrix.yaml; tests/test_alert_rules.py fails while they disagree.
rules: python
	$(PY) -m stack rules --matrix deployments/decision-matrix.yaml \
		--output deployments/prometheus/rollback-rules.yml

# Built by `make setup` (stack/build.py) into the binaries' cache.
ACTIONLINT = $(shell $(PY) -c 'from stack.config import bin_dir; print(bin_dir() / "actionlint")')

# The playbook's quick reference: `make rollback-prod VERSION=v1.2.3` starts the image-rollback
# deployment on the Prefect server of PREFECT_API_URL (production asks for an approval in the
# Prefect UI first) and follows the run to its end, printing its URL; a missing or malformed
# VERSION is refused before anything runs (flows/quick_reference.py).
rollback-prod: python
	@$(PY) -m flows.quick_reference production "$$VERSION"

rollback-staging: python
	@$(PY) -m flows.quick_reference staging "$$VERSION"

# The release pipeline's signal that a canary began: `make canary-start SERVICE=rag-api
# NAMESPACE=production VERSION=v1.3.0` emits rollback-flows.canary.started to the Prefect
# server of PREFECT_API_URL, whose trigger (prefect.yaml) starts canary-guard for that canary;
# a malformed version, an unknown service or namespace is refused before anything is sent.
canary-start: python
	@$(PY) -m flows.canary_start "$${SERVICE:-rag-api}" "$$NAMESPACE" "$$VERSION"

stack-up: setup
	$(PY) -m stack up --prefect-ui

stack-down:
	@test -x $(PY) && $(PY) -m stack down || true

stack-status:
	@$(PY) -m stack status

demo: setup
	$(PY) -m stack.demo

clean: stack-down
	rm -rf $(VENV) .stack
