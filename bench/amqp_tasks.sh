#!/usr/bin/env bash
# AMQP task throughput and latency of stow-exporter: tasks per second through
# RabbitMQ to a no-op STOW-RS destination, and latency from publish to the
# first byte at the receiver, with the embedded queue's latency (REST
# trigger) as the comparison in the same run.
#
# Usage: bench/amqp_tasks.sh [N=1000] [LAT_N=200] [SPACING_MS=20]
#
# See bench/README.md. Needs the RabbitMQ broker on 127.0.0.1:5672
# (guest/guest; BENCH_AMQP_URL to change) and python3 with pika (installed
# with pip when missing). The queues are named uniquely and deleted at exit.
# Everything runs on 127.0.0.1; every process the script starts is stopped by
# its PID on exit; the work dir (mktemp -d) is removed.
# Environment: BENCH_TMPDIR (parent of the work dir, default /tmp),
# BENCH_KEEP=1 (keep the work dir with its logs), CARGO_TARGET_DIR (as
# cargo), RUST_LOG (log level of serve and import, default info).
set -Eeuo pipefail

N=${1:-1000}
LAT_N=${2:-200}
SPACING_MS=${3:-20}
PARALLEL=4
AET=DCM4CHEE1
AMQP_URL=${BENCH_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
DEVICE='dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org'
QUEUE=B$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
EXPORTER=${QUEUE}X

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PUB=$ROOT/bench/amqp_publish.py

die() {
    echo "error: $*" >&2
    exit 1
}
say() { echo "== $*" >&2; }

usage="usage: $0 [N=1000] [LAT_N=200] [SPACING_MS=20]"
[[ $N =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer (got '$N'); $usage"
[[ $LAT_N =~ ^[1-9][0-9]*$ ]] || die "LAT_N must be a positive integer (got '$LAT_N'); $usage"
[[ $SPACING_MS =~ ^[0-9]+$ ]] || die "SPACING_MS must be a non-negative integer (got '$SPACING_MS'); $usage"
((LAT_N <= N)) || die "LAT_N ($LAT_N) must not exceed N ($N)"

for tool in cargo curl python3 awk date; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
if ! python3 -c 'import pika' 2>/dev/null; then
    say "installing pika with pip"
    python3 -m pip install --quiet pika || die "cannot install pika (python3 -m pip install pika)"
fi

# ---------------------------------------------------------------- cleanup
PIDS=()
WORK=""
QUEUES_DECLARED=0

stop_pid() {
    local pid=$1 watchdog
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        (sleep 15 && kill -KILL "$pid" 2>/dev/null) >/dev/null 2>&1 &
        watchdog=$!
        wait "$pid" 2>/dev/null || true
        kill "$watchdog" 2>/dev/null || true
        wait "$watchdog" 2>/dev/null || true
    else
        wait "$pid" 2>/dev/null || true
    fi
    local keep=() p
    for p in ${PIDS[@]+"${PIDS[@]}"}; do
        [[ $p == "$pid" ]] || keep+=("$p")
    done
    PIDS=(${keep[@]+"${keep[@]}"})
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM ERR
    local p
    for p in ${PIDS[@]+"${PIDS[@]}"}; do
        stop_pid "$p"
    done
    if ((QUEUES_DECLARED)); then
        python3 "$PUB" delete "$AMQP_URL" "$QUEUE" "$QUEUE.retry" "$QUEUE.hold" "$QUEUE.dlq" ||
            echo "warning: could not delete the queues $QUEUE{,.retry,.hold,.dlq}" >&2
    fi
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ ${BENCH_KEEP:-0} == 1 ]]; then
            echo "kept the work dir $WORK (BENCH_KEEP=1)" >&2
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_bg() {
    local log=$1
    shift
    "$@" >>"$log" 2>&1 &
    BG_PID=$!
    PIDS+=("$BG_PID")
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

log_tail() {
    echo "--- last lines of $1:" >&2
    tail -n 20 "$1" >&2 || true
}

wait_http() { # pid log url
    local _
    for _ in $(seq 1 300); do
        kill -0 "$1" 2>/dev/null || { log_tail "$2"; die "$1 exited at start"; }
        [[ $(curl -s -o /dev/null -w '%{http_code}' "$3" || true) != 000 ]] && return 0
        sleep 0.1
    done
    log_tail "$2"
    die "nothing answers on $3"
}

# ------------------------------------------------------------------ build
say "building release binaries (cargo skips this when up to date)"
(cd "$ROOT" && cargo build --release --bin stow-exporter --example synth) ||
    die "cargo build --release failed"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET == /* ]] || TARGET=$ROOT/$TARGET
BIN=$TARGET/release/stow-exporter
SYNTH=$TARGET/release/examples/synth
[[ -x $BIN && -x $SYNTH ]] || die "release binaries not found after the build"

WORK=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/stow-amqp-bench.XXXXXX") ||
    die "cannot create a work dir under ${BENCH_TMPDIR:-/tmp}"
LOGS=$WORK/logs
mkdir -p "$LOGS"
export RUST_LOG=${RUST_LOG:-info}
export NO_COLOR=1

python3 "$PUB" delete "$AMQP_URL" "$QUEUE" >/dev/null 2>&1 ||
    die "RabbitMQ does not answer at $AMQP_URL (guest/guest on 127.0.0.1:5672)"
QUEUES_DECLARED=1
say "broker OK; queue $QUEUE, exporter $EXPORTER; work dir $WORK"

# ------------------------------------------------------------ test data
say "generating $N studies of one 16x16 instance each"
t=$EPOCHREALTIME
: >"$WORK/studies.txt"
for i in $(seq 1 "$N"); do
    "$SYNTH" --out "$WORK/src/$i" --count 1 --rows 16 --columns 16 >>"$WORK/studies.txt" ||
        die "synth failed"
done
[[ $(sort -u "$WORK/studies.txt" | wc -l) -eq $N ]] || die "expected $N distinct study UIDs"
say "generated in $(awk -v a="$EPOCHREALTIME" -v b="$t" 'BEGIN {printf "%.1f", a - b}') s"
out=$("$BIN" import --data "$WORK/data" "$WORK/src" 2>>"$LOGS/import.log") ||
    { echo "$out" >&2; log_tail "$LOGS/import.log"; die "import failed"; }
[[ $out == "imported $N new, 0 already stored, 0 failed"* ]] || die "import: unexpected result: $out"
say "import: $out"
head -n "$LAT_N" "$WORK/studies.txt" >"$WORK/lat-studies.txt"

# -------------------------------------------------------------- receivers
# No-op destination for the throughput run: the built-in receiver.
SPORT=$(free_port)
start_bg "$LOGS/stowrsd.log" "$BIN" stowrsd --bind "127.0.0.1:$SPORT" --ignore
SPID=$BG_PID
wait_http "$SPID" "$LOGS/stowrsd.log" "http://127.0.0.1:$SPORT/"

# Measuring receiver for the latency runs: records time.time_ns() when the
# first bytes of each request arrive, reads the whole body, and answers 200
# with a ReferencedSOPSequence naming the instance (from the file meta).
cat >"$WORK/receiver.py" <<'PY'
import asyncio, json, sys, time

port, log = int(sys.argv[1]), open(sys.argv[2], "a", buffering=1)

def ui(body, tag):
    i = body.find(tag + b"UI")
    if i < 0:
        return ""
    n = int.from_bytes(body[i + 6:i + 8], "little")
    return body[i + 8:i + 8 + n].rstrip(b"\0 ").decode()

async def handle(reader, writer):
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                if not buf:
                    t = time.time_ns()
                buf += chunk
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method = lines[0].split(" ", 1)[0]
            hdr = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
            if "chunked" in hdr.get("transfer-encoding", "").lower():
                body = b""
                while True:
                    while b"\r\n" not in buf:
                        buf += await reader.read(65536)
                    size, buf = buf.split(b"\r\n", 1)
                    size = int(size.split(b";")[0], 16)
                    while len(buf) < size + 2:
                        buf += await reader.read(65536)
                    body, buf = body + buf[:size], buf[size + 2:]
                    if size == 0:
                        break
            else:
                n = int(hdr.get("content-length", "0"))
                while len(buf) < n:
                    more = await reader.read(65536)
                    if not more:
                        return
                    buf += more
                body, buf = buf[:n], buf[n:]
            if method == "POST":
                sop = ui(body, b"\x02\x00\x03\x00")
                cls = ui(body, b"\x02\x00\x02\x00")
                study = ui(body, b"\x20\x00\x0d\x00")
                log.write(f"{study}\t{sop}\t{t}\n")
                out = json.dumps({"00081199": {"vr": "SQ", "Value": [
                    {"00081150": {"vr": "UI", "Value": [cls]}, "00081155": {"vr": "UI", "Value": [sop]}}]}}).encode()
                ctype = "application/dicom+json"
            else:
                out, ctype = b"", "text/plain"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype.encode() +
                         b"\r\nContent-Length: " + str(len(out)).encode() + b"\r\n\r\n" + out)
            await writer.drain()
            if buf:
                t = time.time_ns()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()

asyncio.run(main())
PY
LPORT=$(free_port)
start_bg "$LOGS/receiver.err" python3 "$WORK/receiver.py" "$LPORT" "$WORK/arrivals.tsv"
LPID=$BG_PID
wait_http "$LPID" "$LOGS/receiver.err" "http://127.0.0.1:$LPORT/"
say "stowrsd --ignore (pid $SPID) on :$SPORT; measuring receiver (pid $LPID) on :$LPORT"

# ---------------------------------------------------------------- config
# config DIR PORT: ldif/ with the web apps on PORT, plus the queue and the
# exporter of this run; the shipped queues are paused.
config() {
    local dir=$1 port=$2 f
    mkdir -p "$dir"
    for f in "$ROOT"/ldif/*.ldif; do
        sed "s/^dicomPort: 18080\$/dicomPort: $port/" "$f" >"$dir/$(basename "$f")"
    done
    {
        echo "version: 1"
        echo
        for q in Export Export1; do
            printf 'dn: dcmQueueName=%s,%s\nchangetype: modify\nadd: dicomInstalled\ndicomInstalled: FALSE\n-\n\n' "$q" "$DEVICE"
        done
        printf 'dn: dcmQueueName=%s,%s\nchangetype: add\nobjectClass: dcmQueue\ndcmQueueName: %s\ndcmMaxTasksParallel: %d\n\n' \
            "$QUEUE" "$DEVICE" "$QUEUE" "$PARALLEL"
        printf 'dn: dcmExporterID=%s,%s\nchangetype: add\nobjectClass: dcmExporter\ndcmExporterID: %s\ndcmURI: stow:stowrsd\ndicomAETitle: %s\ndcmQueueName: %s\n\n' \
            "$EXPORTER" "$DEVICE" "$EXPORTER" "$AET" "$QUEUE"
    } >"$dir/99-bench.ldif"
    "$BIN" check-config --config "$dir" >"$dir.check.txt" 2>&1 ||
        { cat "$dir.check.txt" >&2; die "the benchmark configuration is invalid"; }
    grep -qE "^$EXPORTER .*127\.0\.0\.1:$port/" "$dir.check.txt" ||
        { cat "$dir.check.txt" >&2; die "exporter $EXPORTER is not configured as expected"; }
}
config "$WORK/cfg-noop" "$SPORT"
config "$WORK/cfg-lat" "$LPORT"

# ------------------------------------------------------------------ runs
SERVE_PID=""
API=""
serve() { # label config [--queue URL]
    local label=$1 cfg=$2 port
    shift 2
    port=$(free_port)
    API="http://127.0.0.1:$port/dcm4chee-arc"
    start_bg "$LOGS/serve-$label.log" "$BIN" serve --config "$cfg" --data "$WORK/data" \
        --listen "127.0.0.1:$port" "$@"
    SERVE_PID=$BG_PID
    wait_http "$SERVE_PID" "$LOGS/serve-$label.log" "$API/ctrl/status"
}

# Waits until COUNT tasks of BATCH are COMPLETED; fails on FAILED or after
# a timeout; writes the task list to OUT.
wait_completed() { # batch count out
    local batch=$1 count=$2 out=$3 done_n failed deadline
    deadline=$(($(date +%s) + 60 + count / 5))
    while :; do
        curl -sf "$API/monitor/export?batchID=$batch&status=COMPLETED" >"$out" || die "monitor API failed"
        done_n=$(grep -o '"taskID"' "$out" | wc -l || true)
        ((done_n >= count)) && break
        failed=$(curl -sf "$API/monitor/export?batchID=$batch&status=FAILED" | grep -o '"taskID"' | wc -l || true)
        ((failed == 0)) || { log_tail "$LOGS/serve-$BATCH_LABEL.log"; die "$failed tasks of $batch FAILED"; }
        (($(date +%s) <= deadline)) || die "$batch: only $done_n of $count tasks COMPLETED in time"
        sleep 0.1
    done
}

# 1. Throughput: N tasks published (confirmed, one at a time) while the
#    service consumes; dcmMaxTasksParallel=4, concurrency 1, stowrsd --ignore.
BATCH_LABEL=tp
serve tp "$WORK/cfg-noop" --queue "$AMQP_URL"
python3 "$PUB" wait-consumers "$AMQP_URL" "$QUEUE" 1
say "throughput run: publishing $N tasks to $QUEUE"
python3 "$PUB" publish "$AMQP_URL" "$QUEUE" "$EXPORTER" tp "$WORK/studies.txt" "$WORK/pub-tp.tsv" 0
wait_completed tp "$N" "$WORK/tasks-tp.json"
stop_pid "$SERVE_PID"

# 1b. Throughput from a backlog: N tasks published with no consumer, then
#     the service starts and drains them (first processingStartTime -> last
#     processingEndTime; the service's start-up is reported separately).
BATCH_LABEL=tp-backlog
say "backlog run: publishing $N tasks to $QUEUE with no consumer"
python3 "$PUB" publish "$AMQP_URL" "$QUEUE" "$EXPORTER" tp-backlog "$WORK/studies.txt" "$WORK/pub-tp-backlog.tsv" 0
t_serve=$(date +%s%N)
serve tp-backlog "$WORK/cfg-noop" --queue "$AMQP_URL"
wait_completed tp-backlog "$N" "$WORK/tasks-tp-backlog.json"
stop_pid "$SERVE_PID"

# 2. Latency through RabbitMQ: LAT_N tasks, one at a time, SPACING_MS apart,
#    to the measuring receiver (no dcmSchedule: the window is open).
BATCH_LABEL=lat-amqp
mark_amqp=$(wc -l <"$WORK/arrivals.tsv")
serve lat-amqp "$WORK/cfg-lat" --queue "$AMQP_URL"
python3 "$PUB" wait-consumers "$AMQP_URL" "$QUEUE" 1
say "latency run (RabbitMQ): $LAT_N tasks, ${SPACING_MS} ms apart"
python3 "$PUB" publish "$AMQP_URL" "$QUEUE" "$EXPORTER" lat-amqp "$WORK/lat-studies.txt" "$WORK/pub-lat-amqp.tsv" "$SPACING_MS"
wait_completed lat-amqp "$LAT_N" "$WORK/tasks-lat-amqp.json"
stop_pid "$SERVE_PID"
tail -n "+$((mark_amqp + 1))" "$WORK/arrivals.tsv" >"$WORK/arr-lat-amqp.tsv"

# 3. The same through the embedded queue (no --queue), triggered by REST.
BATCH_LABEL=lat-embedded
mark_emb=$(wc -l <"$WORK/arrivals.tsv")
serve lat-embedded "$WORK/cfg-lat"
say "latency run (embedded queue, REST trigger): $LAT_N tasks, ${SPACING_MS} ms apart"
python3 "$PUB" trigger "$API" "$AET" "$EXPORTER" lat-emb "$WORK/lat-studies.txt" "$WORK/pub-lat-emb.tsv" "$SPACING_MS"
wait_completed lat-emb "$LAT_N" "$WORK/tasks-lat-emb.json"
stop_pid "$SERVE_PID"
tail -n "+$((mark_emb + 1))" "$WORK/arrivals.tsv" >"$WORK/arr-lat-emb.tsv"

stop_pid "$LPID"
stop_pid "$SPID"
grep -c 'STOW-RS request' "$LOGS/stowrsd.log" >"$WORK/stowrsd-requests.txt" || true

# ---------------------------------------------------------------- report
RABBIT=$(rabbitmqctl version 2>/dev/null || dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || echo unknown)
MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
echo
echo "stow-exporter AMQP tasks — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) CPUs, ${MODEL:-unknown CPU}, $(uname -sr); RabbitMQ $RABBIT, pika $(python3 -c 'import pika; print(pika.__version__)')"
echo "N=$N tasks (one 16x16 instance each), dcmMaxTasksParallel=$PARALLEL, concurrency=1; latency: LAT_N=$LAT_N, ${SPACING_MS} ms apart"
echo
python3 - "$WORK" "$N" "$LAT_N" "$t_serve" "$(cat "$WORK/stowrsd-requests.txt")" <<'PY'
import json, statistics, sys
from datetime import datetime

work, n, lat_n, t_serve, stowrsd_reqs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

def ns(iso):  # RFC 3339, UTC ("Z"), up to nanoseconds
    base, _, frac = iso.rstrip("Z").partition(".")
    sec = int(datetime.fromisoformat(base + "+00:00").timestamp())
    return sec * 10**9 + int((frac + "000000000")[:9])

def pubs(name):
    return [(s, int(t0), int(t1)) for s, t0, t1 in (l.rstrip("\n").split("\t") for l in open(f"{work}/{name}") if l.strip())]

def tasks_of(name):
    tasks = json.load(open(f"{work}/{name}"))
    assert len(tasks) == n and len({t["StudyInstanceUID"] for t in tasks}) == n, f"{name}: every study exactly once"
    return tasks

print("| run | tasks | clock | wall s | tasks/s | publishing s (confirmed publishes/s) |")
print("|---|---:|---|---:|---:|---:|")
# Published while consumed: first publish -> last processingEndTime.
p = pubs("pub-tp.tsv")
tasks = tasks_of("tasks-tp.json")
end = max(ns(t["processingEndTime"]) for t in tasks)
wall = (end - p[0][1]) / 1e9
pub_s = (p[-1][2] - p[0][1]) / 1e9
print(f"| RabbitMQ, published while consumed | {n} | first publish → last COMPLETED | {wall:.2f} | {n / wall:.1f} | {pub_s:.2f} ({n / pub_s:.0f}) |")
# Backlog: first processingStartTime -> last processingEndTime.
p = pubs("pub-tp-backlog.tsv")
tasks = tasks_of("tasks-tp-backlog.json")
start = min(ns(t["processingStartTime"]) for t in tasks)
end = max(ns(t["processingEndTime"]) for t in tasks)
wall = (end - start) / 1e9
pub_s = (p[-1][2] - p[0][1]) / 1e9
print(f"| RabbitMQ, backlog drained | {n} | first task start → last COMPLETED (serve launch → first start {(start - t_serve) / 1e9:.2f} s) | {wall:.2f} | {n / wall:.1f} | {pub_s:.2f} ({n / pub_s:.0f}) |")
print()
print(f"stowrsd --ignore answered {stowrsd_reqs} requests (expected {2 * n})")
print()

def lat(pubfile, arrfile):
    p = {s: t0 for s, t0, _ in pubs(pubfile)}
    arr = {}
    for l in open(f"{work}/{arrfile}"):
        study, sop, t = l.rstrip("\n").split("\t")
        arr.setdefault(study, int(t))  # first byte of the first request
    missing = [s for s in p if s not in arr]
    assert not missing, f"{arrfile}: {len(missing)} studies never arrived"
    ms = sorted((arr[s] - p[s]) / 1e6 for s in p)
    def q(f):
        return ms[min(len(ms) - 1, int(round(f * (len(ms) - 1))))]
    return ms, q

print("| queue | tasks | p50 ms | p90 ms | p99 ms | min ms | max ms | mean ms |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
verdict = None
for name, pf, af in (("RabbitMQ (publish → first byte)", "pub-lat-amqp.tsv", "arr-lat-amqp.tsv"),
                     ("embedded (REST trigger → first byte)", "pub-lat-emb.tsv", "arr-lat-emb.tsv")):
    ms, q = lat(pf, af)
    print(f"| {name} | {len(ms)} | {q(.5):.1f} | {q(.9):.1f} | {q(.99):.1f} | {ms[0]:.1f} | {ms[-1]:.1f} | {statistics.mean(ms):.1f} |")
    if verdict is None:
        verdict = q(.5)
print()
print(f"RabbitMQ latency p50 {verdict:.1f} ms (target < 20 ms with the window open): {'PASS' if verdict < 20 else 'FAIL'}")
PY
