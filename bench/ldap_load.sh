#!/usr/bin/env bash
# Configuration load benchmark: how long `stow-exporter check-config` takes
# to load, validate and print a configuration with COUNT extra exporters
# from an LDAP directory (a private OpenLDAP slapd on loopback, started with
# scripts/slapd.sh) and from the same configuration as a folder of LDIF
# files. OpenLDAP's own client fetching the exporter entries (ldapsearch) is
# the reference: the raw cost of getting the entries over LDAP.
#
# Usage: bench/ldap_load.sh [COUNT=1000] [REPS=5]
#
#   1. cargo build --release --bin stow-exporter
#   2. starts slapd (scripts/slapd.sh start) in a mktemp -d work dir, imports
#      the shipped ldif/ (scripts/slapd.sh load), then a generated LDIF file
#      of COUNT dcmExporter entries (Exp0001 ...) under the dcm4chee-arc
#      device with one ldapadd, timed (informational);
#   3. one untimed warm-up of each command, then REPS rounds, interleaved
#      (order reversed every other round), each timing:
#        - check-config --config ldap://127.0.0.1:PORT --ldap-bind-dn
#          cn=admin,dc=dcm4che,dc=org (password from LDAP_BIND_PASSWORD):
#          the whole load, i.e. process start, connect, bind, paged search,
#          validation and printing;
#        - check-config --config DIR, DIR = a copy of ldif/ plus the
#          generated file: the same configuration read from LDIF files;
#        - ldapsearch -x -H ldap://127.0.0.1:PORT -D cn=admin,... -b
#          'cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org'
#          '(objectClass=dcmExporter)' > /dev/null (reference; bound as the
#          admin like check-config: anonymous searches hit slapd's default
#          size limit of 500 entries);
#      every check-config run must exit 0 and list COUNT+2 exporters (the
#      shipped StowExporter and STOWRSD plus the generated ones); every
#      ldapsearch run must exit 0 (an untimed run checks it returns COUNT+2
#      entries).
#   4. prints a Markdown table (median, min and max wall ms, exporters
#      loaded) and PASS/FAIL for the target "1,000 exporters load in under
#      a second" (median of the LDAP load < 1000 ms).
#
# Progress and per-run times go to stderr; the table and the verdict to
# stdout. Exit status: 0 when every run succeeded (whatever the verdict),
# 1 on any error (build, slapd, a failed or incomplete run).
#
# Loopback only. slapd is stopped by its PID on exit (scripts/slapd.sh stop,
# then kill PID if it is still there); the work dir is removed unless
# BENCH_KEEP=1. Environment: BENCH_TMPDIR (parent of the work dir, default
# /tmp), BENCH_PORT (slapd's port; default: a free random one),
# BENCH_KEEP=1, CARGO_TARGET_DIR (as cargo).
set -Eeuo pipefail
export LC_ALL=C

COUNT=${1:-1000}
REPS=${2:-5}
TARGET_MS=1000
TARGET_COUNT=1000

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SLAPD_SH="$ROOT/scripts/slapd.sh"
SUFFIX="dc=dcm4che,dc=org"
ADMIN_DN="cn=admin,$SUFFIX"
ADMIN_PW="secret"
DEVICES_DN="cn=Devices,cn=DICOM Configuration,$SUFFIX"
DEVICE_DN="dicomDeviceName=dcm4chee-arc,$DEVICES_DN"

die() {
    echo "error: $*" >&2
    exit 1
}
say() { echo "== $*" >&2; }

usage="usage: $0 [COUNT=1000] [REPS=5]"
case ${1:-} in -h | --help)
    echo "$usage"
    exit 0
    ;;
esac
[[ $# -le 2 ]] || die "$usage"
[[ $COUNT =~ ^[1-9][0-9]*$ ]] || die "COUNT must be a positive integer (got '$COUNT'); $usage"
[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive integer (got '$REPS'); $usage"
EXPECTED=$((COUNT + 2))

for tool in cargo awk sort cp mktemp; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
[[ -x $SLAPD_SH ]] || die "$SLAPD_SH not found or not executable"
[[ -d $ROOT/ldif ]] || die "$ROOT/ldif not found"

# Wall-clock microseconds without forking (bash >= 5).
[[ -n ${EPOCHREALTIME:-} ]] || die "bash >= 5 is required (EPOCHREALTIME)"
now_us() { local t=${EPOCHREALTIME/[.,]/}; echo "$((10#$t))"; }

# ---------------------------------------------------------------- cleanup
WORK=""
SLAPD_PID=""
BUILD_PID=""

is_running() { [[ -n $1 ]] && kill -0 "$1" 2>/dev/null; }

stop_slapd() {
    [[ -n $WORK && -d $WORK/slapd ]] || return 0
    "$SLAPD_SH" stop "$WORK/slapd" || true
    # Fallback: the PID start printed, if slapd.sh could not stop it.
    if is_running "$SLAPD_PID" && [[ $(cat "/proc/$SLAPD_PID/comm" 2>/dev/null) == slapd ]]; then
        kill "$SLAPD_PID" 2>/dev/null || true
        local i
        for ((i = 0; i < 100; i++)); do
            is_running "$SLAPD_PID" || break
            sleep 0.05
        done
        if is_running "$SLAPD_PID"; then kill -KILL "$SLAPD_PID" 2>/dev/null || true; fi
    fi
    SLAPD_PID=""
}

# PIDs of the descendants of PID (children first, then theirs).
descendants() {
    local c list
    if [[ -r /proc/$1/task/$1/children ]]; then
        list=$(cat /proc/"$1"/task/*/children 2>/dev/null) || true
    else
        list=$(ps -o pid= --ppid "$1" 2>/dev/null) || true
    fi
    # shellcheck disable=SC2086 # space-separated PIDs
    for c in $list; do
        echo "$c"
        descendants "$c"
    done
}

# Stops an interrupted build: cargo does not pass SIGTERM on to the rustc
# processes it runs, so freeze it, then terminate it and its descendants.
stop_build() {
    is_running "$BUILD_PID" || return 0
    local pids p
    kill -STOP "$BUILD_PID" 2>/dev/null || true
    pids=$(descendants "$BUILD_PID")
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    kill "$BUILD_PID" 2>/dev/null || true
    kill -CONT "$BUILD_PID" 2>/dev/null || true
    wait "$BUILD_PID" 2>/dev/null || true
    BUILD_PID=""
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM ERR
    stop_build
    stop_slapd
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ ${BENCH_KEEP:-0} == 1 ]]; then
            echo "kept the work dir $WORK (BENCH_KEEP=1)" >&2
        else
            rm -rf -- "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'echo "error: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

# ------------------------------------------------------------------ build
say "building the release binary (cargo build --release --bin stow-exporter)"
# In the background, so that a signal interrupts the wait at once (cleanup
# then stops the build by its PID) instead of waiting for the build to end.
(cd "$ROOT" && exec cargo build --release --bin stow-exporter) >&2 &
BUILD_PID=$!
rc=0
wait "$BUILD_PID" || rc=$?
BUILD_PID=""
[[ $rc -eq 0 ]] || die "cargo build failed (exit $rc)"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
BIN="$TARGET_DIR/release/stow-exporter"
[[ -x $BIN ]] || die "$BIN not found after the build"

# -------------------------------------------------------------- work dir
WORK=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/ldap-load.XXXXXX")
mkdir -p "$WORK/slapd" "$WORK/gen" "$WORK/ldif" "$WORK/out"

# The generated exporters: Exp0001 ... (zero-padded to at least 4 digits).
GEN="$WORK/gen/80-bench-exporters.ldif"
WIDTH=${#COUNT}
((WIDTH >= 4)) || WIDTH=4
awk -v n="$COUNT" -v w="$WIDTH" -v dev="$DEVICE_DN" 'BEGIN {
    print "# " n " generated STOW-RS exporters (bench/ldap_load.sh)."
    print "version: 1"
    for (i = 1; i <= n; i++) {
        id = sprintf("Exp%0" w "d", i)
        printf "\ndn: dcmExporterID=%s,%s\n", id, dev
        print "objectClass: dcmExporter"
        print "dcmExporterID: " id
        print "dcmURI: stow:stowrsd"
        print "dcmQueueName: Export"
        print "dicomAETitle: DCM4CHEE1"
        printf "dicomDescription: Benchmark exporter %d of %d\n", i, n
    }
}' >"$GEN"
cp "$ROOT"/ldif/*.ldif "$WORK/ldif/"
cp "$GEN" "$WORK/ldif/"
LDIF_DIR="$WORK/ldif"

# ----------------------------------------------------------------- slapd
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_slapd() {
    local port=$1 err="$WORK/slapd-start.err"
    if SLAPD_PID=$("$SLAPD_SH" start "$WORK/slapd" "$port" 2>"$err"); then
        [[ $SLAPD_PID =~ ^[0-9]+$ ]] || die "scripts/slapd.sh start printed '$SLAPD_PID', not a PID"
        PORT=$port
        return 0
    fi
    SLAPD_PID=""
    return 1
}

PORT=""
if [[ -n ${BENCH_PORT:-} ]]; then
    start_slapd "$BENCH_PORT" || {
        cat "$WORK/slapd-start.err" >&2
        die "cannot start slapd on 127.0.0.1:$BENCH_PORT"
    }
else
    for _ in 1 2 3 4 5; do
        p=$((20000 + RANDOM % 40000))
        if port_busy "$p" || port_busy "$((p + 1))"; then continue; fi
        start_slapd "$p" && break
    done
    [[ -n $PORT ]] || {
        cat "$WORK/slapd-start.err" >&2 2>/dev/null || true
        die "cannot start slapd (5 ports tried)"
    }
fi
URL="ldap://127.0.0.1:$PORT"
say "slapd PID $SLAPD_PID on $URL ($(slapd -VV 2>&1 | sed -n 's/.*\(slapd [^ ]*\).*/\1/p' | head -n1))"

say "importing the shipped ldif/"
"$SLAPD_SH" load "$WORK/slapd" "$PORT" "$ROOT/ldif" || die "importing ldif/ failed"

say "importing $COUNT generated exporters with one ldapadd"
t0=$(now_us)
ldapadd -x -H "$URL" -D "$ADMIN_DN" -w "$ADMIN_PW" -f "$GEN" >"$WORK/out/ldapadd.out" 2>&1 ||
    {
        tail -n 20 "$WORK/out/ldapadd.out" >&2
        die "ldapadd of $GEN failed"
    }
t1=$(now_us)
ADD_MS=$(awk -v d=$((t1 - t0)) 'BEGIN {printf "%.0f", d / 1000}')
ADD_RATE=$(awk -v n="$COUNT" -v d=$((t1 - t0)) 'BEGIN {printf "%.0f", n / (d / 1e6)}')
say "ldapadd: $COUNT entries in $ADD_MS ms ($ADD_RATE entries/s)"

# ------------------------------------------------------------ the runs
ref_search() {
    ldapsearch -x -H "$URL" -D "$ADMIN_DN" -w "$ADMIN_PW" -b "$DEVICES_DN" '(objectClass=dcmExporter)'
}

# The reference must see every exporter (untimed).
n=$(ref_search | grep -c '^dn: ') || true
[[ $n == "$EXPECTED" ]] || die "ldapsearch returned $n dcmExporter entries, expected $EXPECTED"

# Number of exporters a check-config output lists; "" when it is not a
# valid-configuration listing.
count_exporters() {
    awk 'NR == 1 { if ($0 !~ /^configuration .* is valid: device /) exit 1; next }
         NR == 2 { if ($1 != "EXPORTER") exit 1; next }
         /^warning: / { next }
         { n++ }
         END { print n + 0 }' "$1"
}

declare -A TIMES LOADED
label() {
    case $1 in
        ldap) echo "stow-exporter check-config, LDAP" ;;
        ldif) echo "stow-exporter check-config, LDIF folder" ;;
        ref) echo "ldapsearch (reference: fetch the exporter entries)" ;;
    esac
}

# run KIND ROUND: runs one measured command; appends its wall ms to TIMES[KIND].
run() {
    local kind=$1 round=$2 out="$WORK/out/$1.out" err="$WORK/out/$1.err" rc=0 t0 t1 ms n
    case $kind in
        ldap)
            t0=$(now_us)
            LDAP_BIND_PASSWORD="$ADMIN_PW" "$BIN" check-config --config "$URL" \
                --ldap-bind-dn "$ADMIN_DN" >"$out" 2>"$err" || rc=$?
            t1=$(now_us)
            ;;
        ldif)
            t0=$(now_us)
            "$BIN" check-config --config "$LDIF_DIR" >"$out" 2>"$err" || rc=$?
            t1=$(now_us)
            ;;
        ref)
            t0=$(now_us)
            ref_search >/dev/null 2>"$err" || rc=$?
            t1=$(now_us)
            ;;
    esac
    if [[ $rc -ne 0 ]]; then
        if [[ -s $out ]]; then tail -n 20 "$out" >&2; fi
        tail -n 20 "$err" >&2
        die "$kind run (round $round) exited $rc"
    fi
    if [[ $kind == ref ]]; then
        n=$EXPECTED
    else
        n=$(count_exporters "$out") || {
            head -n 5 "$out" >&2
            die "$kind run (round $round): unexpected check-config output"
        }
        [[ $n == "$EXPECTED" ]] || die "$kind run (round $round) listed $n exporters, expected $EXPECTED"
        # Every generated exporter by name, not just the total.
        n=$(grep -c '^Exp[0-9]* ' "$out") || true
        [[ $n == "$COUNT" ]] || die "$kind run (round $round) listed $n generated exporters, expected $COUNT"
        n=$EXPECTED
    fi
    ms=$(awk -v d=$((t1 - t0)) 'BEGIN {printf "%.1f", d / 1000}')
    if [[ $round -gt 0 ]]; then
        TIMES[$kind]+="$ms "
        LOADED[$kind]=$n
    fi
    printf '   %-5s round %d: %8s ms\n' "$kind" "$round" "$ms" >&2
}

say "warm-up (untimed): each command once"
run ldap 0
run ldif 0
run ref 0

say "$REPS rounds, interleaved ($COUNT + 2 = $EXPECTED exporters)"
for ((r = 1; r <= REPS; r++)); do
    if ((r % 2)); then
        order=(ldap ldif ref)
    else
        order=(ref ldif ldap)
    fi
    for k in "${order[@]}"; do
        run "$k" "$r"
    done
done

# "median min max" of a list of numbers.
stats() {
    tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk '
        { v[NR] = $1 }
        END {
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%.1f %.1f %.1f\n", m, v[1], v[NR]
        }'
}

# ---------------------------------------------------------------- report
echo
echo "COUNT = $COUNT generated exporters ($EXPECTED in all), REPS = $REPS, $(nproc) vCPU, $(date -u +%Y-%m-%d)"
echo "ldapadd of the $COUNT generated entries: $ADD_MS ms ($ADD_RATE entries/s, informational)"
echo
echo "| source | median wall ms | min | max | exporters loaded |"
echo "|---|---:|---:|---:|---:|"
for k in ldap ldif ref; do
    read -r med min max <<<"$(stats "${TIMES[$k]}")"
    echo "| $(label "$k") | $med | $min | $max | ${LOADED[$k]} |"
    if [[ $k == ldap ]]; then LDAP_MED=$med; fi
done
echo
note=""
[[ $COUNT == "$TARGET_COUNT" ]] || note=" (the target is stated for $TARGET_COUNT exporters; this run loaded $COUNT)"
if awk -v m="$LDAP_MED" -v t="$TARGET_MS" 'BEGIN {exit !(m < t)}'; then
    verdict=PASS
else
    verdict=FAIL
fi
echo "target \"1,000 exporters load in under a second\" (LDAP median $LDAP_MED ms < $TARGET_MS ms): $verdict$note"
