#!/usr/bin/env bash
# A private Orthanc (with its DICOMweb plugin) on loopback, for the
# interoperability tests (tests/orthanc.rs), with all of its state in
# WORKDIR: configuration, storage, index database and log.
#
#   scripts/orthanc.sh install
#       Installs the Debian packages orthanc and orthanc-dicomweb when they
#       are missing, without letting their postinst start the system
#       service (which would listen on every interface, ports 8042 and 4242).
#   scripts/orthanc.sh start WORKDIR PORT [USER:PASS]
#       Writes WORKDIR/orthanc.json (HTTP on PORT, remote access refused,
#       DICOM server off, storage and index under WORKDIR, DICOMweb at
#       /dicom-web/; HTTP basic authentication with that one user when
#       USER:PASS is given), starts Orthanc in the background with its
#       output in WORKDIR/orthanc.log and its PID in WORKDIR/orthanc.pid,
#       waits until GET http://127.0.0.1:PORT/system answers, and prints the
#       PID -- nothing else -- on stdout. Installs the packages if missing.
#   scripts/orthanc.sh stop WORKDIR
#       Stops the Orthanc whose PID is in WORKDIR/orthanc.pid and waits for
#       it to exit (it takes a few seconds). Does nothing if it is not running.
#   scripts/orthanc.sh shim
#       Prints the path of the LD_PRELOAD library described below (building
#       it first), for other servers without a bind-address option
#       (bench/forward.sh's storescp); fails without a C compiler.
#
# Environment (start):
#   ORTHANC_STOW_TARGET=URL     a DICOMweb server "stowrsd" with this base URL
#                               (e.g. http://127.0.0.1:18080/stowrs; Orthanc
#                               posts to URL/studies), for
#                               POST /dicom-web/servers/stowrsd/stow
#   ORTHANC_STOW_CHUNKED=false  send to it with Content-Length (default: chunked)
#   ORTHANC_TIMEOUT=SECS        start-up wait (default 30)
#
# Orthanc 1.10 has no bind-address option and listens on 0.0.0.0. When a C
# compiler is available, a tiny LD_PRELOAD library (built once into
# target/orthanc/) turns its wildcard bind into 127.0.0.1, so that it
# listens on loopback only; without one, RemoteAccessAllowed=false still
# answers 403 to any client that is not on loopback.
set -euo pipefail

prog="orthanc.sh"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ORTHANC=/usr/sbin/Orthanc
PLUGIN=/usr/share/orthanc/plugins/libOrthancDicomWeb.so
export PATH="$PATH:/usr/sbin:/sbin"

die() { printf '%s: %s\n' "$prog" "$*" >&2; exit 1; }
note() { printf '%s: %s\n' "$prog" "$*" >&2; }

usage() {
  cat >&2 <<EOF
usage: $0 install
       $0 start WORKDIR PORT [USER:PASS]
       $0 stop WORKDIR
EOF
  exit 2
}

# --- installation ---------------------------------------------------------

installed() { [ -x "$ORTHANC" ] && [ -e "$PLUGIN" ]; }

cmd_install() {
  installed && return 0
  local sudo="" log created_policy=0 rc=0
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "orthanc/orthanc-dicomweb missing and not root (no sudo): install them first"
    sudo="sudo"
  fi
  command -v apt-get >/dev/null 2>&1 || die "orthanc/orthanc-dicomweb missing and apt-get not found: install them first"
  note "installing orthanc and orthanc-dicomweb"
  log="$(mktemp "${TMPDIR:-/tmp}/orthanc-install.XXXXXX")"
  # Keep the postinst from starting the system-wide Orthanc; remove the
  # policy again only if we created it.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q orthanc orthanc-dicomweb >>"$log" 2>&1; then
    { $sudo apt-get update -q >>"$log" 2>&1 &&
      $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q orthanc orthanc-dicomweb >>"$log" 2>&1; } || rc=$?
  fi
  [ "$created_policy" -eq 1 ] && $sudo rm -f /usr/sbin/policy-rc.d
  if [ "$rc" -ne 0 ] || ! installed; then
    tail -n 30 "$log" >&2 || true
    die "installing orthanc and orthanc-dicomweb failed (full log: $log)"
  fi
  rm -f "$log"
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet orthanc 2>/dev/null; then
    note "note: the system orthanc service is running (0.0.0.0:8042 and 4242); disable it with: systemctl disable --now orthanc"
  fi
}

# --- helpers --------------------------------------------------------------

check_port() {
  if ! [[ "$1" =~ ^[0-9]+$ ]] || [ "$1" -lt 1 ] || [ "$1" -gt 65535 ]; then
    die "invalid port: '$1'"
  fi
}

abs_workdir() {
  mkdir -p "$1" || die "cannot create work directory $1"
  (cd "$1" && pwd -P)
}

# A JSON string literal for $1.
json_str() {
  local s="$1"
  s="${s//\\/\\\\}"; s="${s//\"/\\\"}"
  s="${s//$'\n'/\\n}"; s="${s//$'\r'/\\r}"; s="${s//$'\t'/\\t}"
  printf '"%s"' "$s"
}

# True if PID is a live (non-zombie) Orthanc process.
is_orthanc() {
  local pid="$1" state comm
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [ -r "/proc/$pid/stat" ]; then
    state="$(sed -e 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    [ "$state" != "Z" ] || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
    [ "$comm" = "Orthanc" ] || return 1
  fi
  return 0
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

read_pid() {
  if [ -r "$1/orthanc.pid" ]; then tr -dc '0-9' <"$1/orthanc.pid"; fi
}

# Path of the LD_PRELOAD library that binds wildcard listeners to loopback
# (built on first use); empty when there is no C compiler.
loopback_shim() {
  local dir="$repo/target/orthanc" so src tmp cc
  so="$dir/bind-loopback-1.so"   # bump the number when the source below changes
  [ -e "$so" ] && { printf '%s' "$so"; return 0; }
  cc="$(command -v cc || command -v gcc || true)"
  [ -n "$cc" ] || return 0
  mkdir -p "$dir"
  tmp="$(mktemp -d "$dir/build.XXXXXX")"
  src="$tmp/bind-loopback.c"
  cat >"$src" <<'EOF'
/* bind() with a wildcard address binds to loopback instead. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real)(int, const struct sockaddr *, socklen_t);
    if (!real) real = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    if (addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in a;
        memcpy(&a, addr, sizeof a);
        if (a.sin_addr.s_addr == htonl(INADDR_ANY)) {
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real(fd, (const struct sockaddr *)&a, sizeof a);
        }
    } else if (addr && addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 a;
        memcpy(&a, addr, sizeof a);
        if (memcmp(&a.sin6_addr, &in6addr_any, sizeof a.sin6_addr) == 0) {
            a.sin6_addr = in6addr_loopback;
            return real(fd, (const struct sockaddr *)&a, sizeof a);
        }
    }
    return real(fd, addr, len);
}
EOF
  if "$cc" -shared -fPIC -O2 -o "$tmp/bind-loopback.so" "$src" -ldl 2>"$tmp/cc.log"; then
    mv -f "$tmp/bind-loopback.so" "$so"   # atomic: parallel starts may race here
    rm -rf "$tmp"
    printf '%s' "$so"
  else
    note "could not build the loopback bind shim ($(head -c 300 "$tmp/cc.log")); Orthanc will listen on 0.0.0.0:PORT, refusing non-loopback clients (RemoteAccessAllowed=false)"
    rm -rf "$tmp"
  fi
}

# --- commands -------------------------------------------------------------

cmd_start() {
  if [ $# -lt 2 ] || [ $# -gt 3 ]; then usage; fi
  local work port cred="${3:-}" user="" pass="" auth=false pid shim timeout i
  port="$2"; check_port "$port"
  work="$(abs_workdir "$1")"
  timeout="${ORTHANC_TIMEOUT:-30}"
  if [ -n "$cred" ]; then
    [[ "$cred" == *:* ]] || die "credentials must be USER:PASS"
    user="${cred%%:*}"; pass="${cred#*:}"
    [ -n "$user" ] || die "empty user name in USER:PASS"
    auth=true
  fi

  pid="$(read_pid "$work")"
  if [ -n "$pid" ] && is_orthanc "$pid"; then
    die "Orthanc already running for $work (PID $pid); stop it first: $0 stop $work"
  fi
  rm -f "$work/orthanc.pid"

  cmd_install
  # Refuse a busy port: the readiness probe could be answered by another server.
  port_busy "$port" && die "127.0.0.1:$port is already in use"

  mkdir -p "$work/storage" "$work/index"
  local users="{}" servers="{}" chunked=true
  [ "$auth" = true ] && users="{ $(json_str "$user"): $(json_str "$pass") }"
  if [ -n "${ORTHANC_STOW_TARGET:-}" ]; then
    local url="${ORTHANC_STOW_TARGET%/}/"   # Orthanc appends "studies"
    [ "${ORTHANC_STOW_CHUNKED:-true}" = false ] && chunked=false
    servers="{ \"stowrsd\": { \"Url\": $(json_str "$url"), \"ChunkedTransfers\": $chunked } }"
  fi
  cat >"$work/orthanc.json" <<EOF
{
  "Name": "stow-exporter-test",
  "StorageDirectory": $(json_str "$work/storage"),
  "IndexDirectory": $(json_str "$work/index"),
  "HttpServerEnabled": true,
  "HttpPort": $port,
  "RemoteAccessAllowed": false,
  "DicomServerEnabled": false,
  "AuthenticationEnabled": $auth,
  "RegisteredUsers": $users,
  "SslEnabled": false,
  "StorageCompression": false,
  "OverwriteInstances": false,
  "SaveJobs": false,
  "LuaScripts": [],
  "Plugins": [ $(json_str "$PLUGIN") ],
  "DicomWeb": {
    "Enable": true,
    "Root": "/dicom-web/",
    "EnableWado": true,
    "Servers": $servers
  }
}
EOF
  chmod 600 "$work/orthanc.json"

  shim="$(loopback_shim)"
  : >"$work/orthanc.log"
  if [ -n "$shim" ]; then
    LD_PRELOAD="$shim${LD_PRELOAD:+:$LD_PRELOAD}" "$ORTHANC" "$work/orthanc.json" >>"$work/orthanc.log" 2>&1 </dev/null &
  else
    "$ORTHANC" "$work/orthanc.json" >>"$work/orthanc.log" 2>&1 </dev/null &
  fi
  pid=$!
  echo "$pid" >"$work/orthanc.pid"

  local curl_auth=()
  [ "$auth" = true ] && curl_auth=(-u "$cred")
  for ((i = 0; i < timeout * 20; i++)); do
    if curl -sf -o /dev/null --max-time 2 "${curl_auth[@]}" "http://127.0.0.1:$port/system"; then
      printf '%s\n' "$pid"
      return 0
    fi
    if ! is_orthanc "$pid"; then
      tail -n 30 "$work/orthanc.log" >&2 || true
      rm -f "$work/orthanc.pid"
      die "Orthanc exited during start-up (log: $work/orthanc.log)"
    fi
    sleep 0.05
  done
  tail -n 30 "$work/orthanc.log" >&2 || true
  cmd_stop "$work"
  die "Orthanc did not answer http://127.0.0.1:$port/system within $timeout s (log: $work/orthanc.log)"
}

cmd_stop() {
  [ $# -eq 1 ] || usage
  local work pid i
  [ -d "$1" ] || return 0
  work="$(cd "$1" && pwd -P)"
  pid="$(read_pid "$work")"
  if [ -z "$pid" ] || ! is_orthanc "$pid"; then
    rm -f "$work/orthanc.pid"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do   # 15 s
    is_orthanc "$pid" || break
    sleep 0.05
  done
  if is_orthanc "$pid"; then
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
      is_orthanc "$pid" || break
      sleep 0.05
    done
    is_orthanc "$pid" && die "Orthanc (PID $pid) did not exit"
    note "Orthanc (PID $pid) ignored SIGTERM for 15 s and was killed"
  fi
  rm -f "$work/orthanc.pid"
}

[ $# -ge 1 ] || usage
cmd="$1"; shift
case "$cmd" in
  install) [ $# -eq 0 ] || usage; cmd_install ;;
  start) cmd_start "$@" ;;
  stop) cmd_stop "$@" ;;
  shim)
    [ $# -eq 0 ] || usage
    so="$(loopback_shim)"
    [ -n "$so" ] || { echo "orthanc.sh: no C compiler for the loopback shim" >&2; exit 1; }
    printf '%s\n' "$so" ;;
  -h|--help|help) usage ;;
  *) usage ;;
esac
