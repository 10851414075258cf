# Shared by the benchmark scripts (sourced, not run): messages, processes
# started in the background and stopped by their PID at exit, the work
# dir removed at exit, free loopback ports, timing arithmetic.
# shellcheck shell=bash

die() {
    echo "error: $*" >&2
    exit 1
}
say() { echo "== $*" >&2; }

# Several `serve` processes run side by side: none binds the Storage SCP's
# configured port unless a script asks for it (bench/forward.sh does).
export STOW_EXPORTER_DICOM_LISTEN="${STOW_EXPORTER_DICOM_LISTEN:-none}"

PIDS=()
WORK=""

# Stops one process started with start_bg: SIGTERM, SIGKILL after 15 s. A
# poll, not a background watchdog: killing a watchdog subshell makes bash
# report "wait_for: No record of process" and trip the ERR trap on the next
# stop; a zombie (exited, not yet waited for) counts as stopped.
stop_pid() {
    local pid=$1 i
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    local keep=() p
    for p in ${PIDS[@]+"${PIDS[@]}"}; do
        [[ $p == "$pid" ]] || keep+=("$p")
    done
    PIDS=(${keep[@]+"${keep[@]}"})
}

# At exit: every process still running is stopped, the work dir removed
# (kept with BENCH_KEEP=1).
cleanup() {
    local rc=$?
    trap - EXIT INT TERM ERR
    local p
    for p in ${PIDS[@]+"${PIDS[@]}"}; do
        stop_pid "$p"
    done
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

# Starts "$@" in the background with output appended to $1's log; sets BG_PID.
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

now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a - b}'; }

log_tail() {
    echo "--- last lines of $1:" >&2
    tail -n 20 "$1" >&2 || true
}
