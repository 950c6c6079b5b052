# Two commands for a newcomer: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench clean label-studio

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,demo,report]'
	touch $(STAMP)

label-studio:
	scripts/install-label-studio.sh >/dev/null

## Run the daemon on a demo project against a local Label Studio (Ctrl-C stops both).
demo: $(STAMP) label-studio
	$(BIN)/python -m demo $(if $(SIMULATE),--simulate) $(if $(DEMO_SECONDS),--seconds $(DEMO_SECONDS))

## Lint, type-check and run the whole suite against a real Label Studio the suite starts.
test: $(STAMP) label-studio lint typecheck
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check aldaemon demo examples tests bench
	$(BIN)/ruff format --check aldaemon demo examples tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP) label-studio
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
