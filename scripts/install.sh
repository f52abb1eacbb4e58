#!/usr/bin/env bash
# Install indexd as a system service on Debian 12 (run as root from a checkout; safe to run again).
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: install.sh [--venv DIR] [--no-pg-client] [--python PATH]
       install.sh --uninstall [--venv DIR]
       install.sh --help

Install indexd from this checkout as a system service. Run as root; running it again upgrades the code
and changes nothing else that is already right.

  - apt-get installs python3-venv when missing, and the PostgreSQL 15 client tools (pg_dump,
    pg_restore, psql: package postgresql-client-15, which backups need) unless --no-pg-client
  - a virtualenv at /opt/indexd on Debian's /usr/bin/python3 (Debian refuses pip installs into the
    system Python), with indexd installed from a wheel built from this checkout
  - /usr/local/bin/indexd: a symlink to the virtualenv's indexd (the path the systemd unit runs)
  - a system user and group `indexd` (no login shell, home /var/lib/indexd)
  - /etc/indexd (0750 root:indexd) and /etc/indexd/indexpilot_config.yaml (0640 root:indexd), copied
    from this checkout only when absent: an existing configuration is always kept as it is
  - /var/lib/indexd, /var/lib/indexd/backups and /var/log/indexd (0700, owned by indexd)
  - /usr/share/indexd: scripts/backup.sh and scripts/restore.sh for cron and operators, the Prometheus
    alert rules (prometheus-alerts.yml) and the Grafana dashboard (grafana/indexd.json)
  - /etc/systemd/system/indexd.service, then `systemctl daemon-reload` when systemd runs (a running
    indexd is restarted onto the new code; the service is not enabled: edit the configuration first)

  --venv DIR       the virtualenv's folder (default /opt/indexd)
  --python PATH    the interpreter the virtualenv is made from (default /usr/bin/python3, 3.11 or newer)
  --no-pg-client   do not install postgresql-client-15 (backups then need pg_dump and pg_restore on PATH)
  --uninstall      stop the service and remove the virtualenv, the symlink, /usr/share/indexd and the unit;
                   the configuration, the data and the logs (/etc/indexd, /var/lib/indexd,
                   /var/log/indexd) and the indexd user are kept
  -h, --help       show this help

exit status: 0 done, 1 a step failed, 2 usage error
USAGE
}

SRC=$(cd "$(dirname "$0")/.." && pwd)
ARGS="$*"
VENV=/opt/indexd
PY=/usr/bin/python3
PG_CLIENT=1
ACTION=install
BIN=/usr/local/bin/indexd
UNIT=/etc/systemd/system/indexd.service
SHARE=/usr/share/indexd
CONF_DIR=/etc/indexd
CONF=$CONF_DIR/indexpilot_config.yaml
STATE_DIR=/var/lib/indexd
LOG_DIR=/var/log/indexd
USER_NAME=indexd

say() { echo "install.sh: $*"; }
die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --venv) [ $# -ge 2 ] || { echo "install.sh: --venv needs a folder" >&2; exit 2; }; VENV=$2; shift ;;
    --python) [ $# -ge 2 ] || { echo "install.sh: --python needs a path" >&2; exit 2; }; PY=$2; shift ;;
    --no-pg-client) PG_CLIENT=0 ;;
    --uninstall) ACTION=uninstall ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
case "$VENV" in /?*) ;; *) echo "install.sh: --venv must be an absolute path, not '$VENV'" >&2; exit 2 ;; esac
VENV=${VENV%/}

[ "$(id -u)" -eq 0 ] || die "run as root: sudo $0 $ARGS"
# Whatever the calling shell points Python at must not leak into the build or the virtualenv.
unset PYTHONPATH PYTHONHOME PYTHONUSERBASE PIP_USER PIP_PREFIX PIP_TARGET VIRTUAL_ENV PIP_REQUIRE_VIRTUALENV
export DEBIAN_FRONTEND=noninteractive
systemd_runs() { [ -d /run/systemd/system ]; }
WORK=""
trap '[ -z "$WORK" ] || rm -rf "$WORK"' EXIT

APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand (this installer is for Debian)"
  if [ "$APT_UPDATED" -eq 0 ]; then apt-get update -qq; APT_UPDATED=1; fi
  say "installing $* (apt-get)"
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

is_venv() { [ -f "$1/pyvenv.cfg" ] && [ -x "$1/bin/python" ]; }

uninstall() {
  if systemd_runs && [ -f "$UNIT" ]; then
    systemctl disable --now indexd.service >/dev/null 2>&1 || true
    say "stopped and disabled indexd.service"
  fi
  if [ -e "$UNIT" ]; then rm -f "$UNIT"; say "removed $UNIT"; fi
  if systemd_runs; then systemctl daemon-reload; fi
  if [ -L "$BIN" ]; then rm -f "$BIN"; say "removed $BIN"; fi
  if [ -d "$SHARE" ]; then rm -rf "$SHARE"; say "removed $SHARE"; fi
  if [ -e "$VENV" ]; then
    is_venv "$VENV" || die "$VENV is not a virtualenv (no pyvenv.cfg): left alone, remove it by hand"
    rm -rf "$VENV"
    say "removed $VENV"
  fi
  say "kept the configuration $CONF_DIR, the data $STATE_DIR, the logs $LOG_DIR and the user $USER_NAME;"
  say "remove them by hand when they are no longer needed (userdel $USER_NAME; rm -r $CONF_DIR $STATE_DIR $LOG_DIR)"
}

need_packages() {
  local need=()
  [ -x "$PY" ] || { [ "$PY" = /usr/bin/python3 ] || die "$PY not found"; need+=(python3); }
  if command -v dpkg-query >/dev/null 2>&1 && [ "$PY" = /usr/bin/python3 ]; then
    dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q "install ok installed" || need+=(python3-venv)
  fi
  if [ "$PG_CLIENT" -eq 1 ] && [ ! -x /usr/lib/postgresql/15/bin/pg_dump ]; then need+=(postgresql-client-15); fi
  if [ ${#need[@]} -gt 0 ]; then apt_install "${need[@]}"; fi
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PY is older than Python 3.11"
}

make_user() {
  getent group "$USER_NAME" >/dev/null || { groupadd --system "$USER_NAME"; say "created group $USER_NAME"; }
  if ! getent passwd "$USER_NAME" >/dev/null; then
    useradd --system --gid "$USER_NAME" --home-dir "$STATE_DIR" --no-create-home --shell /usr/sbin/nologin \
      --comment "indexd daemon" "$USER_NAME"
    say "created user $USER_NAME"
  fi
}

# A folder with exactly this owner and mode, whether it existed or not.
folder() {
  install -d -m "$1" -o "$2" -g "$3" "$4"
  chmod "$1" "$4"
  chown "$2:$3" "$4"
}

make_folders() {
  folder 0750 root "$USER_NAME" "$CONF_DIR"
  folder 0700 "$USER_NAME" "$USER_NAME" "$STATE_DIR"
  folder 0700 "$USER_NAME" "$USER_NAME" "$STATE_DIR/backups"
  folder 0700 "$USER_NAME" "$USER_NAME" "$LOG_DIR"
  if [ -e "$CONF" ]; then
    say "kept the existing $CONF"
  else
    install -m 0640 -o root -g "$USER_NAME" "$SRC/indexpilot_config.yaml" "$CONF"
    say "installed $CONF (edit it: databases, indexing.mode, windows ...)"
  fi
}

# The virtualenv must come from Debian's interpreter; one made by another Python is made anew.
make_venv() {
  if [ -e "$VENV" ] && ! is_venv "$VENV"; then
    die "$VENV exists and is not a virtualenv: move it away or choose --venv"
  fi
  local want have
  want=$("$PY" -c 'import sys; print(sys.base_prefix, sys.version_info[:2])')
  if is_venv "$VENV"; then
    have=$("$VENV/bin/python" -c 'import sys; print(sys.base_prefix, sys.version_info[:2])' 2>/dev/null || true)
    if [ "$have" != "$want" ]; then
      say "$VENV was made by another Python ($have): making it anew"
      rm -rf "$VENV"
    fi
  fi
  if ! is_venv "$VENV"; then
    "$PY" -m venv "$VENV" || die "could not make the virtualenv $VENV (is python3-venv installed?)"
    say "created the virtualenv $VENV ($PY)"
  fi
}

# A wheel built from a clean copy of the checkout (stale build/ folders never leak into it), installed with its
# dependencies, then reinstalled by force so the same version number still gets this checkout's code.
install_package() {
  local work wheel pip=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input --quiet)
  work=$(mktemp -d)
  WORK=$work
  mkdir "$work/src" "$work/dist"
  tar -C "$SRC" --exclude=__pycache__ -cf - pyproject.toml README.md indexd sql | tar -C "$work/src" -xf -
  "${pip[@]}" wheel --no-deps --wheel-dir "$work/dist" "$work/src" >/dev/null || die "building the wheel failed"
  wheel=$(ls "$work"/dist/indexd-*.whl)
  "${pip[@]}" install "$wheel" || die "installing $wheel into $VENV failed"
  "${pip[@]}" install --no-deps --force-reinstall "$wheel" || die "installing $wheel into $VENV failed"
  "$VENV/bin/indexd" --help >/dev/null || die "$VENV/bin/indexd does not run"
  say "installed $(basename "$wheel") into $VENV"
}

install_files() {
  if [ -e "$BIN" ] && [ ! -L "$BIN" ]; then
    say "replacing $BIN (a file from an earlier installation) with a symlink"
  fi
  ln -sfn "$VENV/bin/indexd" "$BIN"
  install -d -m 0755 "$SHARE/scripts" "$SHARE/grafana"
  install -m 0755 "$SRC/scripts/backup.sh" "$SRC/scripts/restore.sh" "$SHARE/scripts/"
  install -m 0644 "$SRC/config/prometheus-alerts.yml" "$SHARE/"
  install -m 0644 "$SRC/config/grafana/indexd.json" "$SHARE/grafana/"
}

install_unit() {
  install -m 0644 "$SRC/config/indexd.service" "$UNIT"
  if ! systemd_runs; then
    say "installed $UNIT (systemd is not running here: no daemon-reload)"
    return
  fi
  systemctl daemon-reload
  if systemctl is-active --quiet indexd.service; then
    systemctl restart indexd.service
    say "installed $UNIT; restarted the running indexd onto the new code"
  else
    say "installed $UNIT"
  fi
}

if [ "$ACTION" = uninstall ]; then
  uninstall
  exit 0
fi
[ -f "$SRC/pyproject.toml" ] && [ -f "$SRC/config/indexd.service" ] || die "$SRC is not an indexd checkout"
need_packages
make_user
make_folders
make_venv
install_package
install_files
install_unit
cat <<NEXT
install.sh: done. Next, as root:
  1. edit $CONF: databases, indexing.mode, windows, backups ...
  2. runuser -u $USER_NAME -- indexd check-config --production --config $CONF
  3. runuser -u $USER_NAME -- indexd migrate --config $CONF
  4. systemctl enable --now indexd; then indexd status --config $CONF
NEXT
