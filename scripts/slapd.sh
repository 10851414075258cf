#!/usr/bin/env bash
# A private OpenLDAP slapd on loopback for tests and local use, configured
# like a dcm4chee directory (suffix dc=dcm4che,dc=org, schema core + the
# repo's schema/slapd/{dicom,dcm4che,dcm4chee-archive}.ldif).
#
#   scripts/slapd.sh start WORKDIR PORT
#       Installs slapd + ldap-utils if missing (Debian, apt-get), writes a
#       cn=config to WORKDIR/slapd.d (rebuilt on every start; data in
#       WORKDIR/db is kept), starts slapd in the background as the current
#       user, listening on ldap://127.0.0.1:PORT/ and
#       ldapi://<WORKDIR/ldapi> (plus ldaps://127.0.0.1:PORT+1/ when
#       WORKDIR/tls/server.crt and server.key exist; WORKDIR/tls/ca.crt is
#       optional), waits until it answers (10 s at most), writes its PID to
#       WORKDIR/slapd.pid and prints the PID -- nothing else -- on stdout.
#   scripts/slapd.sh stop WORKDIR
#       Stops the slapd whose PID is in WORKDIR/slapd.pid and waits for it
#       to exit. Does nothing if it is not running.
#   scripts/slapd.sh load WORKDIR PORT [LDIF_DIR]
#       ldapadd's every *.ldif of LDIF_DIR (default: the repo's ldif/) in
#       name order as cn=admin,dc=dcm4che,dc=org; stops at the first error.
#   scripts/slapd.sh ldapi-url WORKDIR
#       Prints the ldapi:// URL of the instance (for ldap* -Y EXTERNAL -H).
#
# Credentials: data   cn=admin,dc=dcm4che,dc=org / secret
#              config cn=admin,cn=config / secret
#              SASL EXTERNAL over ldapi as the user that started slapd has
#              manage rights on both cn=config and the data.
# Environment: SLAPD_CORE_ONLY=1   load only the core schema (to test adding
#                                  schema/slapd/*.ldif with ldapadd -Y EXTERNAL)
#              SLAPD_DEBUG=LEVEL   slapd -d level (default 0; e.g. stats);
#                                  slapd's output goes to WORKDIR/slapd.log
#              SLAPD_TIMEOUT=SECS  start-up wait (default 10)
# Loopback only. Quiet on success; errors go to stderr with a non-zero exit.
set -euo pipefail

prog="slapd.sh"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUFFIX="dc=dcm4che,dc=org"
ROOTDN="cn=admin,$SUFFIX"
CONFIG_ROOTDN="cn=admin,cn=config"
PASSWORD="secret"
export PATH="$PATH:/usr/sbin:/sbin"

die() { printf '%s: %s\n' "$prog" "$*" >&2; exit 1; }

usage() {
  cat >&2 <<EOF
usage: $0 start WORKDIR PORT
       $0 stop WORKDIR
       $0 load WORKDIR PORT [LDIF_DIR]
       $0 ldapi-url WORKDIR
EOF
  exit 2
}

check_port() {
  if ! [[ "$1" =~ ^[0-9]+$ ]] || [ "$1" -lt 1 ] || [ "$1" -gt 65534 ]; then
    die "invalid port: '$1' (need 1..65534; PORT+1 is used for ldaps)"
  fi
}

# Absolute path of WORKDIR (created if missing).
abs_workdir() {
  mkdir -p "$1" || die "cannot create work directory $1"
  (cd "$1" && pwd -P)
}

# Percent-encodes everything but unreserved characters (RFC 3986).
urlencode() {
  local LC_ALL=C s="$1" out="" c i
  for ((i = 0; i < ${#s}; i++)); do
    c="${s:i:1}"
    case "$c" in
      [A-Za-z0-9._~-]) out+="$c" ;;
      *) out+="$(printf '%%%02X' "'$c")" ;;
    esac
  done
  printf '%s' "$out"
}

# Percent-encodes a path for a file:// URL, keeping the slashes.
urlencode_path() { urlencode "$1" | sed -e 's/%2F/\//g'; }

ldapi_url() { printf 'ldapi://%s' "$(urlencode "$1/ldapi")"; }

# --- installation ---------------------------------------------------------

have_tools() {
  command -v slapd >/dev/null 2>&1 && command -v slapadd >/dev/null 2>&1 &&
    command -v ldapsearch >/dev/null 2>&1 && command -v ldapadd >/dev/null 2>&1
}

install_tools() {
  have_tools && return 0
  local sudo="" log created_policy=0 rc=0
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "slapd/ldap-utils missing and not root (no sudo): install them first"
    sudo="sudo"
  fi
  command -v apt-get >/dev/null 2>&1 || die "slapd/ldap-utils missing and apt-get not found: install OpenLDAP server and client tools first"
  log="$(mktemp "${TMPDIR:-/tmp}/slapd-install.XXXXXX")"
  # Keep the package's postinst from starting a system-wide slapd; remove
  # the policy again only if we created it.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  echo "slapd slapd/no_configuration boolean true" | $sudo debconf-set-selections >>"$log" 2>&1 || true
  if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q slapd ldap-utils >>"$log" 2>&1; then
    { $sudo apt-get update -q >>"$log" 2>&1 &&
      $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q slapd ldap-utils >>"$log" 2>&1; } || rc=$?
  fi
  [ "$created_policy" -eq 1 ] && $sudo rm -f /usr/sbin/policy-rc.d
  if [ "$rc" -ne 0 ] || ! have_tools; then
    tail -n 30 "$log" >&2 || true
    die "installing slapd and ldap-utils failed (full log: $log)"
  fi
  rm -f "$log"
  # A system slapd started anyway (hosts with systemd) would not clash with
  # our port, but say so: it listens on 389 on all interfaces.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet slapd 2>/dev/null; then
    printf '%s: note: the system slapd service is running; disable it with: systemctl disable --now slapd\n' "$prog" >&2
  fi
}

# Directory holding back_mdb.so ("" if mdb is built in), and core.ldif.
module_dir() {
  local d
  for d in /usr/lib/ldap /usr/lib/openldap /usr/lib64/openldap /usr/libexec/openldap \
           /usr/local/libexec/openldap /usr/local/lib/openldap; do
    if [ -e "$d/back_mdb.so" ] || [ -e "$d/back_mdb.la" ]; then
      printf '%s' "$d"; return 0
    fi
  done
  printf ''
}

core_schema() {
  local f
  for f in /etc/ldap/schema/core.ldif /etc/openldap/schema/core.ldif /usr/local/etc/openldap/schema/core.ldif; do
    [ -r "$f" ] && { printf '%s' "$f"; return 0; }
  done
  die "core.ldif not found (looked in /etc/ldap/schema and /etc/openldap/schema)"
}

hash_password() {
  if command -v slappasswd >/dev/null 2>&1; then
    slappasswd -s "$1" 2>/dev/null && return 0
  fi
  printf '%s' "$1"
}

# --- process helpers ------------------------------------------------------

# True if PID is a live (non-zombie) slapd process.
is_slapd() {
  local pid="$1" state comm
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [ -r "/proc/$pid/stat" ]; then
    state="$(sed -e 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    [ "$state" != "Z" ] || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
    [ "$comm" = "slapd" ] || return 1
  fi
  return 0
}

# True if something accepts TCP connections on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

read_pid() {
  if [ -r "$1/slapd.pid" ]; then tr -dc '0-9' <"$1/slapd.pid"; fi
}

# --- commands -------------------------------------------------------------

cmd_start() {
  [ $# -eq 2 ] || usage
  local work port ldapi_path moddir core pw tls=0 urls pid deadline n
  port="$2"; check_port "$port"
  work="$(abs_workdir "$1")"
  ldapi_path="$work/ldapi"
  # sun_path holds 108 bytes including the terminating NUL.
  [ "${#ldapi_path}" -le 100 ] || die "work directory path too long for a unix socket: $ldapi_path"

  pid="$(read_pid "$work")"
  if [ -n "$pid" ] && is_slapd "$pid"; then
    die "slapd already running for $work (PID $pid); stop it first: $0 stop $work"
  fi
  rm -f "$work/slapd.pid"

  install_tools
  moddir="$(module_dir)"
  core="$(core_schema)"
  for n in dicom dcm4che dcm4chee-archive; do
    [ -r "$repo/schema/slapd/$n.ldif" ] || die "missing $repo/schema/slapd/$n.ldif"
  done
  if [ -r "$work/tls/server.crt" ] && [ -r "$work/tls/server.key" ]; then tls=1; fi
  # Refuse a busy port: the readiness probe could be answered by another server.
  port_busy "$port" && die "127.0.0.1:$port is already in use"
  if [ "$tls" -eq 1 ] && port_busy "$((port + 1))"; then
    die "127.0.0.1:$((port + 1)) (ldaps) is already in use"
  fi

  pw="$(hash_password "$PASSWORD")"
  local uid gid peer
  uid="$(id -u)"; gid="$(id -g)"
  peer="gidNumber=$gid+uidNumber=$uid,cn=peercred,cn=external,cn=auth"

  rm -rf "$work/slapd.d" "$ldapi_path"
  mkdir -p "$work/slapd.d" "$work/db"
  {
    printf 'dn: cn=config\nobjectClass: olcGlobal\ncn: config\nolcLogLevel: none\n'
    if [ "$tls" -eq 1 ]; then
      printf 'olcTLSCertificateFile: "%s"\n' "$work/tls/server.crt"
      printf 'olcTLSCertificateKeyFile: "%s"\n' "$work/tls/server.key"
      if [ -r "$work/tls/ca.crt" ]; then
        printf 'olcTLSCACertificateFile: "%s"\n' "$work/tls/ca.crt"
      fi
    fi
    printf '\n'
    if [ -n "$moddir" ]; then
      printf 'dn: cn=module{0},cn=config\nobjectClass: olcModuleList\ncn: module{0}\n'
      printf 'olcModulePath: %s\nolcModuleLoad: back_mdb\n\n' "$moddir"
    fi
    printf 'dn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n\n'
    printf 'include: file://%s\n\n' "$(urlencode_path "$core")"
    if [ "${SLAPD_CORE_ONLY:-0}" != "1" ]; then
      for n in dicom dcm4che dcm4chee-archive; do
        printf 'include: file://%s\n\n' "$(urlencode_path "$repo/schema/slapd/$n.ldif")"
      done
    fi
    printf 'dn: olcDatabase={-1}frontend,cn=config\nobjectClass: olcDatabaseConfig\n'
    printf 'objectClass: olcFrontendConfig\nolcDatabase: {-1}frontend\n'
    printf 'olcAccess: {0}to dn.base="" by * read\n'
    printf 'olcAccess: {1}to dn.base="cn=subschema" by * read\n\n'
    printf 'dn: olcDatabase={0}config,cn=config\nobjectClass: olcDatabaseConfig\n'
    printf 'olcDatabase: {0}config\nolcRootDN: %s\nolcRootPW: %s\n' "$CONFIG_ROOTDN" "$pw"
    printf 'olcAccess: {0}to * by dn.exact=%s manage by * none\n\n' "$peer"
    printf 'dn: olcDatabase={1}mdb,cn=config\nobjectClass: olcDatabaseConfig\n'
    printf 'objectClass: olcMdbConfig\nolcDatabase: {1}mdb\nolcSuffix: %s\n' "$SUFFIX"
    printf 'olcRootDN: %s\nolcRootPW: %s\nolcDbDirectory: "%s"\n' "$ROOTDN" "$pw" "$work/db"
    printf 'olcDbMaxSize: 1073741824\nolcDbIndex: objectClass eq\n'
    if [ "${SLAPD_CORE_ONLY:-0}" != "1" ]; then
      printf 'olcDbIndex: dicomDeviceName,dicomAETitle,dcmWebAppName eq\n'
    fi
    printf 'olcAccess: {0}to * by dn.exact=%s manage by * read\n' "$peer"
  } >"$work/config.ldif"

  if ! slapadd -n0 -F "$work/slapd.d" -l "$work/config.ldif" >"$work/slapadd.log" 2>&1; then
    cat "$work/slapadd.log" >&2
    die "slapadd -n0 of $work/config.ldif failed"
  fi

  urls="ldap://127.0.0.1:$port/ $(ldapi_url "$work")"
  [ "$tls" -eq 1 ] && urls+=" ldaps://127.0.0.1:$((port + 1))/"

  # stdin/stdout/stderr must not stay attached to the caller: a caller that
  # reads our stdout to EOF would otherwise wait for slapd to exit.
  slapd -F "$work/slapd.d" -h "$urls" -d "${SLAPD_DEBUG:-0}" \
    </dev/null >"$work/slapd.log" 2>&1 &
  pid=$!
  printf '%s\n' "$pid" >"$work/slapd.pid"

  deadline=$(( $(date +%s%N) / 1000000 + ${SLAPD_TIMEOUT:-10} * 1000 ))
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      rm -f "$work/slapd.pid"
      tail -n 20 "$work/slapd.log" >&2 || true
      die "slapd exited during start-up (port $port in use? see $work/slapd.log; rerun with SLAPD_DEBUG=-1 for details)"
    fi
    # Our own ldapi socket answering proves it is our slapd (it serves only
    # once every listener is bound); then the TCP port must answer too.
    if ldapsearch -x -H "$(ldapi_url "$work")" -s base -b '' namingContexts >/dev/null 2>&1 &&
       ldapsearch -x -H "ldap://127.0.0.1:$port" -s base -b '' namingContexts >/dev/null 2>&1; then
      break
    fi
    if [ "$(( $(date +%s%N) / 1000000 ))" -ge "$deadline" ]; then
      kill "$pid" 2>/dev/null || true
      rm -f "$work/slapd.pid"
      tail -n 20 "$work/slapd.log" >&2 || true
      die "slapd did not answer on ldap://127.0.0.1:$port within ${SLAPD_TIMEOUT:-10} s"
    fi
    sleep 0.05
  done
  printf '%s\n' "$pid"
}

cmd_stop() {
  [ $# -eq 1 ] || usage
  local work pid i
  [ -d "$1" ] || return 0
  work="$(cd "$1" && pwd -P)"
  pid="$(read_pid "$work")"
  if [ -z "$pid" ] || ! is_slapd "$pid"; then
    rm -f "$work/slapd.pid"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do   # 10 s
    is_slapd "$pid" || break
    sleep 0.05
  done
  if is_slapd "$pid"; then
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
      is_slapd "$pid" || break
      sleep 0.05
    done
    is_slapd "$pid" && die "slapd (PID $pid) did not exit"
    printf '%s: slapd (PID %s) ignored SIGTERM for 10 s and was killed\n' "$prog" "$pid" >&2
  fi
  rm -f "$work/slapd.pid" "$work/ldapi"
}

cmd_load() {
  if [ $# -lt 2 ] || [ $# -gt 3 ]; then usage; fi
  local port="$2" dir="${3:-$repo/ldif}" f out rc
  check_port "$port"
  [ -d "$dir" ] || die "LDIF directory not found: $dir"
  command -v ldapadd >/dev/null 2>&1 || die "ldapadd not found (run '$0 start' first, it installs ldap-utils)"
  local files=()
  while IFS= read -r f; do files+=("$f"); done < <(LC_ALL=C find "$dir" -maxdepth 1 -type f -name '*.ldif' | LC_ALL=C sort)
  [ "${#files[@]}" -gt 0 ] || die "no *.ldif files in $dir"
  for f in "${files[@]}"; do
    rc=0
    out="$(ldapadd -x -H "ldap://127.0.0.1:$port" -D "$ROOTDN" -w "$PASSWORD" -f "$f" 2>&1)" || rc=$?
    if [ "$rc" -ne 0 ]; then
      # ldapadd names each entry before adding it: the last one failed.
      printf '%s\n' "$out" | grep '^adding new entry' | tail -n 1 >&2 || true
      printf '%s\n' "$out" | grep -v '^adding new entry' | grep -v '^$' >&2 || true
      die "loading $f failed (ldapadd exit $rc); stopped there, entries added before it stay"
    fi
  done
}

cmd_ldapi_url() {
  [ $# -eq 1 ] || usage
  local work
  work="$(abs_workdir "$1")"
  ldapi_url "$work"; printf '\n'
}

[ $# -ge 1 ] || usage
cmd="$1"; shift
case "$cmd" in
  start) cmd_start "$@" ;;
  stop) cmd_stop "$@" ;;
  load) cmd_load "$@" ;;
  ldapi-url) cmd_ldapi_url "$@" ;;
  -h|--help|help) usage ;;
  *) usage ;;
esac
