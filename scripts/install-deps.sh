#!/usr/bin/env bash
# Install what indexd needs on Debian 12: PostgreSQL 15 with pg_stat_statements and HypoPG, then the Python package.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v /usr/lib/postgresql/15/bin/initdb >/dev/null 2>&1 || need+=(postgresql-15 postgresql-client-15)
[ -f /usr/share/postgresql/15/extension/pg_stat_statements.control ] || need+=(postgresql-contrib)
[ -f /usr/share/postgresql/15/extension/hypopg.control ] || need+=(postgresql-15-hypopg)
command -v pg_dump >/dev/null 2>&1 || need+=(postgresql-client-15)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    sudo=sudo
    command -v sudo >/dev/null 2>&1 || { echo "install as root: apt-get install ${need[*]}" >&2; exit 1; }
  else
    sudo=
  fi
  echo "installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The Debian package starts a cluster of its own; indexd's demo and tests run private ones and do not need it.

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e '.[test]'
