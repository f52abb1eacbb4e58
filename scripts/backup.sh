#!/usr/bin/env bash
# Take verified backups of the configured databases with indexd; for operators and cron.
# A thin wrapper: all the work (and every safety check) is done by `indexd backup`.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: backup.sh [-c CONFIG] [-d DATABASE] [-p] [-n] [-h]

Take a backup of every configured database (or of one), then optionally prune old backups by the
retention policy. Backups are written, fsynced, checksummed and verified by indexd.

  -c CONFIG    indexd configuration file (default: $INDEXD_CONFIG, ./indexpilot_config.yaml,
               /etc/indexd/indexpilot_config.yaml)
  -d DATABASE  only this database of the configuration (default: all of them)
  -p           after the backups succeeded, delete backups the retention policy no longer keeps
  -n           with -p: only show what would be deleted
  -h           show this help

exit status: 0 ok, 1 a backup (or the pruning) failed, 2 usage or configuration error
example cron line:  15 */6 * * *  indexd  /usr/share/indexd/scripts/backup.sh -p
USAGE
}

config=() database=() prune=0 dry_run=()
while getopts ":c:d:pnh" opt; do
  case "$opt" in
    c) config=(--config "$OPTARG") ;;
    d) database=(--database "$OPTARG") ;;
    p) prune=1 ;;
    n) dry_run=(--dry-run) ;;
    h) usage; exit 0 ;;
    :) echo "backup.sh: -$OPTARG needs a value" >&2; usage >&2; exit 2 ;;
    *) if [ "$OPTARG" = "-" ]; then  # a long option: --help is what people type, the rest is named whole
         [ "${!OPTIND}" = "--help" ] && { usage; exit 0; }
         echo "backup.sh: unknown option ${!OPTIND} (options are single letters; see -h)" >&2; exit 2
       fi
       echo "backup.sh: unknown option -$OPTARG" >&2; usage >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [ $# -gt 0 ]; then
  echo "backup.sh: unexpected argument: $1" >&2; usage >&2; exit 2
fi

if [ -n "${INDEXD_BIN:-}" ]; then
  indexd=("$INDEXD_BIN")
elif command -v indexd >/dev/null 2>&1; then
  indexd=(indexd)
else
  indexd=(python3 -m indexd)
fi

"${indexd[@]}" "${config[@]}" backup run "${database[@]}"
if [ "$prune" -eq 1 ]; then
  "${indexd[@]}" "${config[@]}" backup prune "${database[@]}" "${dry_run[@]}"
fi
