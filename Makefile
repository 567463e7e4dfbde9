# The two commands of the README. Both install what is missing first (scripts/bootstrap.sh), at the exact
# versions of requirements.lock; `make lock` refreshes that lock from pyproject.toml's ranges.
.PHONY: demo test check setup lock

setup:
	@bash scripts/bootstrap.sh

LAMBADA := ../shared/data/lambada/lambada_test.jsonl

demo: setup
	.venv/bin/gaincell demo --out demo-output $(if $(wildcard $(LAMBADA)),--lambada $(LAMBADA))

# Tests run in TEST_WORKERS processes (pytest-xdist; one per core of the 2-core machines the times in the README
# were measured on). pytest's exit status 5 means it collected no test: that is a failure, said as such.
TEST_WORKERS ?= 2

test: setup
	@.venv/bin/python -m pytest -q -n $(TEST_WORKERS) || { status=$$?; \
		if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$status; }

# The fast tier for the edit-test loop: no ngspice, no language model, nothing marked slow (markers: pyproject.toml).
check: setup
	@.venv/bin/python -m pytest -q -n $(TEST_WORKERS) -m "not slow and not spice and not lm" || { status=$$?; \
		if [ $$status -eq 5 ]; then echo "make check: pytest collected no tests" >&2; fi; exit $$status; }

lock:
	$${PYTHON:-python3} scripts/lock.py
