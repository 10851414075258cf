#!/usr/bin/env bash
# Entrypoint of the compose stack's OpenLDAP (docker/openldap/Dockerfile).
#
# First start (no $LDAP_STATE_DIR/.initialized, i.e. an empty volume):
#   1. builds cn=config with slapadd -n0 in $LDAP_STATE_DIR/slapd.d: schema
#      core + $LDAP_SCHEMA_DIR/{dicom,dcm4che,dcm4chee-archive}.ldif (in that
#      order, each needs the ones before it), an mdb database for
#      dc=dcm4che,dc=org in $LDAP_STATE_DIR/data with rootdn
#      cn=admin,dc=dcm4che,dc=org and the admin password hashed (slappasswd);
#   2. starts slapd on the ldapi socket only (no TCP yet, so that no client
#      sees a half-imported directory) and applies every *.ldif of each
#      directory in $LDAP_LDIF_DIRS, directory by directory, files in name
#      order, with ldapmodify -a (content records are added, changetype
#      records applied as written) as the rootdn; stops at the first error;
#   3. stops that slapd and writes the .initialized marker.
#   A first start that failed half-way leaves no marker and is redone from
#   scratch at the next start.
# Every start then runs slapd in the foreground (PID 1), as user openldap,
# listening on $LDAP_URLS (default ldap:///) and the ldapi socket.
#
# The admin password is read on the first start only, from the file named
# by LDAP_ADMIN_PASSWORD_FILE (a compose secret) or from
# LDAP_ADMIN_PASSWORD; trailing CR/LF are stripped, as stow-exporter does
# with --ldap-password-file. Changing it later takes a new volume (or an
# ldapmodify of olcRootPW in cn=config over ldapi, see docker/README.md).
#
# Access: root DSE and subschema readable by anyone; the data readable by
# authenticated users (the rootdn is not subject to ACLs); cn=config and the
# data managed by root in the container over ldapi (SASL EXTERNAL), e.g.
#   ldapsearch -Q -Y EXTERNAL -H ldapi://%2Frun%2Fslapd%2Fldapi -b cn=config
#
# Environment (defaults are the container's paths; overridable so that the
# script can be tried outside a container):
#   LDAP_STATE_DIR  /var/lib/openldap            the volume
#   LDAP_SCHEMA_DIR /schema                      schema/slapd of the repo
#   LDAP_LDIF_DIRS  "/ldif /ldif-overrides"      ldif/ and docker/ldif/
#   LDAP_RUN_DIR    /run/slapd                   ldapi socket
#   LDAP_URLS       ldap:///                     TCP listeners
#   SLAPD_DEBUG     0                            slapd -d level (e.g. stats)
set -euo pipefail

STATE="${LDAP_STATE_DIR:-/var/lib/openldap}"
CONF="$STATE/slapd.d"
DB="$STATE/data"
MARKER="$STATE/.initialized"
SCHEMA_DIR="${LDAP_SCHEMA_DIR:-/schema}"
LDIF_DIRS="${LDAP_LDIF_DIRS:-/ldif /ldif-overrides}"
RUN_DIR="${LDAP_RUN_DIR:-/run/slapd}"
URLS="${LDAP_URLS:-ldap:///}"
DEBUG="${SLAPD_DEBUG:-0}"
SUFFIX="dc=dcm4che,dc=org"
ROOTDN="cn=admin,$SUFFIX"
MODULE_DIR=/usr/lib/ldap
CORE_SCHEMA=/etc/ldap/schema/core.ldif
export PATH="$PATH:/usr/sbin:/sbin"

log() { printf 'openldap-entrypoint: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ldapi URL of the socket (path percent-encoded: '/' -> %2F).
LDAPI="ldapi://$(printf '%s' "$RUN_DIR/ldapi" | sed -e 's,%,%25,g' -e 's,/,%2F,g' -e 's/,/%2C/g' -e 's/ /%20/g')"

# slapd drops to user openldap when started as root and the user exists
# (it does in the image: the slapd package creates it).
RUN_AS=()
OWNER=""
if [ "$(id -u)" -eq 0 ] && getent passwd openldap >/dev/null 2>&1; then
  RUN_AS=(-u openldap -g openldap)
  OWNER="openldap:openldap"
fi
# Who may manage cn=config and the data over ldapi: the user running this
# script (root in the container; also the user of `docker compose exec`).
PEER="gidNumber=$(id -g)+uidNumber=$(id -u),cn=peercred,cn=external,cn=auth"

prepare_dirs() {
  mkdir -p "$STATE" "$RUN_DIR"
  rm -f "$RUN_DIR/ldapi"
  if [ -n "$OWNER" ]; then
    chown "$OWNER" "$RUN_DIR"
    [ -d "$CONF" ] && chown -R "$OWNER" "$CONF"
    [ -d "$DB" ] && chown -R "$OWNER" "$DB"
  fi
  return 0
}

# The admin password, trailing CR/LF stripped (like stow-exporter's
# --ldap-password-file).
admin_password() {
  local pw
  if [ -n "${LDAP_ADMIN_PASSWORD_FILE:-}" ]; then
    [ -z "${LDAP_ADMIN_PASSWORD:-}" ] || die "set LDAP_ADMIN_PASSWORD or LDAP_ADMIN_PASSWORD_FILE, not both"
    [ -r "$LDAP_ADMIN_PASSWORD_FILE" ] || die "LDAP_ADMIN_PASSWORD_FILE: cannot read $LDAP_ADMIN_PASSWORD_FILE"
    pw="$(cat "$LDAP_ADMIN_PASSWORD_FILE"; printf x)"
    pw="${pw%x}"
  else
    pw="${LDAP_ADMIN_PASSWORD:-}"
  fi
  while [ -n "$pw" ] && { [ "${pw: -1}" = $'\n' ] || [ "${pw: -1}" = $'\r' ]; }; do
    pw="${pw%?}"
  done
  [ -n "$pw" ] || die "no admin password: set LDAP_ADMIN_PASSWORD_FILE (or LDAP_ADMIN_PASSWORD)"
  printf '%s' "$pw"
}

write_config_ldif() {
  local hash="$1" n
  printf 'dn: cn=config\nobjectClass: olcGlobal\ncn: config\nolcLogLevel: none\n\n'
  printf 'dn: cn=module{0},cn=config\nobjectClass: olcModuleList\ncn: module{0}\n'
  printf 'olcModulePath: %s\nolcModuleLoad: back_mdb\n\n' "$MODULE_DIR"
  printf 'dn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n\n'
  printf 'include: file://%s\n\n' "$CORE_SCHEMA"
  for n in dicom dcm4che dcm4chee-archive; do
    printf 'include: file://%s\n\n' "$SCHEMA_DIR/$n.ldif"
  done
  printf 'dn: olcDatabase={-1}frontend,cn=config\nobjectClass: olcDatabaseConfig\n'
  printf 'objectClass: olcFrontendConfig\nolcDatabase: {-1}frontend\n'
  printf 'olcAccess: {0}to dn.base="" by * read\n'
  printf 'olcAccess: {1}to dn.base="cn=subschema" by * read\n\n'
  printf 'dn: olcDatabase={0}config,cn=config\nobjectClass: olcDatabaseConfig\n'
  printf 'olcDatabase: {0}config\n'
  printf 'olcAccess: {0}to * by dn.exact=%s manage by * none\n\n' "$PEER"
  printf 'dn: olcDatabase={1}mdb,cn=config\nobjectClass: olcDatabaseConfig\n'
  printf 'objectClass: olcMdbConfig\nolcDatabase: {1}mdb\nolcSuffix: %s\n' "$SUFFIX"
  printf 'olcRootDN: %s\nolcRootPW: %s\nolcDbDirectory: %s\n' "$ROOTDN" "$hash" "$DB"
  printf 'olcDbMaxSize: 1073741824\nolcDbIndex: objectClass eq\n'
  printf 'olcDbIndex: dicomDeviceName,dicomAETitle,dcmWebAppName eq\n'
  printf 'olcAccess: {0}to attrs=userPassword by self write by anonymous auth by * none\n'
  printf 'olcAccess: {1}to * by dn.exact=%s manage by users read by * none\n' "$PEER"
}

INIT_PID=""
TMP=""
cleanup() {
  if [ -n "$INIT_PID" ] && kill -0 "$INIT_PID" 2>/dev/null; then
    kill -TERM "$INIT_PID" 2>/dev/null || true
    wait "$INIT_PID" 2>/dev/null || true
  fi
  [ -z "$TMP" ] || rm -rf "$TMP"
}

initialize() {
  local pw hash dir f i n=0 files rc out
  trap cleanup EXIT
  if [ -e "$CONF" ] || [ -e "$DB" ]; then
    log "an earlier first start did not finish; starting over"
  fi
  rm -rf "$CONF" "$DB" "$MARKER"
  mkdir -p "$CONF" "$DB"

  for f in "$CORE_SCHEMA" "$SCHEMA_DIR/dicom.ldif" "$SCHEMA_DIR/dcm4che.ldif" "$SCHEMA_DIR/dcm4chee-archive.ldif"; do
    [ -r "$f" ] || die "missing schema file $f (mount the repo's schema/slapd at $SCHEMA_DIR)"
  done
  for dir in $LDIF_DIRS; do
    [ -d "$dir" ] || die "LDIF directory $dir not found (see LDAP_LDIF_DIRS)"
  done

  TMP="$(mktemp -d)"
  pw="$(admin_password)"
  # slappasswd -T hashes the file's exact bytes; ldapmodify -y sends them.
  printf '%s' "$pw" >"$TMP/pw"
  chmod 600 "$TMP/pw"
  hash="$(slappasswd -T "$TMP/pw")" || die "slappasswd failed"
  write_config_ldif "$hash" >"$TMP/config.ldif"

  log "first start: creating cn=config in $CONF (schema core, dicom, dcm4che, dcm4chee-archive)"
  slapadd -n0 -F "$CONF" -l "$TMP/config.ldif" || die "slapadd -n0 failed"
  [ -z "$OWNER" ] || chown -R "$OWNER" "$CONF" "$DB"

  # ldapi only: TCP clients (stow-exporter) must not see a partial directory.
  slapd "${RUN_AS[@]}" -F "$CONF" -h "$LDAPI" -d 0 &
  INIT_PID=$!
  for ((i = 0; i < 300; i++)); do
    kill -0 "$INIT_PID" 2>/dev/null || die "slapd exited during initialisation"
    ldapsearch -Q -LLL -Y EXTERNAL -H "$LDAPI" -s base -b "" namingContexts >/dev/null 2>&1 && break
    sleep 0.1
  done
  ldapsearch -Q -LLL -Y EXTERNAL -H "$LDAPI" -s base -b "" namingContexts >/dev/null 2>&1 ||
    die "slapd did not answer on $LDAPI within 30 s"

  for dir in $LDIF_DIRS; do
    files="$(LC_ALL=C find "$dir" -maxdepth 1 -type f -name '*.ldif' | LC_ALL=C sort)"
    while IFS= read -r f; do
      [ -n "$f" ] || continue
      log "applying $f"
      rc=0
      out="$(ldapmodify -a -x -H "$LDAPI" -D "$ROOTDN" -y "$TMP/pw" -f "$f" 2>&1)" || rc=$?
      printf '%s\n' "$out" | grep -v '^$' >&2 || true
      [ "$rc" -eq 0 ] || die "applying $f failed (ldapmodify exit $rc); the next start begins again from scratch"
      n=$((n + 1))
    done <<<"$files"
  done
  [ "$n" -gt 0 ] || die "no *.ldif files in $LDIF_DIRS"

  kill -TERM "$INIT_PID"
  wait "$INIT_PID" || true
  INIT_PID=""
  rm -rf "$TMP"
  TMP=""
  trap - EXIT
  touch "$MARKER"
  log "first start: $n LDIF files applied; directory initialised"
}

prepare_dirs
if [ ! -e "$MARKER" ]; then
  initialize
  prepare_dirs
fi

log "starting slapd on $URLS $LDAPI"
exec slapd "${RUN_AS[@]}" -F "$CONF" -h "$URLS $LDAPI" -d "$DEBUG"
