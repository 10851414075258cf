#!/usr/bin/env bash
# STOW-RS side by side: stow-exporter against Orthanc's own STOW-RS sender
# (DICOMweb plugin, POST /dicom-web/servers/{name}/stow), in one run, with
# the same objects and the same receivers:
#   - stowrsd:  `stow-exporter stowrsd --ignore` (reads, parses and
#               acknowledges every instance, stores nothing);
#   - orthanc:  a second Orthanc that stores what it receives (restarted
#               empty before each run), with four parallel curl clients as
#               the reference.
# Object sets: SMALL = 2000 CT instances of 140x140x16 bits (~40 KB) and
# LARGE = 200 of 1600x1600x16 bits (~5.1 MB), one study each.
#
# Usage: bench/orthanc_stow.sh [REPS=3]
#
# See bench/README.md. Everything runs on 127.0.0.1; every process the
# script starts is stopped by its PID on exit (Orthanc through
# scripts/orthanc.sh stop, which stops the PID it recorded); the work dirs
# are removed unless BENCH_KEEP=1.
#
# Environment:
#   BENCH_TMPDIR          parent of the work dir (default /tmp; needs ~5 GB)
#   BENCH_ORTHANC_TMPDIR  parent of the receiving Orthanc's storage and index
#                         (default /dev/shm, tmpfs; see bench/README.md)
#   BENCH_KEEP=1          keep the work dirs and logs
#   BENCH_SMALL_N, BENCH_LARGE_N   instances per set (2000, 200)
#   BENCH_SMALL_BATCH     dcmProperty values of "batching on" for SMALL
#                         (default "max-instances-per-request=50")
#   BENCH_LARGE_BATCH     the same for LARGE (default
#                         "max-instances-per-request=10 max-bytes-per-request=64MB")
#   BENCH_CURL_SMALL_BATCH instances per body of the batched curl reference
#                         on SMALL (default 100, as in the baselines)
#   BENCH_QUIET_MAX, BENCH_QUIET_BUDGET  seconds to wait, per run and in all
#                         (15, 90), for other work on the machine to settle
#   BENCH_REDO_MAX        runs that may be measured again because other
#                         processes took more than half a core meanwhile (12)
set -Eeuo pipefail

REPS=${1:-3}
SMALL_N=${BENCH_SMALL_N:-2000}
LARGE_N=${BENCH_LARGE_N:-200}
SMALL_SIDE=140  # 140*140*2 B of pixels + ~1 KB header = ~40.2 KB
LARGE_SIDE=1600 # 1600*1600*2 B + ~1 KB = ~5.12 MB
CONCURRENCY=4
SMALL_BATCH=${BENCH_SMALL_BATCH:-max-instances-per-request=50}
LARGE_BATCH=${BENCH_LARGE_BATCH:-max-instances-per-request=10 max-bytes-per-request=64MB}
CURL_SMALL_BATCH=${BENCH_CURL_SMALL_BATCH:-100}
CURL_CLIENTS=4
AET=DCM4CHEE1
EXPORTER=STOWRSD
WEBAPP_DN='dcmWebAppName=stowrsd,dicomDeviceName=stowrsd,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org'

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ORTHANC_SH=$ROOT/scripts/orthanc.sh
T_START=$EPOCHREALTIME

die() {
    echo "error: $*" >&2
    exit 1
}
say() { echo "== $*" >&2; }

for v in REPS SMALL_N LARGE_N CURL_SMALL_BATCH; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}'); usage: $0 [REPS=3]"
done
for tool in cargo curl python3 awk date stat; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
export LC_ALL=C
export NO_COLOR=1

# ---------------------------------------------------------------- cleanup
PIDS=()         # our own children (stowrsd, serve, a fallback Orthanc)
ORTHANC_DIRS=() # Orthanc work dirs started through scripts/orthanc.sh
WORK=""
BDIR=""

stop_pid() {
    local pid=$1 i
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < 300; i++)); do # 15 s, then SIGKILL
            kill -0 "$pid" 2>/dev/null || break
            # a child of ours turns into a zombie until waited for
            [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && break
            sleep 0.05
        done
        kill -0 "$pid" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] &&
            kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null || true
    local keep=() p
    for p in ${PIDS[@]+"${PIDS[@]}"}; do
        [[ $p == "$pid" ]] || keep+=("$p")
    done
    PIDS=(${keep[@]+"${keep[@]}"})
}

cleanup() {
    local rc=$? p d
    trap - EXIT INT TERM ERR
    # Orthanc takes seconds to stop: stop both at once.
    for d in ${ORTHANC_DIRS[@]+"${ORTHANC_DIRS[@]}"}; do
        "$ORTHANC_SH" stop "$d" >/dev/null 2>&1 &
    done
    for p in ${PIDS[@]+"${PIDS[@]}"}; do
        stop_pid "$p"
    done
    wait
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        [[ -n $WORK ]] && echo "kept the work dir $WORK (BENCH_KEEP=1)" >&2
        [[ -n $BDIR ]] && echo "kept the receiving Orthanc's dir $BDIR (BENCH_KEEP=1)" >&2
    else
        [[ -n $WORK && -d $WORK ]] && rm -rf -- "$WORK"
        [[ -n $BDIR && -d $BDIR ]] && rm -rf -- "$BDIR"
    fi
    echo "wall time of the script: $(awk -v a="$EPOCHREALTIME" -v b="$T_START" 'BEGIN {printf "%.0f", a - b}') s" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'echo "error: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

start_bg() { # log cmd... -> BG_PID
    local log=$1
    shift
    "$@" >>"$log" 2>&1 </dev/null &
    BG_PID=$!
    PIDS+=("$BG_PID")
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

sub() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a - b}'; }
CLK_TCK=$(getconf CLK_TCK)
# user+system CPU ticks of a process (including its exited threads).
cpu_ticks() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || die "process $1 is no longer running"
    stat=${stat##*) }
    awk '{print $12 + $13}' <<<"$stat"
}
# busy ticks of the whole machine (user+nice+system+irq+softirq+steal)
# and all ticks.
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit}' /proc/stat; }
# CPU ticks that other processes used between two machine_ticks readings:
# busy ticks of the machine less those of the sender and the receiver.
others_ticks() { # before after sender_ticks receiver_ticks
    local b0 b1
    read -r b0 _ <<<"$1"
    read -r b1 _ <<<"$2"
    local o=$((b1 - b0 - $3 - $4))
    echo $((o < 0 ? 0 : o))
}
# Waits until the machine is nearly idle (< 25 % busy over 0.5 s): other
# work (builds, tests) on these 2 cores would land in the figures. At most
# BENCH_QUIET_MAX s per run (default 15) and BENCH_QUIET_BUDGET s in all
# (default 90); counts the runs that had to start anyway.
BUSY_STARTS=0
QUIET_LEFT=$((${BENCH_QUIET_BUDGET:-90} * 2)) # half-seconds of waiting left for the whole run
quiet() {
    local m0 m1 b0 a0 b1 a1 pct waited=0 max=$((${BENCH_QUIET_MAX:-15} * 2))
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
            say "the machine is still ${pct} % busy with other work after $((waited / 2)) s; starting anyway"
            return 0
        fi
        ((waited == 1)) && say "waiting for other work on the machine to settle (${pct} % busy)"
    done
}
window_ticks() { # before after -> all CPU ticks of the machine in between (busy or idle)
    local a0 a1
    read -r _ a0 <<<"$1"
    read -r _ a1 <<<"$2"
    echo $((a1 - a0))
}
ticks_to_s() { awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", t / hz}'; }
dir_bytes() { find "$1" -maxdepth 1 -name '*.dcm' -printf '%s\n' | awk '{s += $1} END {printf "%d", s}'; }
log_tail() {
    echo "--- last lines of $1:" >&2
    tail -n 20 "$1" >&2 || true
}

# ------------------------------------------------------------------ build
say "building release binaries (cargo skips this when up to date)"
(cd "$ROOT" && cargo build --release --bin stow-exporter --example synth) || die "cargo build --release failed"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET == /* ]] || TARGET=$ROOT/$TARGET
BIN=$TARGET/release/stow-exporter
SYNTH=$TARGET/release/examples/synth
[[ -x $BIN && -x $SYNTH ]] || die "$BIN or $SYNTH missing after the build"

WORK=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/stow-orthanc-bench.XXXXXX") || die "cannot create a work dir"
LOGS=$WORK/logs
mkdir -p "$LOGS"

# ---------------------------------------------------------------- Orthanc
ORTHANC=/usr/sbin/Orthanc
DICOMWEB_PLUGIN=/usr/share/orthanc/plugins/libOrthancDicomWeb.so
if [[ -x $ORTHANC_SH ]]; then
    "$ORTHANC_SH" install || die "scripts/orthanc.sh install failed"
elif ! [[ -x $ORTHANC && -e $DICOMWEB_PLUGIN ]]; then
    say "installing orthanc and orthanc-dicomweb (apt-get; postinst may not start the system service)"
    [[ $(id -u) == 0 ]] || die "orthanc and orthanc-dicomweb are missing; install them (as root)"
    policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q orthanc orthanc-dicomweb >"$LOGS/apt.log" 2>&1 ||
        { apt-get update -q >>"$LOGS/apt.log" 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q orthanc orthanc-dicomweb >>"$LOGS/apt.log" 2>&1; } ||
        { ((policy)) && rm -f /usr/sbin/policy-rc.d; log_tail "$LOGS/apt.log"; die "apt-get install failed"; }
    ((policy)) && rm -f /usr/sbin/policy-rc.d
fi
ORTHANC_VERSION=$(dpkg-query -W -f '${Version}' orthanc 2>/dev/null || echo "?")
DICOMWEB_VERSION=$(dpkg-query -W -f '${Version}' orthanc-dicomweb 2>/dev/null || echo "?")

# orthanc_start DIR PORT -> ORTHANC_PID. Uses scripts/orthanc.sh when it
# works, otherwise starts Orthanc itself (own config, loopback port; Orthanc
# 1.10 binds 0.0.0.0 but refuses remote clients with RemoteAccessAllowed).
orthanc_start() {
    local dir=$1 port=$2 out i
    mkdir -p "$dir"
    if [[ -x $ORTHANC_SH ]] && out=$("$ORTHANC_SH" start "$dir" "$port" 2>>"$LOGS/orthanc.sh.log") &&
        [[ $out =~ ^[0-9]+$ ]]; then
        ORTHANC_PID=$out
        ORTHANC_DIRS+=("$dir")
        return 0
    fi
    [[ -x $ORTHANC_SH ]] && { say "scripts/orthanc.sh start failed (see $LOGS/orthanc.sh.log); starting Orthanc directly"; "$ORTHANC_SH" stop "$dir" >/dev/null 2>&1 || true; }
    mkdir -p "$dir/storage" "$dir/index"
    cat >"$dir/bench-orthanc.json" <<EOF
{
  "Name": "bench-$port",
  "StorageDirectory": "$dir/storage",
  "IndexDirectory": "$dir/index",
  "HttpPort": $port,
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false,
  "DicomServerEnabled": false,
  "StorageCompression": false,
  "SaveJobs": false,
  "Plugins": ["$DICOMWEB_PLUGIN"],
  "DicomWeb": {"Enable": true, "Root": "/dicom-web/"}
}
EOF
    start_bg "$dir/orthanc.log" "$ORTHANC" "$dir/bench-orthanc.json"
    ORTHANC_PID=$BG_PID
    for ((i = 0; i < 300; i++)); do
        curl -sf -o /dev/null "http://127.0.0.1:$port/system" && return 0
        kill -0 "$ORTHANC_PID" 2>/dev/null || { log_tail "$dir/orthanc.log"; die "Orthanc exited at start"; }
        sleep 0.1
    done
    log_tail "$dir/orthanc.log"
    die "Orthanc does not answer on 127.0.0.1:$port"
}

# ------------------------------------------------------------ test data
need_kb=$(awk -v s="$SMALL_N" -v l="$LARGE_N" -v a="$SMALL_SIDE" -v b="$LARGE_SIDE" \
    'BEGIN {printf "%d", (5 * s * (2 * a * a + 1100) + 4 * l * (2 * b * b + 1100)) / 1024}')
avail_kb=$(df -Pk "$WORK" | awk 'NR == 2 {print $4}')
((avail_kb > need_kb)) || die "$WORK: $((avail_kb / 1024)) MiB free, about $((need_kb / 1024)) MiB needed (set BENCH_TMPDIR)"
say "work dir $WORK (about $((need_kb / 1024)) MiB needed, $((avail_kb / 1024)) MiB free)"

declare -A N BYTES STUDY OID
gen() { # set count side
    local uid t0=$EPOCHREALTIME
    uid=$("$SYNTH" --out "$WORK/src-$1" --count "$2" --rows "$3" --columns "$3") || die "synth failed for set $1"
    [[ -n $uid ]] || die "synth printed no study UID"
    STUDY[$1]=$uid
    N[$1]=$2
    BYTES[$1]=$(dir_bytes "$WORK/src-$1")
    say "set $1: ${N[$1]} instances of ${3}x${3}x16 bits, ${BYTES[$1]} bytes ($(awk -v b="${BYTES[$1]}" -v n="$2" 'BEGIN {printf "%.0f", b / n}') B each), study $uid, generated in $(sub "$EPOCHREALTIME" "$t0") s"
}
gen small "$SMALL_N" "$SMALL_SIDE"
gen large "$LARGE_N" "$LARGE_SIDE"

for set in small large; do
    out=$("$BIN" import --data "$WORK/data-$set" "$WORK/src-$set" 2>>"$LOGS/import.log") ||
        { log_tail "$LOGS/import.log"; die "import of set $set failed"; }
    [[ $out == "imported ${N[$set]} new, 0 already stored, 0 failed"* ]] || die "import of set $set: $out"
done
say "imported both sets into stow-exporter's archive"

# -------------------------------------------------------------- receivers
RPORT=$(free_port)
start_bg "$LOGS/stowrsd.log" env RUST_LOG=info "$BIN" stowrsd --bind "127.0.0.1:$RPORT" --ignore
RPID=$BG_PID
for _ in $(seq 1 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$RPORT/" || true)
    [[ $code != 000 ]] && break
    kill -0 "$RPID" 2>/dev/null || { log_tail "$LOGS/stowrsd.log"; die "stowrsd exited at start"; }
    sleep 0.1
done
[[ $code != 000 ]] || die "stowrsd does not answer on 127.0.0.1:$RPORT"
say "receiver stowrsd --ignore: pid $RPID, 127.0.0.1:$RPORT"

BDIR=$(mktemp -d "${BENCH_ORTHANC_TMPDIR:-/dev/shm}/stow-orthanc-bench-b.XXXXXX") ||
    die "cannot create the receiving Orthanc's dir under ${BENCH_ORTHANC_TMPDIR:-/dev/shm}"
BPORT=$(free_port)
orthanc_start "$BDIR" "$BPORT"
BPID=$ORTHANC_PID
BURL=http://127.0.0.1:$BPORT
say "receiver Orthanc (storing): pid $BPID, 127.0.0.1:$BPORT, storage and index in $BDIR ($(stat -f -c %T "$BDIR"))"

APORT=$(free_port)
orthanc_start "$WORK/orthanc-a" "$APORT"
APID=$ORTHANC_PID
AURL=http://127.0.0.1:$APORT
say "sender Orthanc: pid $APID, 127.0.0.1:$APORT, storage in $WORK/orthanc-a"
# Its DICOMweb servers (chunked transfers: the plugin's default and its
# faster mode).
for entry in "stowrsd http://127.0.0.1:$RPORT/stowrs/" "orthanc $BURL/dicom-web/"; do
    read -r name url <<<"$entry"
    curl -sf -o /dev/null -X PUT "$AURL/dicom-web/servers/$name" \
        -d "{\"Url\": \"$url\", \"ChunkedTransfers\": true}" || die "cannot add DICOMweb server $name to Orthanc"
done
servers=$(curl -sf "$AURL/dicom-web/servers")
[[ $servers == *'"stowrsd"'* && $servers == *'"orthanc"'* ]] || die "Orthanc lists DICOMweb servers $servers"
for p in "$RPORT" "$BPORT" "$APORT"; do
    ss -ltnH "sport = :$p" 2>/dev/null | awk '{print $4}' | grep -qv '^127\.0\.0\.1:' &&
        say "warning: port $p also listens on a non-loopback address: $(ss -ltnH "sport = :$p" | awk '{print $4}' | tr '\n' ' ')"
done

orthanc_count() { # url [study-id] -> CountInstances
    local url=$1 json
    if [[ -n ${2:-} ]]; then json=$(curl -sf "$url/studies/$2/statistics" 2>/dev/null) || json='"CountInstances" : 0'
    else json=$(curl -sf "$url/statistics") || die "GET $url/statistics failed"; fi
    [[ $json =~ \"CountInstances\"\ *:\ *\"?([0-9]+) ]] || die "no CountInstances in $json"
    echo "${BASH_REMATCH[1]}"
}

# Load both sets into the sending Orthanc (POST /instances, 2 in flight),
# again until it holds every instance (duplicates are harmless).
for set in small large; do
    t0=$EPOCHREALTIME
    cfg=$WORK/upload-$set.cfg
    : >"$cfg"
    for f in "$WORK/src-$set"/*.dcm; do
        printf 'url = "%s/instances"\nupload-file = "%s"\nrequest = "POST"\nheader = "Expect:"\nheader = "Content-Type: application/dicom"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\nnext\n' \
            "$AURL" "$f" >>"$cfg"
    done
    sed -i '$ d' "$cfg" # the last "next"
    OID[$set]=$(curl -sf "$AURL/tools/lookup" -d "${STUDY[$set]}" | grep -o '"ID" *: *"[^"]*"' | cut -d'"' -f4 || true)
    for attempt in 1 2 3; do
        curl -sS --no-progress-meter -Z --parallel-max 2 -K "$cfg" >"$LOGS/upload-$set-$attempt.codes" 2>>"$LOGS/upload.err" || true
        [[ -n ${OID[$set]} ]] || OID[$set]=$(curl -sf "$AURL/tools/lookup" -d "${STUDY[$set]}" | grep -o '"ID" *: *"[^"]*"' | cut -d'"' -f4 || true)
        [[ -n ${OID[$set]} ]] && held=$(orthanc_count "$AURL" "${OID[$set]}") && ((held == ${N[$set]})) && break
        say "upload of set $set to the sending Orthanc: attempt $attempt incomplete ($(sort "$LOGS/upload-$set-$attempt.codes" | uniq -c | tr -s ' \n' ' ')); again"
    done
    [[ -n ${OID[$set]} ]] && held=$(orthanc_count "$AURL" "${OID[$set]}") && ((held == ${N[$set]})) ||
        die "the sending Orthanc does not hold the ${N[$set]} instances of set $set"
    say "set $set loaded into the sending Orthanc in $(sub "$EPOCHREALTIME" "$t0") s (study ${OID[$set]})"
done
held=$(orthanc_count "$BURL")
((held == 0)) || die "the receiving Orthanc is not empty ($held instances)"

# ------------------------------------------ curl reference request bodies
# One multipart/related body per request, CURL_CLIENTS curl configs per
# layout (each client sends its share of bodies in turn, streamed from
# disk with --upload-file, on one keep-alive connection).
BOUNDARY=stow-bench-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
say "building the curl request bodies (boundary $BOUNDARY)"
python3 - "$WORK" "$BOUNDARY" "$BURL/dicom-web/studies" "$CURL_CLIENTS" \
    "small:1:${N[small]}" "small:$CURL_SMALL_BATCH:${N[small]}" "large:1:${N[large]}" <<'PY'
import os, sys

work, boundary, url, clients = sys.argv[1], sys.argv[2].encode(), sys.argv[3], int(sys.argv[4])
for spec in sys.argv[5:]:
    name, per, count = spec.split(":")
    per, count = int(per), int(count)
    src = os.path.join(work, "src-" + name)
    files = sorted((f for f in os.listdir(src) if f.endswith(".dcm")), key=lambda f: int(f[:-4]))
    assert len(files) == count, (src, len(files), count)
    out = os.path.join(work, f"bodies-{name}-{per}")
    os.makedirs(out)
    bodies = []
    for i in range(0, len(files), per):
        path = os.path.join(out, f"{i // per}.mpr")
        with open(path, "wb") as b:
            for f in files[i:i + per]:
                with open(os.path.join(src, f), "rb") as fh:
                    data = fh.read()
                if b"--" + boundary in data:
                    sys.exit(f"{f}: contains the boundary")
                b.write(b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n")
            b.write(b"--" + boundary + b"--\r\n")
        bodies.append(path)
    for c in range(clients):
        mine = bodies[c::clients]
        if not mine:
            continue
        with open(os.path.join(work, f"curl-{name}-{per}-{c}.cfg"), "w") as cfg:
            for j, path in enumerate(mine):
                if j:
                    cfg.write("next\n")
                cfg.write(
                    f'url = "{url}"\nupload-file = "{path}"\nrequest = "POST"\n'
                    f'header = "Content-Type: multipart/related; type=\\"application/dicom\\"; boundary={boundary.decode()}"\n'
                    'header = "Accept: application/dicom+json"\nheader = "Expect:"\n'
                    'output = "/dev/null"\nwrite-out = "%{http_code}\\n"\n'
                )
PY

# ----------------------------------------------------- service configs
# cfg-RECEIVER-VARIANT: the shipped ldif/ with the stowrsd web app (exporter
# STOWRSD, queue Export) pointed at the receiver, plus the properties.
declare -A PROPS=(
    [off]="concurrency=$CONCURRENCY max-instances-per-request=1"
    [on-small]="concurrency=$CONCURRENCY $SMALL_BATCH"
    [on-large]="concurrency=$CONCURRENCY $LARGE_BATCH"
)
declare -A RECV_PORT=([stowrsd]=$RPORT [orthanc]=$BPORT)
declare -A RECV_PATH=([stowrsd]=/stowrs [orthanc]=/dicom-web)
make_config() { # receiver variant
    local dir=$WORK/cfg-$1-$2 f p out
    mkdir -p "$dir"
    for f in "$ROOT"/ldif/*.ldif; do
        sed -e "s/^dicomPort: 18080\$/dicomPort: ${RECV_PORT[$1]}/" \
            -e "s#^dcmWebServicePath: /stowrs\$#dcmWebServicePath: ${RECV_PATH[$1]}#" "$f" >"$dir/$(basename "$f")"
    done
    {
        printf 'version: 1\n\ndn: %s\nchangetype: modify\nadd: dcmProperty\n' "$WEBAPP_DN"
        for p in ${PROPS[$2]}; do echo "dcmProperty: $p"; done
        printf -- '-\n\n'
    } >"$dir/99-bench.ldif"
    out=$("$BIN" check-config --config "$dir" 2>&1) || {
        echo "$out" >&2
        [[ $out == *max-instances-per-request* ]] &&
            die "this build does not accept max-instances-per-request yet (batching is being implemented); retry later"
        die "configuration $dir is invalid"
    }
    grep -qE "^$EXPORTER .*127\.0\.0\.1:${RECV_PORT[$1]}${RECV_PATH[$1]}/studies" <<<"$out" ||
        { echo "$out" >&2; die "exporter $EXPORTER does not point at $1 in $dir"; }
    for p in ${PROPS[$2]}; do
        local k=${p%%=*} v=${p#*=}
        case $k in
        concurrency | max-instances-per-request)
            grep -qE "^$EXPORTER .*\"${k//-/_}\":$v[,}]" <<<"$out" || { echo "$out" >&2; die "$p not in effect in $dir"; } ;;
        max-bytes-per-request)
            grep -qE "^$EXPORTER .*\"max_bytes_per_request\":[0-9]+" <<<"$out" || { echo "$out" >&2; die "$p not in effect in $dir"; } ;;
        esac
    done
}
for r in stowrsd orthanc; do
    for v in off on-small on-large; do make_config "$r" "$v"; done
done
say "batching off: ${PROPS[off]}; on (small): ${PROPS[on-small]}; on (large): ${PROPS[on-large]}"

say "sync (writing back the generated data)"
sync

# ------------------------------------------------------------------ runs
RESULTS=$WORK/results.tsv
: >"$RESULTS"
# receiver set sender rep count bytes wall net sender_ticks receiver_ticks others_ticks requests window_ticks
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"; }

RECV_PID() { [[ $1 == stowrsd ]] && echo "$RPID" || echo "$BPID"; }
receiver_mark() { wc -l <"$LOGS/stowrsd.log"; }

# stowrsd_check what mark count bytes -> "requests last_response_epoch"
stowrsd_check() {
    local what=$1 mark=$2 count=$3 bytes=$4 seen
    seen=$(tail -n "+$((mark + 1))" "$LOGS/stowrsd.log" | awk '
        / STOW-RS request/ {
            n++; last = $1
            if ($0 !~ / status=200 /) bad++
            if (match($0, / parts=[0-9]+/)) p += substr($0, RSTART + 7, RLENGTH - 7)
            if (match($0, / stored=[0-9]+/)) s += substr($0, RSTART + 8, RLENGTH - 8)
            if (match($0, / bytes=[0-9]+/)) b += substr($0, RSTART + 7, RLENGTH - 7)
        }
        END {printf "%d %d %d %d %d %s", n, bad, p, s, b, last}')
    local n bad p s b last
    read -r n bad p s b last <<<"$seen"
    [[ $bad == 0 && $p == "$count" && $s == "$count" && $b == "$bytes" ]] ||
        die "$what: stowrsd saw $n requests ($bad not 200), $p parts, $s stored, $b bytes; expected $count parts and $bytes bytes"
    echo "$n $(date -d "$last" +%s.%N)"
}

# orthanc_check what set: the receiving Orthanc holds the set exactly
# (instances and bytes of the files), then is emptied again.
orthanc_check() {
    local what=$1 set=$2 json count size
    json=$(curl -sf "$BURL/statistics") || die "$what: GET /statistics failed"
    [[ $json =~ \"CountInstances\"\ *:\ *([0-9]+) ]] && count=${BASH_REMATCH[1]} || count=-1
    [[ $json =~ \"TotalDiskSize\"\ *:\ *\"([0-9]+)\" ]] && size=${BASH_REMATCH[1]} || size=-1
    [[ $count == "${N[$set]}" && $size == "${BYTES[$set]}" ]] ||
        die "$what: the receiving Orthanc holds $count instances, $size bytes; expected ${N[$set]}, ${BYTES[$set]}"
}
# Every run into Orthanc starts on a fresh receiving Orthanc (new storage
# and index, same port): emptying one with DELETE leaves its SQLite WAL
# and heap in a state that changed the next run's cost by up to 40 %,
# depending on what ran before.
B_DIRTY=0
orthanc_clear() { B_DIRTY=1; }
orthanc_stop() { # dir pid
    local d p keep=()
    for d in ${ORTHANC_DIRS[@]+"${ORTHANC_DIRS[@]}"}; do
        [[ $d == "$1" ]] || keep+=("$d")
    done
    if ((${#keep[@]} != ${#ORTHANC_DIRS[@]})); then
        "$ORTHANC_SH" stop "$1" || die "scripts/orthanc.sh stop $1 failed"
        ORTHANC_DIRS=(${keep[@]+"${keep[@]}"})
    else
        stop_pid "$2"
    fi
}
fresh_receiver() {
    ((B_DIRTY)) || return 0
    local old=$BDIR t0=$EPOCHREALTIME held
    orthanc_stop "$BDIR" "$BPID"
    BDIR=""
    rm -rf -- "$old"
    BDIR=$(mktemp -d "${BENCH_ORTHANC_TMPDIR:-/dev/shm}/stow-orthanc-bench-b.XXXXXX") || die "cannot create a dir for the receiving Orthanc"
    orthanc_start "$BDIR" "$BPORT"
    BPID=$ORTHANC_PID
    held=$(orthanc_count "$BURL")
    ((held == 0)) || die "the fresh receiving Orthanc holds $held instances"
    B_DIRTY=0
    say "fresh receiving Orthanc: pid $BPID (restart took $(sub "$EPOCHREALTIME" "$t0") s)"
}

# Per-run detail line on stderr.
detail() { # label rep wall sender_ticks receiver_ticks others_ticks extra
    say "rep $2 $1: $3 s; CPU s: sender $(ticks_to_s "$4"), receiver $(ticks_to_s "$5"), other processes $(ticks_to_s "$6")${7:+; $7}"
}

# ours RECEIVER SET VARIANT REP
ours() {
    local recv=$1 set=$2 variant=$3 rep=$4 sender=ours-${3%%-*}
    local cfg=$WORK/cfg-$1-$3 port api pid log body code task json status completed t0 t_end wall res
    local s0 s1 r0 r1 m0 m1 mark rpid deadline requests=""
    rpid=$(RECV_PID "$recv")
    port=$(free_port)
    api=http://127.0.0.1:$port/dcm4chee-arc
    log=$LOGS/serve-$recv-$set-$variant-$rep.log
    start_bg "$log" env RUST_LOG=info "$BIN" serve --config "$cfg" --data "$WORK/data-$set" --listen "127.0.0.1:$port"
    pid=$BG_PID
    for _ in $(seq 1 300); do
        curl -sf -o /dev/null "$api/ctrl/status" && break
        kill -0 "$pid" 2>/dev/null || { log_tail "$log"; die "serve exited at start"; }
        sleep 0.05
    done
    curl -sf -o /dev/null "$api/ctrl/status" || { log_tail "$log"; die "serve does not answer"; }
    [[ $recv == stowrsd ]] && mark=$(receiver_mark)
    m0=$(machine_ticks)
    s0=$(cpu_ticks "$pid")
    r0=$(cpu_ticks "$rpid")
    t0=$EPOCHREALTIME
    body=$(curl -sS -X POST -w '\n%{http_code}' "$api/aets/$AET/rs/studies/${STUDY[$set]}/export/$EXPORTER") ||
        { log_tail "$log"; die "export trigger failed"; }
    code=${body##*$'\n'}
    [[ $code == 202 && $body =~ \"taskID\":\"([^\"]+)\" ]] || die "export trigger answered $code: $body"
    task=${BASH_REMATCH[1]}
    deadline=$(awk -v t="$t0" 'BEGIN {printf "%d", t + 300}')
    # The end time comes from the task record, so polling only has to be
    # cheap: each poll forks a curl, CPU taken from the run on 2 cores.
    while :; do
        sleep 0.25
        json=$(curl -sS "$api/monitor/export/$task" 2>/dev/null) || json=""
        if [[ $json =~ \"status\":\"([A-Z ]+)\" ]]; then
            status=${BASH_REMATCH[1]}
            case $status in COMPLETED | WARNING | FAILED | CANCELED | "SCHEDULED FOR RETRY") break ;; esac
        fi
        kill -0 "$pid" 2>/dev/null || { log_tail "$log"; die "serve exited during the export"; }
        ((${EPOCHREALTIME%.*} < deadline)) || { log_tail "$log"; die "task $task not done within 300 s"; }
    done
    s1=$(cpu_ticks "$pid")
    r1=$(cpu_ticks "$rpid")
    m1=$(machine_ticks)
    stop_pid "$pid"
    [[ $json =~ \"completed\":([0-9]+) ]] && completed=${BASH_REMATCH[1]} || completed=-1
    [[ $status == COMPLETED && $completed == "${N[$set]}" ]] ||
        { echo "$json" >&2; log_tail "$log"; die "$sender $recv $set rep $rep: status $status, completed $completed of ${N[$set]}"; }
    [[ $json =~ \"processingEndTime\":\"([^\"]+)\" ]] && t_end=$(date -d "${BASH_REMATCH[1]}" +%s.%N) ||
        die "no processingEndTime in $json"
    wall=$(sub "$t_end" "$t0")
    # trigger -> task start (queue pickup) is part of the wall time
    local started="?"
    [[ $json =~ \"processingStartTime\":\"([^\"]+)\" ]] && started=$(sub "$(date -d "${BASH_REMATCH[1]}" +%s.%N)" "$t0")
    if [[ $recv == stowrsd ]]; then
        res=$(stowrsd_check "$sender $set rep $rep" "$mark" "${N[$set]}" "${BYTES[$set]}")
        read -r requests _ <<<"$res"
    else
        orthanc_check "$sender $set rep $rep" "$set"
        orthanc_clear "$set"
    fi
    record "$recv" "$set" "$sender" "$rep" "${N[$set]}" "${BYTES[$set]}" "$wall" "" $((s1 - s0)) $((r1 - r0)) "$(others_ticks "$m0" "$m1" $((s1 - s0)) $((r1 - r0)))" "$requests" "$(window_ticks "$m0" "$m1")"
    detail "$sender -> $recv, $set" "$rep" "$wall" $((s1 - s0)) $((r1 - r0)) "$(others_ticks "$m0" "$m1" $((s1 - s0)) $((r1 - r0)))" "task started at +$started s${requests:+, $requests requests}"
}

# orthanc_sender RECEIVER SET REP: synchronous POST .../servers/{name}/stow.
# wall = the whole call; net = up to the receiver's last stored instance
# (stowrsd: the time its response was logged; Orthanc: mtime of its SQLite
# index-wal), i.e. without the plugin's 0.5 s job polling.
orthanc_sender() {
    local recv=$1 set=$2 rep=$3 out code t0 t1 wall net t_last s0 s1 r0 r1 m0 m1 mark rpid res requests=""
    rpid=$(RECV_PID "$recv")
    [[ $recv == stowrsd ]] && mark=$(receiver_mark)
    m0=$(machine_ticks)
    s0=$(cpu_ticks "$APID")
    r0=$(cpu_ticks "$rpid")
    t0=$EPOCHREALTIME
    if ! out=$(curl -sS --max-time 600 -w '\n%{http_code}' -X POST "$AURL/dicom-web/servers/$recv/stow" \
        -d "{\"Resources\": [\"${OID[$set]}\"], \"Synchronous\": true}" 2>"$LOGS/orthanc-call.err"); then
        t1=$EPOCHREALTIME
        cat "$LOGS/orthanc-call.err" >&2
        kill -0 "$APID" 2>/dev/null || { log_tail "$WORK/orthanc-a/orthanc.log"; die "the sending Orthanc died during its STOW-RS call"; }
        log_tail "$WORK/orthanc-a/orthanc.log"
        die "Orthanc's STOW-RS call ($recv, $set, rep $rep) failed after $(sub "$t1" "$t0") s; the sending Orthanc is still running"
    fi
    t1=$EPOCHREALTIME
    s1=$(cpu_ticks "$APID")
    r1=$(cpu_ticks "$rpid")
    m1=$(machine_ticks)
    code=${out##*$'\n'}
    [[ $code == 200 && $out =~ \"InstancesCount\"\ *:\ *\"?([0-9]+) && ${BASH_REMATCH[1]} == "${N[$set]}" ]] ||
        die "orthanc -> $recv $set rep $rep: HTTP $code: ${out%$'\n'*}"
    wall=$(sub "$t1" "$t0")
    if [[ $recv == stowrsd ]]; then
        res=$(stowrsd_check "orthanc $set rep $rep" "$mark" "${N[$set]}" "${BYTES[$set]}")
        read -r requests t_last <<<"$res"
    else
        t_last=$(stat -c %.9Y "$BDIR/index/index-wal" 2>/dev/null) || die "no index-wal in $BDIR/index"
        orthanc_check "orthanc $set rep $rep" "$set"
        orthanc_clear "$set"
    fi
    net=$(sub "$t_last" "$t0")
    awk -v n="$net" -v w="$wall" 'BEGIN {exit !(n > 0 && n <= w + 0.01)}' ||
        die "orthanc -> $recv $set rep $rep: net time $net s outside (0, $wall]"
    record "$recv" "$set" orthanc "$rep" "${N[$set]}" "${BYTES[$set]}" "$wall" "$net" $((s1 - s0)) $((r1 - r0)) "$(others_ticks "$m0" "$m1" $((s1 - s0)) $((r1 - r0)))" "$requests" "$(window_ticks "$m0" "$m1")"
    detail "orthanc -> $recv, $set" "$rep" "$wall (net $net)" $((s1 - s0)) $((r1 - r0)) "$(others_ticks "$m0" "$m1" $((s1 - s0)) $((r1 - r0)))" "${requests:+$requests requests}"
}

# curl4 SET PER REP: CURL_CLIENTS curl processes in parallel into the
# receiving Orthanc, PER instances per request.
curl4() {
    local set=$1 per=$2 rep=$3 c timing wall user sys rc r0 r1 m0 m1 codes ok total
    local pfx=$WORK/curl-$set-$per
    m0=$(machine_ticks)
    r0=$(cpu_ticks "$BPID")
    timing=$WORK/curl-time
    set +e
    TIMEFORMAT='%3R %3U %3S'
    {
        time (
            pids=()
            for ((c = 0; c < CURL_CLIENTS; c++)); do
                [[ -e $pfx-$c.cfg ]] || continue
                curl -sS --no-progress-meter -K "$pfx-$c.cfg" >"$pfx-$c.codes" 2>"$LOGS/curl-$set-$per-$c.err" &
                pids+=($!)
            done
            rc=0
            for p in "${pids[@]}"; do wait "$p" || rc=1; done
            exit $rc
        )
    } 2>"$timing"
    rc=$?
    set -e
    r1=$(cpu_ticks "$BPID")
    m1=$(machine_ticks)
    ((rc == 0)) || { cat "$LOGS/curl-$set-$per-"*.err >&2; die "curl -> orthanc $set x$per rep $rep failed"; }
    read -r wall user sys <"$timing"
    total=$(cat "$pfx"-*.codes | wc -l)
    ok=$(cat "$pfx"-*.codes | grep -c '^200$' || true)
    codes=$(((N[$set] + per - 1) / per))
    [[ $total == "$codes" && $ok == "$codes" ]] || die "curl -> orthanc $set x$per rep $rep: $ok of $codes responses were 200"
    orthanc_check "curl $set x$per rep $rep" "$set"
    orthanc_clear "$set"
    local cticks
    cticks=$(awk -v u="$user" -v s="$sys" -v hz="$CLK_TCK" 'BEGIN {printf "%d", (u + s) * hz + 0.5}')
    record orthanc "$set" "curl-$per" "$rep" "${N[$set]}" "${BYTES[$set]}" "$wall" "" "$cticks" $((r1 - r0)) "$(others_ticks "$m0" "$m1" "$cticks" $((r1 - r0)))" "$codes" "$(window_ticks "$m0" "$m1")"
    detail "curl x$CURL_CLIENTS ($per/request) -> orthanc, $set" "$rep" "$wall" "$cticks" $((r1 - r0)) "$(others_ticks "$m0" "$m1" "$cticks" $((r1 - r0)))" "$codes requests"
}

run_one() { # receiver set sender rep
    [[ $1 == orthanc ]] && fresh_receiver
    quiet
    case $3 in
    ours-off) ours "$1" "$2" off "$4" ;;
    ours-on) ours "$1" "$2" "on-$2" "$4" ;;
    orthanc) orthanc_sender "$1" "$2" "$4" ;;
    curl-*) curl4 "$2" "${3#curl-}" "$4" ;;
    esac
}

# measure RECEIVER SET SENDER REP: one run on a machine as quiet as can be
# had; a run during which other processes used more than half a core on
# average is discarded and measured once more (at most BENCH_REDO_MAX runs
# in all, default 12).
REDO_LEFT=${BENCH_REDO_MAX:-12}
REDONE=0
measure() {
    run_one "$@"
    local others window
    read -r others window < <(tail -n 1 "$RESULTS" | awk -F '\t' '{print $11, $13}')
    # more than half a core on average (= more than 1/(2 x cores) of the
    # machine) and more than 0.2 s: harness noise in short runs is ignored
    if ((REDO_LEFT > 0 && others * 2 * $(nproc) > window && others * 5 > CLK_TCK)); then
        REDO_LEFT=$((REDO_LEFT - 1))
        REDONE=$((REDONE + 1))
        say "other processes used $(ticks_to_s "$others") s of CPU in that run's $(ticks_to_s $((window / $(nproc)))) s: discarded, measuring again"
        sed -i '$ d' "$RESULTS"
        run_one "$@"
    fi
}

senders_for() { # receiver set
    local s=(ours-off ours-on orthanc)
    if [[ $1 == orthanc ]]; then
        s+=(curl-1)
        [[ $2 == small && $CURL_SMALL_BATCH != 1 ]] && s+=("curl-$CURL_SMALL_BATCH")
    fi
    echo "${s[@]}"
}

# One untimed warm-up of each sender on the small set (first runs are
# slower: page cache, Orthanc's first job, allocator growth).
say "warm-up (not counted)"
RESULTS_REAL=$RESULTS
RESULTS=$WORK/warmup.tsv
for r in stowrsd orthanc; do
    for s in $(senders_for "$r" small); do run_one "$r" small "$s" 0; done
done
RESULTS=$RESULTS_REAL

say "running $REPS repetitions; the order of the senders rotates from one to the next, reversed every other one"
for rep in $(seq 1 "$REPS"); do
    for set in small large; do
        for r in stowrsd orthanc; do
            read -r -a list <<<"$(senders_for "$r" "$set")"
            k=$(((rep - 1) % ${#list[@]}))
            order=("${list[@]:k}" "${list[@]:0:k}")
            if ((rep % 2 == 0)); then
                for ((i = 0, j = ${#order[@]} - 1; i < j; i++, j--)); do
                    tmp=${order[i]} order[i]=${order[j]} order[j]=$tmp
                done
            fi
            for s in "${order[@]}"; do
                sync
                measure "$r" "$set" "$s" "$rep"
            done
        done
    done
done

# ---------------------------------------------------------------- report
MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
echo
echo "STOW-RS: stow-exporter vs Orthanc's sender — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) CPUs, ${MODEL:-unknown CPU}, $(awk '/^MemTotal/ {printf "%.0f GB RAM", $2 / 1048576}' /proc/meminfo), $(uname -sr)"
echo "orthanc $ORTHANC_VERSION, orthanc-dicomweb $DICOMWEB_VERSION, $(curl --version | awk 'NR == 1 {print $1, $2}'); REPS=$REPS (medians)"
echo "small: ${N[small]} x ${SMALL_SIDE}x${SMALL_SIDE}x16 bit, ${BYTES[small]} bytes; large: ${N[large]} x ${LARGE_SIDE}x${LARGE_SIDE}x16 bit, ${BYTES[large]} bytes"
echo "stow-exporter: batching off = ${PROPS[off]}; on = ${PROPS[on-small]} (small), ${PROPS[on-large]} (large); chunked=false"
echo "receiving Orthanc: storage and index on $(stat -f -c %T "$BDIR") under ${BENCH_ORTHANC_TMPDIR:-/dev/shm}, a fresh instance for each run; sending Orthanc: ChunkedTransfers true"
echo "runs started while other work kept the machine busy: $BUSY_STARTS; runs discarded and measured again because other processes used > 0.5 core: $REDONE"
echo "CPU 'others' = the machine's busy time during the run less sender and receiver (includes the harness's own polling)"
echo
python3 - "$RESULTS" "$CURL_CLIENTS" "$CLK_TCK" <<'PY'
import statistics, sys

rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
clients, hz = int(sys.argv[2]), int(sys.argv[3])

def runs(recv, s, sender):
    return [r for r in rows if r[0] == recv and r[1] == s and r[2] == sender]

def summ(rs, net=False):
    if not rs:
        return None
    col = 7 if net else 6
    n, b = int(rs[0][4]), int(rs[0][5])
    times = [float(r[col]) for r in rs]
    t = statistics.median(times)
    return {
        "t": t, "times": times, "ips": n / t, "mbs": b / 1e6 / t,
        "scpu": statistics.median(int(r[8]) for r in rs) / hz,
        "rcpu": statistics.median(int(r[9]) for r in rs) / hz,
        "ocpu": statistics.median(int(r[10]) for r in rs) / hz,
        "req": rs[0][11],
    }

out = ["| receiver | objects | sender | instances/s | MB/s | vs target | s (median; runs) | CPU s sender / receiver / others |",
       "|---|---|---|---:|---:|---|---|---|"]
verdicts = []
names = {"stowrsd": "stowrsd --ignore", "orthanc": "Orthanc (storing)"}
for recv in ("stowrsd", "orthanc"):
    for s in ("small", "large"):
        o_wait = summ(runs(recv, s, "orthanc"))
        o_net = summ(runs(recv, s, "orthanc"), net=True)
        curls = {x[2]: summ(runs(recv, s, x[2])) for x in rows if x[0] == recv and x[1] == s and x[2].startswith("curl-")}
        best_curl = max(curls.items(), key=lambda kv: kv[1]["ips"]) if curls else None
        metric = "ips" if s == "small" else "mbs"
        unit = "instances/s" if s == "small" else "MB/s"

        def vs(x, sender):
            if sender.startswith("curl-"):
                if sender == best_curl[0]:
                    return "reference (the faster curl)"
                return f"{x['ips'] / best_curl[1]['ips'] * 100:.0f}% of the faster curl"
            if recv == "stowrsd" and sender.startswith("orthanc-"):
                return "reference (net)" if sender == "orthanc-n" else "–"
            if recv == "stowrsd" and o_net:
                need = 1.0 if s == "small" else 1.2
                r_net, r_wait = x[metric] / o_net[metric], x[metric] / o_wait[metric]
                txt = f"{r_net:.2f}× Orthanc net, {r_wait:.2f}× waited ({unit})"
                if sender == "ours-on":
                    ok = r_net >= need
                    off = summ(runs(recv, s, "ours-off"))
                    extra = f"; batching off: {off[metric] / o_net[metric]:.2f}× net" if off else ""
                    verdicts.append((f"{names[recv]}, {s}: batching on ≥ {need:g}× Orthanc's sender (net {unit})", ok,
                                     f"{r_net:.2f}× net, {r_wait:.2f}× waited{extra}"))
                    return f"**{txt}; target ≥ {need:g}× net: {'PASS' if ok else 'FAIL'}**"
                return txt
            if recv == "orthanc" and best_curl:
                ratio = x["ips"] / best_curl[1]["ips"]
                txt = f"{ratio * 100:.0f}% of curl ×{clients} ({best_curl[0][5:]}/req)"
                if sender == "ours-on":
                    ok = ratio >= 0.9
                    off = summ(runs(recv, s, "ours-off"))
                    extra = f"; batching off: {off['ips'] / best_curl[1]['ips'] * 100:.0f}%" if off else ""
                    verdicts.append((f"{names[recv]}, {s}: batching on within 10% of curl ×{clients} ({best_curl[0][5:]}/request)",
                                     ok, f"{ratio * 100:.0f}%{extra}"))
                    return f"**{txt}; target ≥ 90%: {'PASS' if ok else 'FAIL'}**"
                return txt
            return "–"

        def line(sender_name, x, sender, net=False):
            t = ", ".join(f"{v:.2f}" for v in x["times"])
            req = f", {x['req']} req" if x["req"] else ""
            out.append(f"| {names[recv]} | {s} | {sender_name} | {x['ips']:.0f} | {x['mbs']:.1f} | {vs(x, sender)} "
                       f"| {x['t']:.2f} ({t}) | {x['scpu']:.2f} / {x['rcpu']:.2f} / {x['ocpu']:.2f}{req} |")

        for sender, label in (("ours-off", "stow-exporter, batching off"), ("ours-on", "stow-exporter, batching on")):
            x = summ(runs(recv, s, sender))
            if x:
                line(label, x, sender)
        if o_wait:
            line("Orthanc sender, waited", o_wait, "orthanc-w")
            line("Orthanc sender, net of polling", o_net, "orthanc-n")
        for k in sorted(curls, key=lambda k: int(k[5:])):
            line(f"curl ×{clients}, {k[5:]}/request", curls[k], k)
print("\n".join(out))
print()
for what, ok, detail in verdicts:
    print(f"- {what}: {'PASS' if ok else 'FAIL'} ({detail})")
PY
