.PHONY: deps demo test lint bench

deps:
	bash scripts/install-deps.sh

demo: deps
	indexd demo

test: deps
	bash scripts/test.sh

lint:
	ruff check indexd tests bench
	mypy indexd

bench: deps
	python3 -m bench.pool
