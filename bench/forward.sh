#!/usr/bin/env bash
# Receiving by DICOM C-STORE and forwarding by dcmExportRule (issue 15), in
# one run, on the same objects (the SMALL and LARGE synthetic sets of
# bench/orthanc_stow.sh: one study of SMALL 140x140x16-bit CT instances,
# ~40 KB each, and one of LARGE 1600x1600x16-bit ones, ~5.1 MB each), each
# sent by one dcmtk `storescu` process over one association:
#   store     storescu -> stow-exporter serve's Storage SCP, no export rule
#   storescp  storescu -> dcmtk storescp +B -od DIR (the reference limit)
#   orthanc   storescu -> Orthanc's DICOM server (for comparison)
#   export    the stored study exported alone through the REST API
#             (POST .../rs/studies/{study}/export/STOWRSD) to the receiver,
#             trigger -> the task's processingEndTime
#   forward   storescu -> serve with a dcmExportRule (dcmEntity Study,
#             dcmDuration PT0S, exporter STOWRSD): storescu's start -> the
#             receiver holding every instance, and the latency from
#             storescu's end (the last C-STORE answered) to that moment
# The destination of export and forward is `stow-exporter stowrsd --dir`
# (stores every instance durably: fsync, link, directory fsync).
#
# Usage: bench/forward.sh [SMALL=2000] [LARGE=200] [REPS=3]
#
#   SMALL  instances of the small set (0 skips the set)
#   LARGE  instances of the large set (0 skips the set)
#   REPS   repetitions of each measurement (medians are reported; the order
#          of the five measurements rotates from one repetition to the next
#          and is reversed every other one)
#
# See bench/README.md ("forward.sh"). Needs cargo, dcmtk (storescu,
# storescp, echoscu), Orthanc (scripts/orthanc.sh install installs it), a C
# compiler (a small LD_PRELOAD library makes storescp and Orthanc, which
# bind every interface, listen on 127.0.0.1 only), curl and python3.
# Everything runs on 127.0.0.1; every process the script starts is stopped
# by its PID at exit (trap); the work dir (mktemp -d) is removed.
# Every receiving server gets the same maximum PDU (131072 bytes, serve's)
# and its storage in the work dir, on the same file system. dcmtk (3.6.7 as
# Debian builds it) leaves Nagle's algorithm on unless the environment has
# TCP_NODELAY=1: storescu, storescp and Orthanc (linked with the same dcmtk)
# then wait for delayed ACKs, ~45 ms per small object on each side, so the
# script sets TCP_NODELAY=1 for all three (serve sets TCP_NODELAY itself).
# Environment: BENCH_TMPDIR (parent of the work dir, default /tmp; needs
# about 4 x the bytes of both sets), BENCH_KEEP=1 (keep the work dir with
# its logs), BENCH_NO_BUILD=1 (use the release binaries as they are),
# BENCH_QUIET_MAX and BENCH_QUIET_BUDGET (seconds to wait before each run,
# and in all, for other work on the machine to settle; default 5 and 60),
# BENCH_DRAIN (seconds a forward run waits, once the receiver holds every
# instance, for the rule's remaining tasks to end before serve is stopped;
# default 30), CARGO_TARGET_DIR (as cargo), RUST_LOG (log level of serve,
# default info).
set -Eeuo pipefail

SMALL_N=${1:-2000}
LARGE_N=${2:-200}
REPS=${3:-3}
DRAIN=${BENCH_DRAIN:-30}
SMALL_SIDE=140  # 140*140*2 B of pixels + ~1 KB header = ~40 KB
LARGE_SIDE=1600 # 1600*1600*2 B + ~1 KB = ~5.1 MB
CONCURRENCY=4   # dcmProperty concurrency of the stowrsd web app, as bench/export_throughput.sh
MAX_PDU=131072  # serve's Storage SCP; storescp and Orthanc get the same
AET=DCM4CHEE1
CALLING=STORESCU
EXPORTER=STOWRSD
RULE=bench-forward
DEVICE='dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org'
STOWRSD_WEBAPP_DN='dcmWebAppName=stowrsd,dicomDeviceName=stowrsd,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org'
ORTHANC=/usr/sbin/Orthanc

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
T_START=$EPOCHREALTIME
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

on_exit() {
    local rc=$?
    trap - EXIT INT TERM ERR
    echo "wall time of the script: $(awk -v a="$EPOCHREALTIME" -v b="$T_START" 'BEGIN {printf "%.0f", a - b}') s" >&2
    set +e
    (exit "$rc")
    cleanup
}
trap on_exit EXIT

usage="usage: $0 [SMALL=2000] [LARGE=200] [REPS=3]"
[[ $SMALL_N =~ ^[0-9]+$ ]] || die "SMALL must be a non-negative integer (got '$SMALL_N'); $usage"
[[ $LARGE_N =~ ^[0-9]+$ ]] || die "LARGE must be a non-negative integer (got '$LARGE_N'); $usage"
[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive integer (got '$REPS'); $usage"
[[ $DRAIN =~ ^[0-9]+$ ]] || die "BENCH_DRAIN must be a non-negative integer (got '$DRAIN')"
((SMALL_N + LARGE_N > 0)) || die "SMALL and LARGE are both 0; $usage"
for tool in cargo curl python3 awk find stat storescu storescp echoscu cc; do
    command -v "$tool" >/dev/null || die "$tool is required (dcmtk: apt-get install dcmtk)"
done
if ! [[ -x $ORTHANC ]]; then
    "$ROOT/scripts/orthanc.sh" install || die "Orthanc is required (scripts/orthanc.sh install)"
fi
export LC_ALL=C
UPTIME_START=$(uptime)

CLK_TCK=$(getconf CLK_TCK)
# user+system CPU ticks of a process (all its threads, exited ones too).
cpu_ticks() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || die "process $1 is no longer running"
    stat=${stat##*) }
    awk '{print $12 + $13}' <<<"$stat"
}
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
# busy ticks of the whole machine (user+nice+system+irq+softirq+steal), all ticks.
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit}' /proc/stat; }
busy_of() { awk '{print $1}' <<<"$1"; }
ticks_to_s() { awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", t / hz}'; }
# Waits until the machine is nearly idle (< 25 % busy over 0.5 s): other
# engineers' builds and tests share these cores. At most BENCH_QUIET_MAX s
# per run (default 5) and BENCH_QUIET_BUDGET s in all (default 60).
BUSY_STARTS=0
QUIET_LEFT=$((${BENCH_QUIET_BUDGET:-60} * 2)) # half-seconds of waiting left
quiet() {
    local m0 m1 b0 a0 b1 a1 pct waited=0 max=$((${BENCH_QUIET_MAX:-5} * 2))
    ((max <= QUIET_LEFT)) || max=$QUIET_LEFT
    while :; do
        m0=$(machine_ticks)
        sleep 0.5
        m1=$(machine_ticks)
        read -r b0 a0 <<<"$m0"
        read -r b1 a1 <<<"$m1"
        pct=$(((b1 - b0) * 100 / (a1 - a0 > 0 ? a1 - a0 : 1)))
        ((pct < 25)) && return 0
        QUIET_LEFT=$((QUIET_LEFT > 0 ? QUIET_LEFT - 1 : 0))
        if ((++waited >= max)); then
            BUSY_STARTS=$((BUSY_STARTS + 1))
            ((max > 1)) && say "the machine is still ${pct} % busy with other work after $((waited / 2)) s; starting anyway"
            return 0
        fi
    done
}
dcm_count() { { find "$1" -type f -name '*.dcm' 2>/dev/null || true; } | wc -l; }

# ------------------------------------------------------------------ build
if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    say "building release binaries (cargo skips this when up to date)"
    (cd "$ROOT" && cargo build --release --bin stow-exporter --example synth) ||
        die "cargo build --release failed"
fi
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET == /* ]] || TARGET=$ROOT/$TARGET
BIN=$TARGET/release/stow-exporter
SYNTH=$TARGET/release/examples/synth
[[ -x $BIN && -x $SYNTH ]] || die "release binaries not found ($BIN, $SYNTH)"
"$BIN" serve --help | grep -q -- '--dicom-listen' || die "$BIN has no serve --dicom-listen (rebuild it)"

WORK=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/stow-forward-bench.XXXXXX") ||
    die "cannot create a work dir under ${BENCH_TMPDIR:-/tmp}"
LOGS=$WORK/logs
mkdir -p "$LOGS"
export RUST_LOG=${RUST_LOG:-info}
export NO_COLOR=1

# Sources, the kept export source, one run's copy at the SCP and one at
# the receiver: about 4 x each set.
need_kb=$(awk -v s="$SMALL_N" -v l="$LARGE_N" -v a="$SMALL_SIDE" -v b="$LARGE_SIDE" \
    'BEGIN {printf "%d", 4.2 * (s * (2 * a * a + 1200) + l * (2 * b * b + 1200)) / 1024}')
avail_kb=$(df -Pk "$WORK" | awk 'NR == 2 {print $4}')
((avail_kb > need_kb)) ||
    die "$WORK: $((avail_kb / 1024)) MiB free, about $((need_kb / 1024)) MiB needed (set BENCH_TMPDIR)"
say "work dir $WORK ($(stat -f -c %T "$WORK"); about $((need_kb / 1024)) MiB needed, $((avail_kb / 1024)) MiB free)"

# bind() of a wildcard address binds loopback instead: storescp and Orthanc
# 1.10 have no bind-address option (scripts/orthanc.sh builds the shim).
SHIM=$("$ROOT/scripts/orthanc.sh" shim) || die "cannot build the loopback bind shim"
# Fails when PORT listens on anything but 127.0.0.1.
loopback_only() { # port what
    local addrs
    addrs=$(ss -ltnH "sport = :$1" 2>/dev/null | awk '{print $4}' | sort -u | tr '\n' ' ')
    [[ -z $addrs || $addrs == "127.0.0.1:$1 " ]] || die "$2 listens on $addrs, not on loopback only"
}

# ------------------------------------------------------------ test data
declare -A N BYTES STUDY SIDE=([small]=$SMALL_SIDE [large]=$LARGE_SIDE)
SETS=()
((SMALL_N > 0)) && SETS+=(small) && N[small]=$SMALL_N
((LARGE_N > 0)) && SETS+=(large) && N[large]=$LARGE_N
for set in "${SETS[@]}"; do
    t0=$EPOCHREALTIME
    STUDY[$set]=$("$SYNTH" --out "$WORK/src-$set" --count "${N[$set]}" --rows "${SIDE[$set]}" --columns "${SIDE[$set]}") ||
        die "synth failed for set $set"
    [[ -n ${STUDY[$set]} ]] || die "synth printed no study UID"
    [[ $(dcm_count "$WORK/src-$set") == "${N[$set]}" ]] || die "synth wrote no ${N[$set]} files for set $set"
    BYTES[$set]=$(find "$WORK/src-$set" -type f -name '*.dcm' -printf '%s\n' | awk '{s += $1} END {printf "%d", s}')
    say "set $set: ${N[$set]} instances of ${SIDE[$set]}x${SIDE[$set]}x16 bits, ${BYTES[$set]} bytes, study ${STUDY[$set]}, generated in $(sub "$EPOCHREALTIME" "$t0") s"
done
say "sync (writing back the generated data)"
sync

# -------------------------------------------------------------- receiver
# One storing receiver for the whole run; its folder is emptied before
# every export and forward run.
RPORT=$(free_port)
RDIR=$WORK/received
start_bg "$LOGS/stowrsd.log" "$BIN" stowrsd --bind "127.0.0.1:$RPORT" --dir "$RDIR"
RPID=$BG_PID
for _ in $(seq 1 100); do
    kill -0 "$RPID" 2>/dev/null || { log_tail "$LOGS/stowrsd.log"; die "stowrsd exited at start"; }
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$RPORT/" || true)
    [[ $code != 000 ]] && break
    sleep 0.1
done
[[ $code != 000 ]] || { log_tail "$LOGS/stowrsd.log"; die "stowrsd does not answer on 127.0.0.1:$RPORT"; }
say "receiver stowrsd --dir (pid $RPID) on 127.0.0.1:$RPORT"
clear_receiver() {
    mkdir -p "$RDIR"
    find "$RDIR" -mindepth 1 -delete
}

# ---------------------------------------------------------------- config
# cfg-store: the shipped ldif/ with the HTTP connections on the receiver's
# port and concurrency=4 on the stowrsd web app; cfg-forward: the same plus
# the export rule.
make_config() { # dir with-rule
    local dir=$1 f out
    mkdir -p "$dir"
    for f in "$ROOT"/ldif/*.ldif; do
        sed "s/^dicomPort: 18080\$/dicomPort: $RPORT/" "$f" >"$dir/$(basename "$f")"
    done
    {
        printf 'version: 1\n\ndn: %s\nchangetype: modify\nadd: dcmProperty\ndcmProperty: concurrency=%d\n-\n\n' \
            "$STOWRSD_WEBAPP_DN" "$CONCURRENCY"
        if [[ $2 == 1 ]]; then
            printf 'dn: cn=%s,%s\nchangetype: add\nobjectClass: dcmExportRule\ncn: %s\ndcmEntity: Study\ndcmDuration: PT0S\ndcmExporterID: %s\n\n' \
                "$RULE" "$DEVICE" "$RULE" "$EXPORTER"
        fi
    } >"$dir/99-bench.ldif"
    out=$("$BIN" check-config --config "$dir" 2>&1) || { echo "$out" >&2; die "configuration $dir is invalid"; }
    echo "$out" >"$dir.check.txt"
    grep -qE "^$EXPORTER .*127\.0\.0\.1:$RPORT/stowrs/studies.*\"concurrency\":$CONCURRENCY[,}]" <<<"$out" ||
        { echo "$out" >&2; die "exporter $EXPORTER is not configured as expected in $dir"; }
    if [[ $2 == 1 ]]; then
        grep -q "$RULE" <<<"$out" || { echo "$out" >&2; die "check-config does not list the rule $RULE"; }
    fi
}
make_config "$WORK/cfg-store" 0
make_config "$WORK/cfg-forward" 1
ORTHANC_VERSION=$(dpkg-query -W -f '${Version}' orthanc 2>/dev/null || "$ORTHANC" --version 2>/dev/null | head -n1 || echo "?")
DCMTK_VERSION=$(storescu --version 2>/dev/null || true)
[[ $DCMTK_VERSION =~ storescu\ v([0-9.]+) ]] && DCMTK_VERSION=${BASH_REMATCH[1]} || DCMTK_VERSION="?"

# ------------------------------------------------------------------ runs
RESULTS=$WORK/results.tsv
: >"$RESULTS"
# record kind set rep wall latency server_ticks receiver_ticks scu_cpu_s hwm_kb others_ticks tasks sent ended
record() {
    local IFS=$'\t'
    echo "$*" >>"$RESULTS"
}

# storescu_to PORT AEC SET LOG: one association, every file of the set;
# sets SCU_T0, SCU_T1 (EPOCHREALTIME) and SCU_CPU (user+system s).
storescu_to() {
    local port=$1 aec=$2 set=$3 log=$4 rc timing=$WORK/storescu.time
    TIMEFORMAT='%3U %3S'
    SCU_T0=$EPOCHREALTIME
    set +e
    { time env TCP_NODELAY=1 storescu -aet "$CALLING" -aec "$aec" +sd 127.0.0.1 "$port" "$WORK/src-$set" >>"$log" 2>&1; } 2>"$timing"
    rc=$?
    set -e
    SCU_T1=$EPOCHREALTIME
    ((rc == 0)) || { log_tail "$log"; die "storescu -> $aec ($set) exited with $rc"; }
    SCU_CPU=$(awk '{printf "%.2f", $1 + $2}' "$timing")
}

# wait_echo PORT AEC PID LOG: until C-ECHO succeeds.
wait_echo() {
    local i
    for ((i = 0; i < 300; i++)); do
        kill -0 "$3" 2>/dev/null || { log_tail "$4"; die "the SCP on port $1 exited at start"; }
        TCP_NODELAY=1 echoscu -aet "$CALLING" -aec "$2" 127.0.0.1 "$1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    log_tail "$4"
    die "no C-ECHO answer from $2 on 127.0.0.1:$1"
}

# start_serve CFG DATA LOG: sets SERVE_PID, API, SCP_PORT.
start_serve() {
    local cfg=$1 data=$2 log=$3 port
    port=$(free_port)
    SCP_PORT=$(free_port)
    API="http://127.0.0.1:$port/dcm4chee-arc"
    start_bg "$log" "$BIN" serve --config "$cfg" --data "$data" --listen "127.0.0.1:$port" \
        --dicom-listen "127.0.0.1:$SCP_PORT"
    SERVE_PID=$BG_PID
    for _ in $(seq 1 300); do
        kill -0 "$SERVE_PID" 2>/dev/null || { log_tail "$log"; die "serve exited at start"; }
        curl -sf -o /dev/null "$API/ctrl/status" && break
        sleep 0.1
    done
    curl -sf -o /dev/null "$API/ctrl/status" || { log_tail "$log"; die "serve does not answer on $API/ctrl/status"; }
    wait_echo "$SCP_PORT" "$AET" "$SERVE_PID" "$log"
    loopback_only "$SCP_PORT" "serve's Storage SCP"
}

# (1) storescu -> serve, no rule. KEEP=1 keeps the data dir as the
# export source of the set.
m_store() { # set rep [keep]
    local set=$1 rep=$2 keep=${3:-0} data=$WORK/data-store log=$LOGS/serve-store-$1-$2.log
    local s0 s1 r0 m0 m1 hwm stored
    ((keep)) && data=$WORK/data-export-$set
    rm -rf "$data"
    start_serve "$WORK/cfg-store" "$data" "$log"
    m0=$(machine_ticks)
    s0=$(cpu_ticks "$SERVE_PID")
    r0=$(cpu_ticks "$RPID")
    storescu_to "$SCP_PORT" "$AET" "$set" "$LOGS/storescu-store-$set-$rep.log"
    s1=$(cpu_ticks "$SERVE_PID")
    m1=$(machine_ticks)
    hwm=$(hwm_kb "$SERVE_PID")
    stop_pid "$SERVE_PID"
    stored=$(dcm_count "$data/storage")
    [[ $stored == "${N[$set]}" ]] || { log_tail "$log"; die "store $set rep $rep: $stored of ${N[$set]} instances stored"; }
    ((keep)) || rm -rf "$data"
    local wall others
    wall=$(sub "$SCU_T1" "$SCU_T0")
    others=$(($(busy_of "$m1") - $(busy_of "$m0") - (s1 - s0)))
    record store "$set" "$rep" "$wall" "" $((s1 - s0)) 0 "$SCU_CPU" "$hwm" "$others" "" "" ""
    say "rep $rep $set store: $wall s, serve CPU $(ticks_to_s $((s1 - s0))) s, storescu CPU $SCU_CPU s, peak RSS $((hwm / 1024)) MiB"
}

# (2) storescu -> storescp +B -od DIR.
m_storescp() { # set rep
    local set=$1 rep=$2 dir=$WORK/storescp-out port log=$LOGS/storescp-$1-$2.log pid
    local s0 s1 m0 m1 hwm stored wall others
    rm -rf "$dir"
    mkdir -p "$dir"
    port=$(free_port)
    start_bg "$log" env TCP_NODELAY=1 LD_PRELOAD="$SHIM" storescp -aet STORESCP -pdu "$MAX_PDU" +B -od "$dir" "$port"
    pid=$BG_PID
    wait_echo "$port" STORESCP "$pid" "$log"
    loopback_only "$port" storescp
    m0=$(machine_ticks)
    s0=$(cpu_ticks "$pid")
    storescu_to "$port" STORESCP "$set" "$LOGS/storescu-storescp-$set-$rep.log"
    s1=$(cpu_ticks "$pid")
    m1=$(machine_ticks)
    hwm=$(hwm_kb "$pid")
    stop_pid "$pid"
    stored=$(find "$dir" -type f | wc -l)
    [[ $stored == "${N[$set]}" ]] || { log_tail "$log"; die "storescp $set rep $rep: $stored of ${N[$set]} files written"; }
    rm -rf "$dir"
    wall=$(sub "$SCU_T1" "$SCU_T0")
    others=$(($(busy_of "$m1") - $(busy_of "$m0") - (s1 - s0)))
    record storescp "$set" "$rep" "$wall" "" $((s1 - s0)) 0 "$SCU_CPU" "$hwm" "$others" "" "" ""
    say "rep $rep $set storescp: $wall s, storescp CPU $(ticks_to_s $((s1 - s0))) s, storescu CPU $SCU_CPU s"
}

# (3) storescu -> Orthanc's DICOM server (a fresh Orthanc with its storage
# and index in the work dir; SyncStorageArea true, its default).
m_orthanc() { # set rep
    local set=$1 rep=$2 dir=$WORK/orthanc port hport log pid
    local s0 s1 m0 m1 hwm stored wall others json
    rm -rf "$dir"
    mkdir -p "$dir/storage" "$dir/index"
    port=$(free_port)
    hport=$(free_port)
    log=$LOGS/orthanc-$set-$rep.log
    cat >"$dir/orthanc.json" <<EOF
{
  "Name": "bench-forward",
  "StorageDirectory": "$dir/storage",
  "IndexDirectory": "$dir/index",
  "HttpServerEnabled": true,
  "HttpPort": $hport,
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false,
  "DicomServerEnabled": true,
  "DicomAet": "ORTHANC",
  "DicomPort": $port,
  "DicomCheckCalledAet": true,
  "DicomAlwaysAllowStore": false,
  "DicomAlwaysAllowEcho": false,
  "DicomCheckModalityHost": true,
  "DicomModalities": { "storescu": [ "$CALLING", "127.0.0.1", 104 ] },
  "MaximumPduLength": $MAX_PDU,
  "StorageCompression": false,
  "SyncStorageArea": true,
  "OverwriteInstances": false,
  "SaveJobs": false,
  "LuaScripts": [],
  "Plugins": []
}
EOF
    start_bg "$log" env TCP_NODELAY=1 LD_PRELOAD="$SHIM" "$ORTHANC" "$dir/orthanc.json"
    pid=$BG_PID
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || { log_tail "$log"; die "Orthanc exited at start"; }
        curl -sf -o /dev/null "http://127.0.0.1:$hport/system" && break
        sleep 0.1
    done
    wait_echo "$port" ORTHANC "$pid" "$log"
    loopback_only "$port" "Orthanc's DICOM server"
    loopback_only "$hport" "Orthanc's HTTP server"
    m0=$(machine_ticks)
    s0=$(cpu_ticks "$pid")
    storescu_to "$port" ORTHANC "$set" "$LOGS/storescu-orthanc-$set-$rep.log"
    s1=$(cpu_ticks "$pid")
    m1=$(machine_ticks)
    hwm=$(hwm_kb "$pid")
    json=$(curl -sf "http://127.0.0.1:$hport/statistics") || die "GET Orthanc's /statistics failed"
    [[ $json =~ \"CountInstances\"\ *:\ *\"?([0-9]+) ]] && stored=${BASH_REMATCH[1]} || stored=-1
    stop_pid "$pid"
    [[ $stored == "${N[$set]}" ]] || { log_tail "$log"; die "orthanc $set rep $rep: $stored of ${N[$set]} instances stored"; }
    rm -rf "$dir"
    wall=$(sub "$SCU_T1" "$SCU_T0")
    others=$(($(busy_of "$m1") - $(busy_of "$m0") - (s1 - s0)))
    record orthanc "$set" "$rep" "$wall" "" $((s1 - s0)) 0 "$SCU_CPU" "$hwm" "$others" "" "" ""
    say "rep $rep $set orthanc: $wall s, Orthanc CPU $(ticks_to_s $((s1 - s0))) s, storescu CPU $SCU_CPU s, peak RSS $((hwm / 1024)) MiB"
}

# (4) the study stored by the warm-up exported alone (REST trigger ->
# processingEndTime), as bench/export_throughput.sh.
m_export() { # set rep
    local set=$1 rep=$2 data=$WORK/data-export-$1 log=$LOGS/serve-export-$1-$2.log
    local s0 s1 r0 r1 m0 m1 hwm t0 body code task json status completed t_end wall held others deadline
    clear_receiver
    start_serve "$WORK/cfg-store" "$data" "$log"
    m0=$(machine_ticks)
    s0=$(cpu_ticks "$SERVE_PID")
    r0=$(cpu_ticks "$RPID")
    t0=$EPOCHREALTIME
    body=$(curl -sS -X POST -w '\n%{http_code}' "$API/aets/$AET/rs/studies/${STUDY[$set]}/export/$EXPORTER") ||
        { log_tail "$log"; die "export trigger failed"; }
    code=${body##*$'\n'}
    body=${body%$'\n'*}
    [[ $code == 202 ]] || die "export trigger answered HTTP $code: $body"
    [[ $body =~ \"taskID\":\"([^\"]+)\" ]] || die "no taskID in the trigger response: $body"
    task=${BASH_REMATCH[1]}
    deadline=$(awk -v t="$t0" -v n="${N[$set]}" 'BEGIN {printf "%d", t + 120 + n * 0.2}')
    status=""
    while :; do
        sleep 0.1
        kill -0 "$SERVE_PID" 2>/dev/null || { log_tail "$log"; die "serve exited during the export"; }
        json=$(curl -sS "$API/monitor/export/$task" 2>/dev/null) || json=""
        if [[ $json =~ \"status\":\"([A-Z ]+)\" ]]; then
            status=${BASH_REMATCH[1]}
            case $status in COMPLETED | WARNING | FAILED | CANCELED) break ;; esac
        fi
        ((${EPOCHREALTIME%.*} < deadline)) || { log_tail "$log"; die "export task $task not done in time (last status '$status')"; }
    done
    s1=$(cpu_ticks "$SERVE_PID")
    r1=$(cpu_ticks "$RPID")
    m1=$(machine_ticks)
    hwm=$(hwm_kb "$SERVE_PID")
    stop_pid "$SERVE_PID"
    [[ $json =~ \"completed\":([0-9]+) ]] && completed=${BASH_REMATCH[1]} || completed=-1
    [[ $status == COMPLETED && $completed == "${N[$set]}" ]] ||
        { echo "$json" >&2; log_tail "$log"; die "export $set rep $rep: status $status, completed $completed of ${N[$set]}"; }
    [[ $json =~ \"processingEndTime\":\"([^\"]+)\" ]] && t_end=$(date -d "${BASH_REMATCH[1]}" +%s.%N) ||
        die "no processingEndTime in $json"
    wall=$(sub "$t_end" "$t0")
    held=$(dcm_count "$RDIR")
    [[ $held == "${N[$set]}" ]] || die "export $set rep $rep: the receiver holds $held of ${N[$set]} instances"
    others=$(($(busy_of "$m1") - $(busy_of "$m0") - (s1 - s0) - (r1 - r0)))
    record export "$set" "$rep" "$wall" "" $((s1 - s0)) $((r1 - r0)) "" "$hwm" "$others" 1 "$completed" 1
    say "rep $rep $set export: $wall s, serve CPU $(ticks_to_s $((s1 - s0))) s, stowrsd CPU $(ticks_to_s $((r1 - r0))) s, peak RSS $((hwm / 1024)) MiB"
}

# (5) storescu -> serve with the rule -> the receiver: storescu's start ->
# the receiver holding every instance (the latest ctime of its files: the
# link(2) that names a committed instance), and storescu's end -> the same.
m_forward() { # set rep
    local set=$1 rep=$2 data=$WORK/data-forward log=$LOGS/serve-forward-$1-$2.log
    local s0 s1 r0 r1 m0 m1 hwm held stored t_poll t_done wall lat deadline drain_end json others ntasks ended sent statuses prev=""
    rm -rf "$data"
    clear_receiver
    start_serve "$WORK/cfg-forward" "$data" "$log"
    m0=$(machine_ticks)
    s0=$(cpu_ticks "$SERVE_PID")
    r0=$(cpu_ticks "$RPID")
    storescu_to "$SCP_PORT" "$AET" "$set" "$LOGS/storescu-forward-$set-$rep.log"
    deadline=$(awk -v t="$SCU_T1" -v n="${N[$set]}" 'BEGIN {printf "%d", t + 120 + n * 0.2}')
    while :; do
        held=$(dcm_count "$RDIR")
        ((held >= ${N[$set]})) && break
        kill -0 "$SERVE_PID" 2>/dev/null || { log_tail "$log"; die "serve exited while forwarding"; }
        ((${EPOCHREALTIME%.*} < deadline)) || { log_tail "$log"; die "forward $set rep $rep: the receiver holds only $held of ${N[$set]} instances in time"; }
        sleep 0.05
    done
    t_poll=$EPOCHREALTIME
    s1=$(cpu_ticks "$SERVE_PID")
    r1=$(cpu_ticks "$RPID")
    m1=$(machine_ticks)
    t_done=$(find "$RDIR" -type f -name '*.dcm' -printf '%C@\n' | sort -n | tail -n 1)
    awk -v d="$t_done" -v a="$SCU_T0" -v p="$t_poll" 'BEGIN {exit !(d > a && d <= p + 0.01)}' ||
        { say "forward $set rep $rep: last ctime $t_done outside (storescu start, poll]; the poll time is used"; t_done=$t_poll; }
    # The rule's tasks: until every one ended and no new one came for two
    # looks in a row, or BENCH_DRAIN s after the receiver held every
    # instance; what is left then is counted, not waited for (serve stops).
    drain_end=$(awk -v t="$t_poll" -v d="$DRAIN" 'BEGIN {printf "%d", t + d}')
    while :; do
        json=$(curl -sf "$API/monitor/export?batchID=$RULE") || die "monitor API failed"
        statuses=$({ grep -o '"status":"[A-Z ]*"' <<<"$json" || true; } | cut -d'"' -f4 | sort | uniq -c |
            awk '{n = $1; $1 = ""; sub(/^ /, ""); printf "%s%s %d", (NR > 1 ? ", " : ""), $0, n}')
        if [[ -n $statuses && $statuses != *SCHEDULED* && $statuses != *"IN PROCESS"* && $statuses == "$prev" ]]; then
            break
        fi
        prev=$statuses
        ((${EPOCHREALTIME%.*} < drain_end)) || break
        sleep 0.3
    done
    hwm=$(hwm_kb "$SERVE_PID")
    stop_pid "$SERVE_PID"
    ntasks=$({ grep -o '"taskID":' <<<"$json" || true; } | wc -l)
    ended=$({ grep -oE '"status":"(COMPLETED|WARNING|FAILED|CANCELED)"' <<<"$json" || true; } | wc -l)
    sent=$({ grep -o '"completed":[0-9]*' <<<"$json" || true; } | awk -F: '{s += $2} END {print s + 0}')
    [[ $statuses != *FAILED* && $statuses != *CANCELED* ]] || say "forward $set rep $rep: tasks $statuses"
    ((ended == ntasks)) || say "forward $set rep $rep: $((ntasks - ended)) of $ntasks tasks not ended ${DRAIN} s after the receiver held every instance; serve stopped with them"
    stored=$(dcm_count "$data/storage")
    [[ $stored == "${N[$set]}" ]] || die "forward $set rep $rep: $stored of ${N[$set]} instances stored"
    rm -rf "$data"
    wall=$(sub "$t_done" "$SCU_T0")
    lat=$(sub "$t_done" "$SCU_T1")
    others=$(($(busy_of "$m1") - $(busy_of "$m0") - (s1 - s0) - (r1 - r0)))
    record forward "$set" "$rep" "$wall" "$lat" $((s1 - s0)) $((r1 - r0)) "$SCU_CPU" "$hwm" "$others" "$ntasks" "$sent" "$ended"
    say "rep $rep $set forward: $wall s end to end (storescu $(sub "$SCU_T1" "$SCU_T0") s, then $lat s), $ntasks task(s) ($statuses), $sent instances completed by them (carried-over ones included), serve CPU $(ticks_to_s $((s1 - s0))) s, stowrsd CPU $(ticks_to_s $((r1 - r0))) s, peak RSS $((hwm / 1024)) MiB"
}

run_one() { # kind set rep
    sync
    quiet
    case $1 in
    store) m_store "$2" "$3" ;;
    storescp) m_storescp "$2" "$3" ;;
    orthanc) m_orthanc "$2" "$3" ;;
    export) m_export "$2" "$3" ;;
    forward) m_forward "$2" "$3" ;;
    esac
}

# Warm-up, not counted: each set stored once into the data dir that the
# export runs read; every kind once on the first set.
say "warm-up (not counted)"
RESULTS_REAL=$RESULTS
RESULTS=$WORK/warmup.tsv
for set in "${SETS[@]}"; do
    sync
    m_store "$set" 0 1
done
for kind in storescp orthanc export forward; do run_one "$kind" "${SETS[0]}" 0; done
RESULTS=$RESULTS_REAL

KINDS=(store storescp orthanc export forward)
say "running $REPS repetition(s); the order rotates from one to the next, reversed every other one"
for rep in $(seq 1 "$REPS"); do
    k=$(((rep - 1) % ${#KINDS[@]}))
    order=("${KINDS[@]:k}" "${KINDS[@]:0:k}")
    if ((rep % 2 == 0)); then
        for ((i = 0, j = ${#order[@]} - 1; i < j; i++, j--)); do
            tmp=${order[i]} order[i]=${order[j]} order[j]=$tmp
        done
    fi
    for set in "${SETS[@]}"; do
        for kind in "${order[@]}"; do
            run_one "$kind" "$set" "$rep"
        done
    done
done
stop_pid "$RPID"

# ---------------------------------------------------------------- report
MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
echo
echo "Receive by C-STORE and forward by dcmExportRule (issue 15) — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) CPUs, ${MODEL:-unknown CPU}, $(awk '/^MemTotal/ {printf "%.0f GB RAM", $2 / 1048576}' /proc/meminfo), $(uname -sr); work dir on $(stat -f -c %T "$WORK")"
echo "load at start: ${UPTIME_START#*load average: }; at end: $(uptime | sed 's/.*load average: //'); runs started while other work kept the machine busy: $BUSY_STARTS"
echo "dcmtk $DCMTK_VERSION (storescu, one association; storescp +B -pdu $MAX_PDU), Orthanc $ORTHANC_VERSION (MaximumPduLength $MAX_PDU, SyncStorageArea true); all three with TCP_NODELAY=1; REPS=$REPS (medians)"
for set in "${SETS[@]}"; do
    echo "$set: ${N[$set]} x ${SIDE[$set]}x${SIDE[$set]}x16 bit CT, ${BYTES[$set]} bytes, one study"
done
echo "export and forward: exporter $EXPORTER (concurrency=$CONCURRENCY, queue Export as shipped) -> stowrsd --dir on loopback; rule: dcmEntity Study, dcmDuration PT0S"
echo
python3 - "$RESULTS" "$CLK_TCK" "${SETS[*]}" "$(for s in "${SETS[@]}"; do printf '%s:%s:%s ' "$s" "${N[$s]}" "${BYTES[$s]}"; done)" <<'PY'
import statistics, sys

rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
hz = int(sys.argv[2])
sets = sys.argv[3].split()
size = {s.split(":")[0]: (int(s.split(":")[1]), int(s.split(":")[2])) for s in sys.argv[4].split()}
med = statistics.median

def runs(kind, s):
    return [r for r in rows if r[0] == kind and r[1] == s]

def summ(kind, s):
    rs = runs(kind, s)
    if not rs:
        return None
    n, b = size[s]
    walls = [float(r[3]) for r in rs]
    t = med(walls)
    return {
        "t": t, "walls": walls, "ips": n / t, "mbs": b / 1e6 / t,
        "lat": med(float(r[4]) for r in rs) if rs[0][4] else None,
        "lats": [float(r[4]) for r in rs] if rs[0][4] else [],
        "scpu": med(int(r[5]) for r in rs) / hz,
        "rcpu": med(int(r[6]) for r in rs) / hz,
        "ucpu": med(float(r[7]) for r in rs) if rs[0][7] else None,
        "hwm": max(int(r[8]) for r in rs) * 1024 / 1e6,
        "others": med(max(0, int(r[9])) for r in rs) / hz,
        "tasks": [r[10] for r in rs], "sent": [r[11] for r in rs], "ended": [r[12] for r in rs],
    }

names = {
    "store": "storescu → stow-exporter SCP (store only)",
    "storescp": "storescu → dcmtk storescp +B (reference)",
    "orthanc": "storescu → Orthanc SCP",
    "export": "export alone: REST trigger → processingEndTime",
    "forward": "forward: storescu start → receiver holds all",
}
print("| objects | path | wall s, median (runs) | instances/s | MB/s | vs target | CPU s server / stowrsd / storescu | others CPU s | peak RSS MB |")
print("|---|---|---|---:|---:|---|---|---:|---:|")
verdicts = []
peak = 0.0
for s in sets:
    x = {k: summ(k, s) for k in names}
    for k, label in names.items():
        r = x[k]
        if not r:
            continue
        vs = "–"
        if k == "store":
            a = r["ips"] / x["storescp"]["ips"]
            b = r["ips"] / x["orthanc"]["ips"]
            ok1, ok2 = a >= 0.9, b > 1.0
            vs = f"{a:.0%} of storescp (≥ 90 %: **{'PASS' if ok1 else 'FAIL'}**); {b:.2f}× Orthanc (> 1: **{'PASS' if ok2 else 'FAIL'}**)"
            verdicts.append((f"{s}: storing ≥ 90 % of storescp's rate", ok1, f"{a:.0%}"))
            verdicts.append((f"{s}: storing faster than Orthanc", ok2, f"{b:.2f}×"))
        elif k == "storescp":
            vs = "reference"
        elif k == "orthanc":
            vs = f"{r['ips'] / x['storescp']['ips']:.0%} of storescp"
        elif k == "forward" and x["store"] and x["export"]:
            both = x["store"]["t"] + x["export"]["t"]
            ratio = r["t"] / both
            ok = ratio <= 1.1
            vs = f"{ratio:.0%} of store + export ({both:.2f} s; ≤ 110 %: **{'PASS' if ok else 'FAIL'}**)"
            verdicts.append((f"{s}: forwarding within 10 % of storing + exporting", ok,
                             f"{r['t']:.2f} s against {x['store']['t']:.2f} + {x['export']['t']:.2f} s = {ratio:.0%}"))
        if k in ("store", "export", "forward"):
            peak = max(peak, r["hwm"])
        cpu = f"{r['scpu']:.2f} / {r['rcpu']:.2f} / " + (f"{r['ucpu']:.2f}" if r["ucpu"] is not None else "–")
        walls = ", ".join(f"{w:.2f}" for w in r["walls"])
        print(f"| {s} | {label} | {r['t']:.2f} ({walls}) | {r['ips']:.0f} | {r['mbs']:.1f} | {vs} | {cpu} | {r['others']:.2f} | {r['hwm']:.1f} |")
    f = x["forward"]
    if f:
        lats = ", ".join(f"{v:.3f}" for v in f["lats"])
        tasks = " / ".join(t if e == t else f"{t} ({e} ended)" for t, e in zip(f["tasks"], f["ended"]))
        print(f"| {s} | forward latency: last C-STORE (storescu's end) → receiver holds all | {f['lat']:.3f} ({lats}) | | | "
              f"rule's tasks per run: {tasks}; instances their tasks completed (carried over from an earlier task included): {' / '.join(f['sent'])} (set: {size[s][0]}) | | | |")
print()
ok = peak < 150
verdicts.append(("peak RSS of serve (store, export, forward) < 150 MB", ok, f"{peak:.1f} MB"))
print("Targets (issue 15):")
for what, good, detail in verdicts:
    print(f"- {what}: {'PASS' if good else 'FAIL'} ({detail})")
print()
print("CPU: user+system seconds over the measured window (server = serve, storescp or Orthanc; storescu from bash's time); "
      "others = the machine's busy time less the server and stowrsd (includes storescu and the script's polling). "
      "MB = 10^6 bytes of Part-10 files.")
PY
