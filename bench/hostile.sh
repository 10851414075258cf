#!/usr/bin/env bash
# Peak memory of `serve` and `stowrsd` while hostile clients run, next to the
# same figures at rest; then the export benchmark with the durable task store
# (--sqlite-synchronous full, the default) next to normal, in the same run.
#
# Usage: bench/hostile.sh [N=2000] [REPS=3]
#   N and REPS go to bench/export_throughput.sh (BENCH_DURABILITY=1);
#   HOSTILE_ONLY=1 skips that part.
#
# See bench/README.md. Everything runs on 127.0.0.1; every process the script
# starts is stopped by its PID on exit; the work dir (mktemp -d) is removed.
# Needs cargo, curl, python3 with pydicom and numpy (scripts/test.sh installs
# them) and dcmtk (the bombs are made by tests/reference/make_bombs.py).
set -Eeuo pipefail

N=${1:-2000}
REPS=${2:-3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

for tool in cargo curl python3 awk; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
python3 -c 'import pydicom, numpy' 2>/dev/null || die "python3 needs pydicom and numpy (scripts/test.sh installs them)"
# Thousands of client sockets at once.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

say "building release binaries (cargo skips this when up to date)"
(cd "$ROOT" && cargo build --release --bin stow-exporter --example synth) || die "cargo build --release failed"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET == /* ]] || TARGET=$ROOT/$TARGET
BIN=$TARGET/release/stow-exporter
SYNTH=$TARGET/release/examples/synth
CLIENTS=$ROOT/bench/hostile_clients.py

WORK=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/stow-hostile.XXXXXX") || die "cannot create a work dir"
LOGS=$WORK/logs
mkdir -p "$LOGS"
export RUST_LOG=${RUST_LOG:-info} NO_COLOR=1

# ------------------------------------------------------------------ data
say "making a normal study (20 CT instances) and the decompression bombs"
NORMAL_STUDY=$("$SYNTH" --out "$WORK/normal" --count 20 --rows 512 --columns 512)
python3 "$ROOT/tests/reference/make_bombs.py" "$WORK/bombs" >"$LOGS/bombs.txt" 2>&1 ||
    { cat "$LOGS/bombs.txt" >&2; die "make_bombs.py failed"; }
BOMB_STUDY=$(python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import make_bombs; print(make_bombs.STUDY)' "$ROOT/tests/reference")
DATA=$WORK/data
"$BIN" import --data "$DATA" "$WORK/normal" "$WORK/bombs" >"$LOGS/import.txt" 2>&1 || true
grep -q "^imported" "$LOGS/import.txt" || { cat "$LOGS/import.txt" >&2; die "import failed"; }
say "$(grep '^imported' "$LOGS/import.txt")"

# ------------------------------------------------------------- processes
RPORT=$(free_port)
DPORT=$(free_port)
APORT=$(free_port)
API="http://127.0.0.1:$APORT/dcm4chee-arc"
# The built-in receiver alone, storing, with its default limits.
start_bg "$LOGS/stowrsd.log" "$BIN" stowrsd --bind "127.0.0.1:$RPORT" --dir "$WORK/received"
RPID=$BG_PID
# A hostile destination: 200 with 5 MB of anonymous failures to every request.
start_bg "$LOGS/destination.log" python3 "$CLIENTS" destination "$DPORT" 5
DESTPID=$BG_PID

# Configuration: STOWRSD -> the receiver, decompressing to Explicit VR Little
# Endian (the bombs go there); StowExporter (web app DCM4CHEE) -> the
# hostile destination.
CFG=$WORK/config
mkdir -p "$CFG"
for f in "$ROOT"/ldif/*.ldif; do
    case $(basename "$f") in
    30-*) port=$DPORT ;;
    *) port=$RPORT ;;
    esac
    sed "s/^dicomPort: 18080\$/dicomPort: $port/" "$f" >"$CFG/$(basename "$f")"
done
cat >"$CFG/99-hostile.ldif" <<EOF
version: 1

dn: dcmWebAppName=stowrsd,dicomDeviceName=stowrsd,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org
changetype: modify
add: dcmProperty
dcmProperty: transfer-syntax=ExplicitVRLittleEndian
dcmProperty: concurrency=2
-

EOF
"$BIN" check-config --config "$CFG" >"$LOGS/check-config.txt" 2>&1 ||
    { cat "$LOGS/check-config.txt" >&2; die "the benchmark configuration is invalid"; }
start_bg "$LOGS/serve.log" "$BIN" serve --config "$CFG" --data "$DATA" --listen "127.0.0.1:$APORT"
SPID=$BG_PID
for _ in $(seq 1 300); do
    curl -sf -o /dev/null "$API/ctrl/status" && curl -s -o /dev/null "http://127.0.0.1:$RPORT/" && break
    kill -0 "$SPID" 2>/dev/null || { log_tail "$LOGS/serve.log"; die "serve exited at start"; }
    sleep 0.1
done
curl -sf -o /dev/null "$API/ctrl/status" || { log_tail "$LOGS/serve.log"; die "serve does not answer"; }

hwm() { awk '/^VmHWM:/ {printf "%.1f", $2 * 1024 / 1e6}' "/proc/$1/status"; }
rss() { awk '/^VmRSS:/ {printf "%.1f", $2 * 1024 / 1e6}' "/proc/$1/status"; }
# Linux: writing 5 to clear_refs resets the peak (VmHWM) to the current RSS.
reset_hwm() { echo 5 >"/proc/$1/clear_refs"; }

# export EXPORTER STUDY -> the final task JSON (bounded wait).
export_study() {
    local body task json status
    body=$(curl -sS -X POST "$API/aets/DCM4CHEE1/rs/studies/$2/export/$1")
    [[ $body =~ \"taskID\":\"([^\"]+)\" ]] || die "export $1 $2: $body"
    task=${BASH_REMATCH[1]}
    for _ in $(seq 1 1200); do
        json=$(curl -sS "$API/monitor/export/$task")
        [[ $json =~ \"status\":\"([A-Z ]+)\" ]] && status=${BASH_REMATCH[1]}
        case ${status:-} in COMPLETED | WARNING | FAILED | CANCELED | "SCHEDULED FOR RETRY") break ;; esac
        sleep 0.1
    done
    echo "$json"
}
status_of() { [[ $1 =~ \"status\":\"([A-Z ]+)\" ]] && echo "${BASH_REMATCH[1]}"; }

# ----------------------------------------------------------------- at rest
# At rest means serving normally: the normal study exported and received
# once, a few API reads.
say "at rest: exporting the normal study"
json=$(export_study STOWRSD "$NORMAL_STUDY")
[[ $(status_of "$json") == COMPLETED ]] || die "the normal export did not complete: $json"
for _ in 1 2 3; do curl -sf -o /dev/null "$API/monitor/export"; done
REST_SERVE=$(hwm "$SPID")
REST_STOWRSD=$(hwm "$RPID")
say "at rest: serve peak $REST_SERVE MB, stowrsd peak $REST_STOWRSD MB"
reset_hwm "$SPID"
reset_hwm "$RPID"

# --------------------------------------------------------------- hostile
ATTACKS=$WORK/attacks.jsonl
: >"$ATTACKS"
PHASES=$WORK/phases.txt
: >"$PHASES"
# Peak RSS of both processes during one phase (the slow clients run
# throughout, so every phase includes their 4000 open connections).
phase_start() { reset_hwm "$SPID"; reset_hwm "$RPID"; }
phase_end() { echo "| $1 | $(hwm "$SPID") | $(hwm "$RPID") |" >>"$PHASES"; }
attack() { # name command...: runs a client, keeps its JSON line
    local name=$1
    shift
    say "attack: $name"
    phase_start
    python3 "$CLIENTS" "$@" >>"$ATTACKS" 2>>"$LOGS/clients.log" ||
        { log_tail "$LOGS/clients.log"; die "the $name client failed"; }
    phase_end "$name"
}
# Slow and idle clients on both listeners, in the background for longer
# than the header timeout (30 s), while the other attacks run.
python3 "$CLIENTS" slowheaders "$RPORT" 2000 40 >>"$ATTACKS" 2>>"$LOGS/clients.log" &
SLOW1=$!
PIDS+=("$SLOW1")
python3 "$CLIENTS" slowheaders "$APORT" 2000 40 >>"$ATTACKS" 2>>"$LOGS/clients.log" &
SLOW2=$!
PIDS+=("$SLOW2")
attack "part flood (18 MB of empty parts)" partflood "$RPORT" 18
attack "huge body (one 2 GiB part)" hugebody "$RPORT" 2048
attack "many connections (stowrsd)" manyconns "$RPORT" 6000 10
attack "many connections (control API)" manyconns "$APORT" 6000 10
say "attack: decompression bombs through the export (STOWRSD decompresses)"
phase_start
BOMBS=$(export_study STOWRSD "$BOMB_STUDY")
phase_end "decompression bombs (export)"
say "bombs: $(status_of "$BOMBS"): $(grep -o '"outcomeMessage":"[^"]*"' <<<"$BOMBS")"
say "attack: a destination answering 5 MB of anonymous failures"
phase_start
DEST=$(export_study StowExporter "$NORMAL_STUDY")
phase_end "hostile destination (export)"
say "hostile destination: $(status_of "$DEST"): $(grep -o '"outcomeMessage":"[^"]*"' <<<"$DEST" | cut -c1-200)"
wait "$SLOW1" "$SLOW2" || true
# The service still works after all that.
json=$(export_study STOWRSD "$NORMAL_STUDY")
AFTER=$(status_of "$json")
HOSTILE_SERVE=$(awk -F'|' 'NR == 1 || $3 > m {m = $3} END {print m + 0}' "$PHASES")
HOSTILE_STOWRSD=$(awk -F'|' 'NR == 1 || $4 > m {m = $4} END {print m + 0}' "$PHASES")
leftovers=$(find "$WORK/received" -name '.*.part' | wc -l)

# ---------------------------------------------------------------- report
echo
echo "stow-exporter under hostile clients — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(uname -sr)"
echo
python3 - "$ATTACKS" <<'PY'
import json, sys
print("| attack | what the server did |")
print("|---|---|")
for line in open(sys.argv[1]):
    r = json.loads(line)
    a = r.pop("attack")
    print(f"| {a} | " + ", ".join(f"{k}={v}" for k, v in r.items()) + " |")
PY
echo
echo "| phase | serve peak RSS (MB) | stowrsd peak RSS (MB) |"
echo "|---|---:|---:|"
cat "$PHASES"
echo
echo "| process | peak RSS at rest (MB) | peak RSS under hostile load (MB) | ratio | target (issue 12) |"
echo "|---|---:|---:|---:|---|"
for p in "serve:$REST_SERVE:$HOSTILE_SERVE" "stowrsd:$REST_STOWRSD:$HOSTILE_STOWRSD"; do
    IFS=: read -r name rest hostile <<<"$p"
    awk -v n="$name" -v r="$rest" -v h="$hostile" 'BEGIN {
        ratio = h / r; printf "| %s | %.1f | %.1f | %.2f | %s |\n", n, r, h, ratio, (ratio <= 2 ? "PASS (<= 2x)" : "FAIL (> 2x)") }'
done
echo
echo "decompression bombs: $(status_of "$BOMBS"); hostile destination: $(status_of "$DEST"); normal export afterwards: $AFTER; .part files left: $leftovers"

stop_pid "$SPID"
stop_pid "$RPID"
stop_pid "$DESTPID"

if [[ ${HOSTILE_ONLY:-0} != 1 ]]; then
    echo
    say "export throughput with the durable task store (bench/export_throughput.sh $N $REPS, BENCH_DURABILITY=1)"
    BENCH_DURABILITY=1 "$ROOT/bench/export_throughput.sh" "$N" "$REPS"
fi
