.PHONY: deps demo test lint bench install uninstall

deps:
	bash scripts/install-deps.sh

demo: deps
	python3 -m indexd demo

# As root: indexd as a system service (virtualenv /opt/indexd, user indexd, /etc/indexd, systemd unit).
install:
	bash scripts/install.sh

uninstall:
	bash scripts/install.sh --uninstall

test:
	bash scripts/install-deps.sh test
	bash scripts/test.sh

lint:
	ruff check indexd tests bench
	mypy indexd
	lint-imports

bench: deps
	for b in pool advisor backup build_under_load; do python3 -m bench.$$b || exit 1; done
