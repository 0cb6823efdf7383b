# The few verbs people expect. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint lint-php bench demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,fast,dev]'
	touch $(STAMP)

run: $(STAMP)  ## the relay on the example config and its SQLite file under var/
	@echo "userrelay is installed as $(BIN)/userrelay; in another shell, '. $(BIN)/activate' puts it on PATH."
	$(BIN)/userrelay serve --config config.example.yaml

test: $(STAMP)  ## every test, the real-WordPress suite included
	$(BIN)/python -m pytest -ra

lint: $(STAMP) lint-php  ## ruff, mypy strict, the import layers of relay/, and the plugin's PHP
	$(BIN)/ruff check relay tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

lint-php:  ## the plugin: php -l on every file, then PHP_CodeSniffer with phpcs.xml.dist
	@status=0; for f in $$(find plugin-stub -name '*.php' | sort); do \
		php -d display_errors=stderr -d log_errors=0 -l $$f >/dev/null || status=1; \
	done; exit $$status
	phpcs --standard=phpcs.xml.dist

bench: $(STAMP)
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.delivery
	$(BIN)/python -m bench.backlog
	$(BIN)/python -m bench.wordpress
	$(BIN)/python -m bench.backfill
	$(BIN)/python -m bench.reconcile

demo: $(STAMP)  ## two WordPress sites and the relay on loopback (needs root for the packages)
	$(BIN)/python -m tests.e2e.demo

clean:
	rm -rf $(VENV) var .pytest_cache
