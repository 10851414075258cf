#!/usr/bin/env bash
# A private PostgreSQL cluster on loopback, for the tests (tests/task_store.rs, tests/pg_delivery.rs),
# with all of its state in WORKDIR: its data directory, its Unix socket and
# its log. Installs the Debian package postgresql when it is missing
# (without starting the system service). The cluster trusts every local
# connection (user postgres, no password): it listens on 127.0.0.1 only and
# lives as long as a test run.
#
# Usage:
#   scripts/postgres.sh start WORKDIR [PORT]
#       default 5432; returns once the server accepts connections on
#       127.0.0.1:PORT (postgres://postgres@127.0.0.1:PORT/postgres). A
#       WORKDIR stopped before is started again with its data.
#   scripts/postgres.sh install
#       installs postgresql if missing (without starting the system service)
#   scripts/postgres.sh stop WORKDIR
#       stops the server by the PID recorded in WORKDIR
set -euo pipefail

log() { printf '==> postgres: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

alive() {
  # A reparented child may linger as a zombie: not alive.
  [ -r "/proc/$1/stat" ] && ! awk '{ exit ($3 == "Z") ? 0 : 1 }' "/proc/$1/stat"
}

# The newest installed server's binaries (Debian keeps them per major version).
bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && printf '%s\n' "$d"
}

install_server() {
  bindir >/dev/null && return 0
  log "installing postgresql"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  # Do not start the system service (it would take port 5432 for itself):
  # a policy-rc.d that forbids starting services, only while installing.
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    own_policy=1
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null || {
    [ "$own_policy" -eq 1 ] && $sudo rm -f "$policy"
    die "cannot install postgresql"
  }
  [ "$own_policy" -eq 1 ] && $sudo rm -f "$policy"
  bindir >/dev/null || die "initdb and pg_ctl missing after installing postgresql"
}

stop_pid() {
  local pid=$1
  alive "$pid" || return 0
  # SIGINT is PostgreSQL's fast shutdown: sessions are ended, the data is
  # left consistent.
  kill -INT "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 150); do
    alive "$pid" || return 0
    sleep 0.1
  done
  log "PID $pid did not stop in 15 s; killing it"
  kill -9 "$pid" 2>/dev/null || true
}

cmd_stop() {
  local w=$1
  if [ -s "$w/postgres.pid" ]; then
    stop_pid "$(cat "$w/postgres.pid")"
    rm -f "$w/postgres.pid"
  fi
}

cmd_start() {
  local w=$1 port=${2:-5432}
  answers "$port" && die "127.0.0.1:$port already answers"
  install_server
  local bin
  bin=$(bindir)
  mkdir -p "$w"
  w=$(cd "$w" && pwd)
  # initdb and the server refuse to run as root: as root, they run as the
  # package's postgres user, which then owns WORKDIR.
  local as=()
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$w"
    as=(runuser -u postgres --)
  fi
  # A WORKDIR that holds a cluster already is started again as it is (a
  # restart: tests/instances.rs stops and starts the server mid-run).
  if [ ! -s "$w/data/PG_VERSION" ]; then
    "${as[@]}" "$bin/initdb" -D "$w/data" -U postgres --auth=trust -E UTF8 --no-locale \
      >"$w/initdb.log" 2>&1 || { cat "$w/initdb.log" >&2; die "initdb failed (log in $w/initdb.log)"; }
  fi
  "${as[@]}" "$bin/pg_ctl" -D "$w/data" -l "$w/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$w" \
    start >"$w/pg_ctl.log" 2>&1 || {
      tail -n 30 "$w/postgres.log" >&2 || true
      [ -s "$w/data/postmaster.pid" ] && head -n 1 "$w/data/postmaster.pid" >"$w/postgres.pid"
      cmd_stop "$w"
      die "the server did not start on 127.0.0.1:$port (logs in $w)"
    }
  # The postmaster's PID is the first line of its pid file.
  head -n 1 "$w/data/postmaster.pid" >"$w/postgres.pid"
  local pid
  pid=$(cat "$w/postgres.pid")
  for _ in $(seq 1 600); do
    if answers "$port"; then
      log "server ready on 127.0.0.1:$port (PID $pid, data in $w/data)"
      return 0
    fi
    alive "$pid" || break
    sleep 0.1
  done
  tail -n 30 "$w/postgres.log" >&2 || true
  cmd_stop "$w"
  die "the server did not open 127.0.0.1:$port (logs in $w)"
}

case "${1:-}" in
  start) [ $# -ge 2 ] || die "usage: $0 start WORKDIR [PORT]"; shift; cmd_start "$@" ;;
  install) install_server ;;
  stop) [ $# -eq 2 ] || die "usage: $0 stop WORKDIR"; cmd_stop "$2" ;;
  *) die "usage: $0 start WORKDIR [PORT] | install | stop WORKDIR" ;;
esac
