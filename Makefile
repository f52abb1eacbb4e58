.PHONY: deps demo test lint bench

deps:
	bash scripts/install-deps.sh

demo: deps
	python3 -m indexd demo

test:
	bash scripts/install-deps.sh test
	bash scripts/test.sh

lint:
	ruff check indexd tests bench
	mypy indexd
	lint-imports

bench: deps
	for b in pool advisor backup build_under_load; do python3 -m bench.$$b || exit 1; done
