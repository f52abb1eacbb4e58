#!/usr/bin/env bash
# The test suite as CI runs it: real PostgreSQL clusters started by the tests. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
# The import layers first (pyproject.toml [tool.importlinter]): a broken contract fails the run.
if ! lint-imports; then
  echo "import layers broken: see lint-imports above and docs/architecture.md" >&2
  exit 1
fi
python3 -m pytest "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "no tests were collected: that is a failure" >&2
  exit 1
fi
exit $rc
