# certsmith: `make demo` issues a real certificate from a local Pebble; `make test` runs everything.
VENV ?= .venv
PY := $(VENV)/bin/python
export VENV

.PHONY: setup demo test lint typecheck unit bench clean

setup:
	@./scripts/bootstrap.sh

demo: setup
	$(PY) scripts/demo.py --state-dir demo-state

lint: setup
	$(VENV)/bin/ruff check src tests scripts $(wildcard bench)

typecheck: setup
	$(VENV)/bin/mypy src

# pytest exits 5 when it collected no test: that must fail, not pass silently.
test: lint typecheck
	@$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

unit: setup
	$(PY) -m pytest -q tests/unit

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) demo-state .mypy_cache .ruff_cache .pytest_cache
