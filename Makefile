# The two commands of the README. Both install what is missing first (scripts/bootstrap.sh), at the exact
# versions of requirements.lock; `make lock` refreshes that lock from pyproject.toml's ranges.
.PHONY: demo test setup lock

setup:
	@bash scripts/bootstrap.sh

LAMBADA := ../shared/data/lambada/lambada_test.jsonl

demo: setup
	.venv/bin/gaincell demo --out demo-output $(if $(wildcard $(LAMBADA)),--lambada $(LAMBADA))

# pytest's exit status 5 means it collected no test: that is a failure, said as such.
test: setup
	@.venv/bin/python -m pytest -q || { status=$$?; \
		if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$status; }

lock:
	$${PYTHON:-python3} scripts/lock.py
