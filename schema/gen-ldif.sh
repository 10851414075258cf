#!/usr/bin/env bash
# Generates the OpenLDAP cn=config form (schema/slapd/NAME.ldif) of each
# slapd.conf-format schema file (schema/NAME.schema). The .schema files are
# the source; the generated .ldif files are committed too.
#
# Usage: schema/gen-ldif.sh          regenerate schema/slapd/*.ldif
#        schema/gen-ldif.sh --check  exit 1 if a committed .ldif is stale
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
names=(dicom dcm4che dcm4chee-archive)

# Converts one .schema file to cn=config LDIF on stdout. A definition starts
# with "attributetype" or "objectclass" and ends when its parentheses balance
# (parentheses inside quoted DESC strings are not counted). Its first line
# becomes "olcAttributeTypes: (..." / "olcObjectClasses: (...", the following
# lines are LDIF continuation lines ("  " = fold marker + separator).
convert() {
  local name="$1" src="$2"
  printf '# Generated from schema/%s.schema by schema/gen-ldif.sh; do not edit.\n' "$name"
  printf '# OpenLDAP cn=config form: ldapadd -Y EXTERNAL -H ldapi:/// -f %s.ldif\n' "$name"
  printf '# or "include: file://.../%s.ldif" in a config LDIF loaded with slapadd -n0.\n' "$name"
  printf 'dn: cn=%s,cn=schema,cn=config\n' "$name"
  printf 'objectClass: olcSchemaConfig\n'
  printf 'cn: %s\n' "$name"
  LC_ALL=C awk -v src="$src" '
    function depth_of(s,   i, c, q, d) {
      q = 0; d = 0
      for (i = 1; i <= length(s); i++) {
        c = substr(s, i, 1)
        if (c == "\047") q = !q
        else if (!q && c == "(") d++
        else if (!q && c == ")") d--
      }
      return d
    }
    {
      line = $0
      sub(/[ \t\r]+$/, "", line)
      if (!inside) {
        if (line ~ /^[ \t]*(#|$)/) next
        if (match(line, /^(attributetype|attributetypes|objectclass|objectclasses)[ \t]+/)) {
          kw = tolower(substr(line, 1, RLENGTH))
          gsub(/[ \t]/, "", kw)
          rest = substr(line, RLENGTH + 1)
          attr = (kw ~ /^attribute/) ? "olcAttributeTypes" : "olcObjectClasses"
          print attr ": " rest
          depth = depth_of(rest)
          inside = (depth > 0)
          next
        }
        printf "%s:%d: unexpected line outside a definition: %s\n", src, NR, line > "/dev/stderr"
        bad = 1
        exit 1
      }
      if (line ~ /^[ \t]*#/) next
      sub(/^[ \t]+/, "", line)
      if (line == "") next
      print "  " line
      depth += depth_of(line)
      if (depth <= 0) inside = 0
    }
    END {
      if (inside && !bad) { printf "%s: unterminated definition at end of file\n", src > "/dev/stderr"; exit 1 }
    }
  ' "$src"
}

check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

mkdir -p "$here/slapd"
stale=0
for n in "${names[@]}"; do
  out="$here/slapd/$n.ldif"
  tmp="$(mktemp)"
  convert "$n" "$here/$n.schema" >"$tmp"
  if [ "$check" -eq 1 ]; then
    if ! cmp -s "$tmp" "$out"; then
      echo "stale: schema/slapd/$n.ldif (run schema/gen-ldif.sh)" >&2
      stale=1
    fi
    rm -f "$tmp"
  else
    mv "$tmp" "$out"
    chmod 644 "$out"
  fi
done
exit "$stale"
