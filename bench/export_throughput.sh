#!/usr/bin/env bash
# Export throughput and memory benchmark of stow-exporter against the
# built-in STOW-RS receiver, with "the simplest possible client" (one curl
# process, 4 parallel transfers) as the reference in the same run. A second
# curl run streams the same bodies from disk (upload-file) instead of loading
# them all into memory first (data-binary): shown for comparison.
#
# Usage: bench/export_throughput.sh [N=2000] [REPS=3]
#
# See bench/README.md. Everything runs on 127.0.0.1; every process the script
# starts is stopped by its PID on exit; the work dir (mktemp -d) is removed.
# Environment: BENCH_DURABILITY=1 (also run serve with
# --sqlite-synchronous normal in every repetition, next to the default full:
# what the durable task store costs; bench/hostile.sh sets it),
# BENCH_TMPDIR (parent of the work dir, default /tmp),
# BENCH_KEEP=1 (keep the work dir with its logs, for debugging),
# CARGO_TARGET_DIR (as cargo), RUST_LOG (log level of serve and import,
# default info; the receiver always logs at info: its log is checked).
set -Eeuo pipefail

N=${1:-2000}
REPS=${2:-3}
CONCURRENCY=4
ROWS=512
COLUMNS=512
AET=DCM4CHEE1
EXPORTER=STOWRSD
STOWRSD_WEBAPP_DN='dcmWebAppName=stowrsd,dicomDeviceName=stowrsd,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org'

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

[[ $N =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer (got '$N'); usage: $0 [N=2000] [REPS=3]"
[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive integer (got '$REPS'); usage: $0 [N=2000] [REPS=3]"
N2=$((N * 2))

for tool in cargo curl python3 awk date; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

# curl must support parallel transfers (-Z, since 7.66.0).
CURL_VERSION=$(curl --version | awk 'NR==1 {print $2}')
if [[ $(printf '%s\n' 7.66.0 "$CURL_VERSION" | sort -V | head -n1) != 7.66.0 ]] ||
    ! curl --help all 2>/dev/null | grep -q -- '--parallel-max'; then
    die "curl $CURL_VERSION does not support -Z/--parallel-max (needs >= 7.66.0)"
fi

# CPU time (user+system, clock ticks) of a process.
cpu_ticks() {
    local stat
    if ! stat=$(cat "/proc/$1/stat" 2>/dev/null); then
        [[ $1 == "${RPID:-}" ]] && log_tail "$LOGS/stowrsd.log"
        die "process $1 is no longer running"
    fi
    awk '{print $14 + $15}' <<<"$stat"
}
CLK_TCK=$(getconf CLK_TCK)
# Busy CPU time of the whole machine (user+nice+system+irq+softirq+steal) and
# steal alone, in clock ticks: "busy steal".
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $9; exit}' /proc/stat; }
# "other CPU s, steal s" between two machine_ticks readings, less OURS ticks.
others() { # before after ours_ticks
    local b0 s0 b1 s1
    read -r b0 s0 <<<"$1"
    read -r b1 s1 <<<"$2"
    echo "other processes $(ticks_to_s $((b1 - b0 - s1 + s0 - $3))) s, steal $(ticks_to_s $((s1 - s0))) s"
}
ticks_to_s() { awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", t / hz}'; }

# Sum of the sizes of the *.dcm files in a folder.
dir_bytes() { find "$1" -maxdepth 1 -name '*.dcm' -printf '%s\n' | awk '{s += $1} END {printf "%d", s}'; }


# ------------------------------------------------------------------ build
say "building release binaries (cargo skips this when up to date)"
(cd "$ROOT" && cargo build --release --bin stow-exporter --example synth) ||
    die "cargo build --release failed"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET == /* ]] || TARGET=$ROOT/$TARGET
BIN=$TARGET/release/stow-exporter
SYNTH=$TARGET/release/examples/synth
[[ -x $BIN ]] || die "$BIN not found after the build"
[[ -x $SYNTH ]] || die "$SYNTH not found after the build"

WORK=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/stow-bench.XXXXXX") ||
    die "cannot create a work dir under ${BENCH_TMPDIR:-/tmp}"
LOGS=$WORK/logs
mkdir -p "$LOGS"
export RUST_LOG=${RUST_LOG:-info}
export NO_COLOR=1

# Sets N and 2N as generated and as imported, plus the N request bodies:
# 7 x N objects of ~0.53 MB.
need_kb=$(awk -v n="$N" -v r="$ROWS" -v c="$COLUMNS" 'BEGIN {printf "%d", 7 * n * (r * c * 2 + 4096) / 1024}')
avail_kb=$(df -Pk "$WORK" | awk 'NR == 2 {print $4}')
((avail_kb > need_kb)) ||
    die "$WORK: $((avail_kb / 1024)) MiB free, the benchmark needs about $((need_kb / 1024)) MiB (set BENCH_TMPDIR)"
say "work dir $WORK (needs about $((need_kb / 1024)) MiB, $((avail_kb / 1024)) MiB free)"

# ------------------------------------------------------------ test data
gen() { # dir count -> study UID
    local uid
    uid=$("$SYNTH" --out "$1" --count "$2" --rows "$ROWS" --columns "$COLUMNS") ||
        die "synth --out $1 --count $2 failed"
    [[ -n $uid ]] || die "synth printed no study UID"
    echo "$uid"
}
say "generating $N + $N2 synthetic CT instances (${ROWS}x${COLUMNS}x16 bits)"
t=$(now)
STUDY_N=$(gen "$WORK/src-n" "$N")
STUDY_2N=$(gen "$WORK/src-2n" "$N2")
say "generated in $(sub "$(now)" "$t") s"
BYTES_N=$(dir_bytes "$WORK/src-n")
BYTES_2N=$(dir_bytes "$WORK/src-2n")
say "set N : $N instances, $BYTES_N bytes, study $STUDY_N"
say "set 2N: $N2 instances, $BYTES_2N bytes, study $STUDY_2N"

# -------------------------------------------------------------- receiver
RPORT=$(free_port)
# At info level the receiver logs one line per request (parts, bytes,
# status): the runs are checked against it.
start_bg "$LOGS/stowrsd.log" env RUST_LOG=info "$BIN" stowrsd --bind "127.0.0.1:$RPORT" --ignore
RPID=$BG_PID
STOW_URL="http://127.0.0.1:$RPORT/stowrs/studies"
for _ in $(seq 1 100); do
    kill -0 "$RPID" 2>/dev/null || { log_tail "$LOGS/stowrsd.log"; die "stowrsd exited at start"; }
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$RPORT/" || true)
    [[ $code != 000 ]] && break
    sleep 0.1
done
[[ $code != 000 ]] || { log_tail "$LOGS/stowrsd.log"; die "stowrsd does not answer on 127.0.0.1:$RPORT"; }
say "stowrsd (pid $RPID) on 127.0.0.1:$RPORT, --ignore"

# ---------------------------------------------------------------- config
CFG=$WORK/config
mkdir -p "$CFG"
for f in "$ROOT"/ldif/*.ldif; do
    sed "s/^dicomPort: 18080\$/dicomPort: $RPORT/" "$f" >"$CFG/$(basename "$f")"
done
grep -q "^dicomPort: $RPORT\$" "$CFG"/*.ldif || die "no 'dicomPort: 18080' to replace in ldif/"
cat >"$CFG/99-bench.ldif" <<EOF
version: 1

dn: $STOWRSD_WEBAPP_DN
changetype: modify
add: dcmProperty
dcmProperty: concurrency=$CONCURRENCY
-

EOF
"$BIN" check-config --config "$CFG" >"$LOGS/check-config.txt" 2>&1 ||
    { cat "$LOGS/check-config.txt" >&2; die "the benchmark configuration is invalid"; }
grep -E "^$EXPORTER .*127\.0\.0\.1:$RPORT/stowrs/studies.*\"concurrency\":$CONCURRENCY[,}]" "$LOGS/check-config.txt" >/dev/null ||
    { cat "$LOGS/check-config.txt" >&2; die "exporter $EXPORTER is not configured as expected"; }

# ---------------------------------------------------------------- import
declare -A IMPORT_S
import_set() { # label src data count bytes
    local label=$1 src=$2 data=$3 count=$4 bytes=$5 t0 t1 out
    t0=$(now)
    out=$("$BIN" import --data "$data" "$src" 2>>"$LOGS/import.log") ||
        { echo "$out" >&2; log_tail "$LOGS/import.log"; die "import of set $label failed"; }
    t1=$(now)
    [[ $out == "imported $count new, 0 already stored, 0 failed"* ]] ||
        die "import of set $label: unexpected result: $out"
    IMPORT_S[$label]=$(sub "$t1" "$t0")
    say "import $label: $out in ${IMPORT_S[$label]} s ($(awk -v n="$count" -v b="$bytes" -v s="${IMPORT_S[$label]}" \
        'BEGIN {printf "%.0f instances/s, %.1f MB/s", n / s, b / 1e6 / s}'))"
}
import_set N "$WORK/src-n" "$WORK/data-n" "$N" "$BYTES_N"
import_set 2N "$WORK/src-2n" "$WORK/data-2n" "$N2" "$BYTES_2N"

# --------------------------------------------------- curl reference input
say "building $N multipart bodies and the curl config"
# curl.cfg: --data-binary @body (the reference: curl reads every body into
# memory while parsing the config); curl-stream.cfg: --upload-file body with
# POST (streamed from disk).
python3 - "$WORK/src-n" "$WORK/bodies" "$WORK/curl.cfg" "$WORK/curl-stream.cfg" "$STOW_URL" <<'PY'
import os, sys

src, out, cfg, cfg_stream, url = sys.argv[1:]
names = [f for f in os.listdir(src) if f.endswith(".dcm")]
names.sort(key=lambda f: (0, int(f[:-4]), "") if f[:-4].isdigit() else (1, 0, f))
os.makedirs(out, exist_ok=True)
head = b"--B\r\nContent-Type: application/dicom\r\n\r\n"
tail = b"\r\n--B--\r\n"

def q(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

common = (
    'header = "Content-Type: multipart/related; type=\\"application/dicom\\"; boundary=B"\n'
    'header = "Accept: application/dicom+json"\n'
    'header = "Expect:"\n'
    'output = "/dev/null"\n'
    'write-out = "%{http_code}\\n"\n'
)
with open(cfg, "w") as c, open(cfg_stream, "w") as cs:
    for i, name in enumerate(names):
        with open(os.path.join(src, name), "rb") as f:
            data = f.read()
        if b"\r\n--B" in data:
            sys.exit(f"{name}: the boundary delimiter occurs in the file; cannot use boundary B")
        body = os.path.join(out, f"{i}.body")
        with open(body, "wb") as f:
            f.write(head + data + tail)
        if i:
            c.write("next\n")
            cs.write("next\n")
        c.write(f"url = {q(url)}\ndata-binary = {q('@' + body)}\n{common}")
        cs.write(f'url = {q(url)}\nupload-file = {q(body)}\nrequest = "POST"\n{common}')
PY
[[ $(find "$WORK/bodies" -name '*.body' | wc -l) -eq $N ]] || die "expected $N bodies"

# Write back what was generated so that writeback does not compete with
# the runs (the data stays in the page cache).
say "sync (writing back the generated data)"
sync

# ------------------------------------------------------------------ runs
# Lines of the receiver log so far.
receiver_mark() { wc -l <"$LOGS/stowrsd.log"; }
# Checks that the receiver acknowledged exactly COUNT single-instance
# requests with BYTES part bytes in total since MARK.
receiver_check() { # what mark count bytes
    local what=$1 mark=$2 count=$3 bytes=$4 seen
    seen=$(tail -n "+$((mark + 1))" "$LOGS/stowrsd.log" | awk '
        /STOW-RS request/ {
            n++
            if ($0 ~ / status=200 / && $0 ~ / parts=1 / && $0 ~ / stored=1 /) ok++
            if (match($0, / bytes=[0-9]+/)) b += substr($0, RSTART + 7, RLENGTH - 7)
        }
        END {printf "%d %d %d", n, ok, b}')
    [[ $seen == "$count $count $bytes" ]] ||
        die "$what: the receiver saw requests/acknowledged/bytes = $seen, expected $count $count $bytes"
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"

# ours LABEL DATA STUDY COUNT BYTES REP [SYNCHRONOUS]: SYNCHRONOUS is the
# task store's --sqlite-synchronous (default: serve's own, full); a run
# with one is recorded as kind ours-SYNCHRONOUS.
ours() {
    local label=$1 data=$2 study=$3 count=$4 bytes=$5 rep=$6 sync=${7:-}
    local kind=ours extra=()
    if [[ -n $sync ]]; then
        kind=ours-$sync
        extra=(--sqlite-synchronous "$sync")
    fi
    local port api pid log code body task status completed json t0 t_poll wall pet t_end
    local s0 r0 s1 r1 hwm deadline mark m0 m1
    port=$(free_port)
    api="http://127.0.0.1:$port/dcm4chee-arc"
    log="$LOGS/serve-$label-$rep.log"
    start_bg "$log" "$BIN" serve --config "$CFG" --data "$data" --listen "127.0.0.1:$port" ${extra[@]+"${extra[@]}"}
    pid=$BG_PID
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || { log_tail "$log"; die "serve exited at start"; }
        if curl -sf -o /dev/null "$api/ctrl/status"; then break; fi
        sleep 0.1
    done
    curl -sf -o /dev/null "$api/ctrl/status" || { log_tail "$log"; die "serve does not answer on $api/ctrl/status"; }

    mark=$(receiver_mark)
    m0=$(machine_ticks)
    s0=$(cpu_ticks "$pid")
    r0=$(cpu_ticks "$RPID")
    t0=$(now)
    body=$(curl -sS -X POST -w '\n%{http_code}' "$api/aets/$AET/rs/studies/$study/export/$EXPORTER") ||
        { log_tail "$log"; die "export trigger failed"; }
    code=${body##*$'\n'}
    body=${body%$'\n'*}
    [[ $code == 202 ]] || die "export trigger answered HTTP $code: $body"
    [[ $body =~ \"taskID\":\"([^\"]+)\" ]] || die "no taskID in the trigger response: $body"
    task=${BASH_REMATCH[1]}

    deadline=$(awk -v t="$t0" -v n="$count" 'BEGIN {printf "%d", t + 120 + n * 0.5}')
    status=""
    while :; do
        sleep 0.1
        kill -0 "$pid" 2>/dev/null || { log_tail "$log"; die "serve exited during the export"; }
        json=$(curl -sS "$api/monitor/export/$task" 2>/dev/null) || json=""
        if [[ $json =~ \"status\":\"([A-Z ]+)\" ]]; then
            status=${BASH_REMATCH[1]}
            case $status in COMPLETED | WARNING | FAILED | CANCELED) break ;; esac
        fi
        if (($(date +%s) > deadline)); then
            log_tail "$log"
            die "task $task not done in time (last status '$status')"
        fi
    done
    t_poll=$(now)
    s1=$(cpu_ticks "$pid")
    r1=$(cpu_ticks "$RPID")
    m1=$(machine_ticks)
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
    stop_pid "$pid"

    [[ $json =~ \"completed\":([0-9]+) ]] && completed=${BASH_REMATCH[1]} || completed=-1
    if [[ $status != COMPLETED || $completed != "$count" ]]; then
        echo "$json" >&2
        log_tail "$log"
        die "export of set $label (rep $rep): status $status, completed $completed of $count"
    fi
    receiver_check "export of set $label (rep $rep)" "$mark" "$count" "$bytes"
    # End of the export from the task record (the poll interval would add
    # up to 0.1 s); the poll time bounds it.
    wall=$(sub "$t_poll" "$t0")
    if [[ $json =~ \"processingEndTime\":\"([^\"]+)\" ]]; then
        pet=${BASH_REMATCH[1]}
        if t_end=$(date -d "$pet" +%s.%N 2>/dev/null); then
            wall=$(awk -v e="$t_end" -v s="$t0" -v p="$wall" \
                'BEGIN {w = e - s; if (w > 0 && w <= p + 0.05) printf "%.3f", w; else printf "%.3f", p}')
        fi
    fi
    # Where the time went: trigger -> task start (queue pickup) -> task end.
    local pst="" start_s="?"
    if [[ $json =~ \"processingStartTime\":\"([^\"]+)\" ]] && pst=$(date -d "${BASH_REMATCH[1]}" +%s.%N 2>/dev/null); then
        start_s=$(sub "$pst" "$t0")
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$label" "$rep" "$count" "$bytes" "$wall" \
        "$(ticks_to_s $((s1 - s0)))" "$(ticks_to_s $((r1 - r0)))" "$hwm" >>"$RESULTS"
    say "rep $rep $kind set $label: $wall s, $(awk -v n="$count" -v w="$wall" 'BEGIN {printf "%.1f", n / w}') instances/s," \
        "serve CPU $(ticks_to_s $((s1 - s0))) s, stowrsd CPU $(ticks_to_s $((r1 - r0))) s, peak RSS $(awk -v k="$hwm" 'BEGIN {printf "%.1f", k * 1024 / 1e6}') MB (task started at +$start_s s); $(others "$m0" "$m1" $((s1 - s0 + r1 - r0)))"
}

# reference KIND CFG REP: one curl process, -Z --parallel-max 4, all N bodies.
reference() {
    local kind=$1 cfg=$2 rep=$3
    local codes=$WORK/$kind-codes-$3.txt timing=$WORK/$kind-time-$3.txt rc r0 r1 wall user sys ok lines mark m0 m1 cticks
    mark=$(receiver_mark)
    m0=$(machine_ticks)
    r0=$(cpu_ticks "$RPID")
    set +e
    TIMEFORMAT='%3R %3U %3S'
    { time curl -s -S -Z --parallel-max "$CONCURRENCY" -K "$cfg" >"$codes" 2>"$LOGS/$kind-$rep.err"; } 2>"$timing"
    rc=$?
    set -e
    r1=$(cpu_ticks "$RPID")
    m1=$(machine_ticks)
    [[ $rc -eq 0 ]] || { cat "$LOGS/$kind-$rep.err" >&2; die "$kind rep $rep: curl exited with $rc"; }
    read -r wall user sys <"$timing"
    lines=$(wc -l <"$codes")
    ok=$(grep -c '^200$' "$codes" || true)
    [[ $lines -eq $N && $ok -eq $N ]] ||
        die "$kind rep $rep: $ok of $N responses were 200 ($lines responses: $(sort "$codes" | uniq -c | tr '\n' ' '))"
    receiver_check "$kind rep $rep" "$mark" "$N" "$BYTES_N"
    printf '%s\tN\t%s\t%s\t%s\t%s\t%s\t%s\t\n' "$kind" "$rep" "$N" "$BYTES_N" "$wall" \
        "$(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.2f", u + s}')" "$(ticks_to_s $((r1 - r0)))" >>"$RESULTS"
    cticks=$(awk -v u="$user" -v s="$sys" -v hz="$CLK_TCK" 'BEGIN {printf "%d", (u + s) * hz + 0.5}')
    say "rep $rep $kind set N: $wall s, $(awk -v n="$N" -v w="$wall" 'BEGIN {printf "%.1f", n / w}') instances/s," \
        "curl CPU $(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.2f", u + s}') s, stowrsd CPU $(ticks_to_s $((r1 - r0))) s;" \
        "$(others "$m0" "$m1" $((cticks + r1 - r0)))"
}

say "running $REPS repetitions (ours and curl alternate; set N = $N instances)"
for rep in $(seq 1 "$REPS"); do
    if ((rep % 2)); then
        ours N "$WORK/data-n" "$STUDY_N" "$N" "$BYTES_N" "$rep"
        reference curl "$WORK/curl.cfg" "$rep"
        reference curl-stream "$WORK/curl-stream.cfg" "$rep"
    else
        reference curl-stream "$WORK/curl-stream.cfg" "$rep"
        reference curl "$WORK/curl.cfg" "$rep"
        ours N "$WORK/data-n" "$STUDY_N" "$N" "$BYTES_N" "$rep"
    fi
    # RSS flatness (and throughput) with twice the instances.
    ours 2N "$WORK/data-2n" "$STUDY_2N" "$N2" "$BYTES_2N" "$rep"
    # The durable task store (full, the default) against normal, in turn.
    if [[ ${BENCH_DURABILITY:-0} == 1 ]]; then
        if ((rep % 2)); then
            ours N "$WORK/data-n" "$STUDY_N" "$N" "$BYTES_N" "$rep" normal
            ours N "$WORK/data-n" "$STUDY_N" "$N" "$BYTES_N" "$rep" full
        else
            ours N "$WORK/data-n" "$STUDY_N" "$N" "$BYTES_N" "$rep" full
            ours N "$WORK/data-n" "$STUDY_N" "$N" "$BYTES_N" "$rep" normal
        fi
    fi
done

stop_pid "$RPID"

# ---------------------------------------------------------------- report
MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
echo
echo "stow-exporter export throughput — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) CPUs, ${MODEL:-unknown CPU}, $(awk '/^MemTotal/ {printf "%.0f GB RAM", $2 / 1048576}' /proc/meminfo), $(uname -sr)"
echo "curl $CURL_VERSION; N=$N instances of ${ROWS}x${COLUMNS}x16 bits ($BYTES_N bytes), REPS=$REPS, concurrency=$CONCURRENCY, receiver: stowrsd --ignore"
echo "import: N $(awk -v n="$N" -v b="$BYTES_N" -v s="${IMPORT_S[N]}" 'BEGIN {printf "%.1f s, %.0f instances/s, %.1f MB/s", s, n / s, b / 1e6 / s}');" \
    "2N $(awk -v n="$N2" -v b="$BYTES_2N" -v s="${IMPORT_S[2N]}" 'BEGIN {printf "%.1f s, %.0f instances/s, %.1f MB/s", s, n / s, b / 1e6 / s}')"
echo
python3 - "$RESULTS" <<'PY'
import statistics, sys

rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
def pick(kind, label):
    return [r for r in rows if r[0] == kind and r[1] == label]

def summary(rs):
    count, nbytes = int(rs[0][3]), int(rs[0][4])
    wall = statistics.median(float(r[5]) for r in rs)
    return {
        "runs": len(rs), "count": count, "wall": wall,
        "walls": ", ".join(f"{float(r[5]):.2f}" for r in rs),
        "ips": count / wall, "mbs": nbytes / 1e6 / wall,
        "cpu": statistics.median(float(r[6]) for r in rs),
        "rcpu": statistics.median(float(r[7]) for r in rs),
        # VmHWM is in KiB; report MB (10^6 bytes)
        "rss": max(int(r[8]) for r in rs) * 1024 / 1e6 if rs[0][8] else None,
    }

curl = summary(pick("curl", "N"))
stream = summary(pick("curl-stream", "N")) if pick("curl-stream", "N") else None
lines = [
    "| client | instances | runs | wall s (median; all) | instances/s | MB/s | vs curl reference | vs curl streamed "
    "| client CPU s | stowrsd CPU s | peak RSS MB |",
    "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
]
rows_out = (
    ("curl -Z --data-binary (reference)", "curl", "N"),
    ("curl -Z --upload-file (streamed)", "curl-stream", "N"),
    ("stow-exporter serve", "ours", "N"),
    ("stow-exporter serve", "ours", "2N"),
    ("stow-exporter serve --sqlite-synchronous full", "ours-full", "N"),
    ("stow-exporter serve --sqlite-synchronous normal", "ours-normal", "N"),
)
for name, kind, label in rows_out:
    rs = pick(kind, label)
    if not rs:
        continue
    s = summary(rs)
    vs_ref = f"{s['ips'] / curl['ips'] * 100:.0f}%"
    vs_stream = f"{s['ips'] / stream['ips'] * 100:.0f}%" if stream else "–"
    rss = f"{s['rss']:.1f}" if s["rss"] is not None else "–"
    lines.append(
        f"| {name} | {s['count']} | {s['runs']} | {s['wall']:.2f} ({s['walls']}) | {s['ips']:.1f} | {s['mbs']:.1f} "
        f"| {vs_ref} | {vs_stream} | {s['cpu']:.2f} | {s['rcpu']:.2f} | {rss} |"
    )
print("\n".join(lines))
full, normal = pick("ours-full", "N"), pick("ours-normal", "N")
if full and normal:
    f, n = summary(full), summary(normal)
    loss = 1 - f["ips"] / n["ips"]
    print()
    print(f"durability: full {f['ips']:.1f} instances/s, normal {n['ips']:.1f} instances/s: "
          f"{loss * 100:.1f}% slower with full (target < 15%): {'PASS' if loss < 0.15 else 'FAIL'}")
ours_n, ours_2n = pick("ours", "N"), pick("ours", "2N")
if ours_n and ours_2n:
    a, b = summary(ours_n), summary(ours_2n)
    ratio = a["ips"] / curl["ips"]
    print()
    print(f"throughput: {ratio * 100:.0f}% of the curl reference (target >= 80%): {'PASS' if ratio >= 0.8 else 'FAIL'}"
          + (f"; {a['ips'] / stream['ips'] * 100:.0f}% of streamed curl" if stream else ""))
    flat = b["rss"] <= a["rss"] * 1.2 + 5
    print(f"peak RSS: {a['rss']:.1f} MB for N, {b['rss']:.1f} MB for 2N (target < 100 MB, flat): "
          f"{'PASS' if a['rss'] < 100 and b['rss'] < 100 and flat else 'FAIL'}")
PY
