# The commands the README gives. `make test` and `make dev` work on a fresh clone with only
# Python 3.11: they create .venv and install what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

# The single sign-on tests' provider (node's oidc-provider, pinned in tests/oidc's lock file);
# without node they skip, saying why, unless GANTRY_REQUIRE_OIDC=1 (.ci/run).
OIDC := tests/oidc
OIDC_STAMP := $(OIDC)/node_modules/.installed-$(shell cksum $(OIDC)/package-lock.json | cut -d' ' -f1)

.PHONY: install dev test lint format bench clean oidc

# Says what it is doing: a first install takes a minute or two and used to print nothing.
# PYTHONWARNINGS: setuptools' notes about editable installs are for packagers, not users.
$(STAMP): pyproject.toml
	@echo "gantry: creating $(VENV) and installing Gantry with its dependencies (a minute or two the first time)"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip
	@PYTHONWARNINGS=ignore $(BIN)/pip install -q --progress-bar off -e ".[dev]"
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)
	@echo "gantry: installed into $(VENV)"

install: $(STAMP)

$(OIDC_STAMP): $(OIDC)/package.json $(OIDC)/package-lock.json
	npm ci --prefix $(OIDC) --no-audit --no-fund --loglevel=error
	touch $@

oidc:
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory $(OIDC_STAMP); \
	else echo "node/npm not found: the single sign-on tests will skip"; fi

dev: install
	$(BIN)/gantry dev

test: install oidc
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(OIDC)/node_modules
