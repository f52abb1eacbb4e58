#!/usr/bin/env bash
# Restore an indexd backup into a database; asks before anything destructive unless -y.
# A thin wrapper over `indexd restore`, which verifies the checksum first and replaces an existing
# database only after the restore into a scratch database has succeeded.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: restore.sh [-c CONFIG] [-t TARGET_DSN] [-j N] [-o] [-y] [-h] BACKUP_ID TARGET_DB

Restore backup BACKUP_ID (see 'indexd backup list') into database TARGET_DB. If TARGET_DB exists it is
replaced: you are asked first, unless -y is given. Without a terminal to ask on and without -y, nothing
is done (exit 2).

  -c CONFIG      indexd configuration file (default: $INDEXD_CONFIG, ./indexpilot_config.yaml,
                 /etc/indexd/indexpilot_config.yaml)
  -t TARGET_DSN  server to restore on (default: the backup's own database server, from the config)
  -j N           parallel restore jobs (directory-format backups)
  -o             do not restore ownership and privileges (roles missing on the target server)
  -y             do not ask: replace TARGET_DB if it exists
  -h             show this help

exit status: 0 restored, 1 failed, 2 usage error or not confirmed
USAGE
}

config=() extra=() yes=0
while getopts ":c:t:j:oyh" opt; do
  case "$opt" in
    c) config=(--config "$OPTARG") ;;
    t) extra+=(--target-dsn "$OPTARG") ;;
    j) extra+=(--jobs "$OPTARG") ;;
    o) extra+=(--no-owner) ;;
    y) yes=1 ;;
    h) usage; exit 0 ;;
    :) echo "restore.sh: -$OPTARG needs a value" >&2; usage >&2; exit 2 ;;
    *) if [ "$OPTARG" = "-" ]; then  # a long option: --help is what people type, the rest is named whole
         [ "${!OPTIND}" = "--help" ] && { usage; exit 0; }
         echo "restore.sh: unknown option ${!OPTIND} (options are single letters; see -h)" >&2; exit 2
       fi
       echo "restore.sh: unknown option -$OPTARG" >&2; usage >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [ $# -ne 2 ]; then
  echo "restore.sh: need BACKUP_ID and TARGET_DB" >&2; usage >&2; exit 2
fi
backup_id=$1 target_db=$2

if [ -n "${INDEXD_BIN:-}" ]; then
  indexd=("$INDEXD_BIN")
elif command -v indexd >/dev/null 2>&1; then
  indexd=(indexd)
else
  indexd=(python3 -m indexd)
fi

if [ "$yes" -ne 1 ]; then
  if [ ! -t 0 ]; then
    echo "restore.sh: refusing to restore without confirmation: no terminal to ask on; pass -y" >&2
    exit 2
  fi
  read -r -p "Restore backup '$backup_id' into database '$target_db'? If it exists it will be REPLACED. [y/N] " answer
  case "$answer" in
    y|Y|yes|YES) ;;
    *) echo "restore.sh: not confirmed; nothing was changed" >&2; exit 2 ;;
  esac
fi

exec "${indexd[@]}" "${config[@]}" restore "$backup_id" --target-db "$target_db" "${extra[@]}" --yes
