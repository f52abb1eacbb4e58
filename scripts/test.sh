#!/usr/bin/env bash
# The test suite as CI runs it: real PostgreSQL clusters started by the tests. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pytest "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "no tests were collected: that is a failure" >&2
  exit 1
fi
exit $rc
