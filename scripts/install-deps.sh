#!/usr/bin/env bash
# Install what indexd needs on Debian 12, then the Python package. Safe to run again: installs only what is missing.
#   scripts/install-deps.sh          PostgreSQL 15 server + client, pg_stat_statements, HypoPG, pg_qualstats (real
#                                    constants of the workload's predicates); indexd itself
#   scripts/install-deps.sh test     the same, plus what the test suite uses (Prometheus for promtool and a scrape)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}

need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
[ -f /usr/share/postgresql/15/extension/pg_stat_statements.control ] || need+=(postgresql-contrib)
[ -f /usr/share/postgresql/15/extension/hypopg.control ] || need+=(postgresql-15-hypopg)
[ -f /usr/share/postgresql/15/extension/pg_qualstats.control ] || need+=(postgresql-15-pg-qualstats)
command -v pg_dump >/dev/null 2>&1 || need+=(postgresql-client-15)
if [ "$mode" = test ]; then
  command -v promtool >/dev/null 2>&1 || need+=(prometheus)
fi
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "run as root: apt-get install ${need[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  echo "installing ${need[*]} ..." >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian's postgresql package may start a cluster of its own; indexd's demo and tests run private clusters on
# free loopback ports and leave it alone.

extras=""
[ "$mode" = test ] && extras="[test]"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e ".${extras}"
