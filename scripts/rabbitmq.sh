#!/usr/bin/env bash
# A private RabbitMQ node on loopback, for the tests (tests/amqp.rs), with
# all of its state in WORKDIR: its own epmd (on 127.0.0.1, its own port),
# Erlang cookie, database and logs. Installs the Debian package
# rabbitmq-server when it is missing (without starting the system service).
#
# Usage:
#   scripts/rabbitmq.sh start WORKDIR [PORT] [EPMD_PORT] [DIST_PORT]
#       defaults 5672, 4370, PORT + 20000; returns once the node accepts
#       AMQP connections on 127.0.0.1:PORT (guest/guest works from loopback)
#   scripts/rabbitmq.sh install
#       installs rabbitmq-server if missing (without starting the system service)
#   scripts/rabbitmq.sh stop WORKDIR
#       stops the node and its epmd by the PIDs recorded in WORKDIR
set -euo pipefail

log() { printf '==> rabbitmq: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

SERVER=/usr/lib/rabbitmq/bin/rabbitmq-server

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

alive() {
  # A reparented child may linger as a zombie: not alive.
  [ -r "/proc/$1/stat" ] && ! awk '{ exit ($3 == "Z") ? 0 : 1 }' "/proc/$1/stat"
}

install_server() {
  [ -x "$SERVER" ] && command -v epmd >/dev/null 2>&1 && return 0
  log "installing rabbitmq-server"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  # Do not start the system service (it would listen on every interface):
  # a policy-rc.d that forbids starting services, only while installing.
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    own_policy=1
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq rabbitmq-server >/dev/null || {
    [ "$own_policy" -eq 1 ] && $sudo rm -f "$policy"
    die "cannot install rabbitmq-server"
  }
  [ "$own_policy" -eq 1 ] && $sudo rm -f "$policy"
  [ -x "$SERVER" ] || die "$SERVER missing after installing rabbitmq-server"
}

stop_pid() {
  local pid=$1
  alive "$pid" || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 150); do
    alive "$pid" || return 0
    sleep 0.1
  done
  log "PID $pid did not stop in 15 s; killing it"
  kill -9 "$pid" 2>/dev/null || true
}

cmd_stop() {
  local w=$1 f
  for f in "$w/rabbitmq.pid" "$w/epmd.pid"; do
    if [ -s "$f" ]; then
      stop_pid "$(cat "$f")"
      rm -f "$f"
    fi
  done
}

cmd_start() {
  local w=$1 port=${2:-5672} epmd_port=${3:-4370}
  local dist_port=${4:-$((port + 20000))}
  answers "$port" && die "127.0.0.1:$port already answers"
  install_server
  mkdir -p "$w/home" "$w/mnesia" "$w/log"
  w=$(cd "$w" && pwd)
  printf 'listeners.tcp.1 = 127.0.0.1:%s\nloopback_users.guest = true\n' "$port" >"$w/rabbitmq.conf"
  printf '[].\n' >"$w/enabled_plugins"

  export HOME="$w/home"
  export ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT="$epmd_port"
  export RABBITMQ_NODENAME=rabbit@localhost
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$port" RABBITMQ_DIST_PORT="$dist_port"
  export RABBITMQ_CONFIG_FILE="$w/rabbitmq.conf"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$w/enabled_plugins"
  export RABBITMQ_MNESIA_BASE="$w/mnesia" RABBITMQ_LOG_BASE="$w/log"
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"

  epmd -address 127.0.0.1 -port "$epmd_port" >"$w/log/epmd.out" 2>&1 &
  echo $! >"$w/epmd.pid"
  "$SERVER" >"$w/log/server.out" 2>&1 &
  echo $! >"$w/rabbitmq.pid"
  local pid
  pid=$(cat "$w/rabbitmq.pid")
  for _ in $(seq 1 600); do
    if answers "$port"; then
      log "node rabbit@localhost ready on 127.0.0.1:$port (PID $pid, epmd 127.0.0.1:$epmd_port)"
      return 0
    fi
    if ! alive "$pid"; then
      tail -n 30 "$w/log/server.out" >&2 || true
      cmd_stop "$w"
      die "the node exited during start-up (logs in $w/log)"
    fi
    sleep 0.1
  done
  tail -n 30 "$w/log/server.out" >&2 || true
  cmd_stop "$w"
  die "the node did not open 127.0.0.1:$port within 60 s (logs in $w/log)"
}

case "${1:-}" in
  start) [ $# -ge 2 ] || die "usage: $0 start WORKDIR [PORT] [EPMD_PORT] [DIST_PORT]"; shift; cmd_start "$@" ;;
  install) install_server ;;
  stop) [ $# -eq 2 ] || die "usage: $0 stop WORKDIR"; cmd_stop "$2" ;;
  *) die "usage: $0 start WORKDIR [PORT] [EPMD_PORT] [DIST_PORT] | stop WORKDIR" ;;
esac
