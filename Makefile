# The two commands of the README. Both install what is missing first (scripts/bootstrap.sh).
.PHONY: demo test setup

setup:
	@bash scripts/bootstrap.sh

demo: setup
	.venv/bin/gaincell demo --out demo-output

test: setup
	.venv/bin/python -m pytest -q
