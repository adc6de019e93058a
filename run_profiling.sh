#!/usr/bin/env bash
# Both profiles in one command: model load/unload times (profiling_models.py), then the batch
# sweep (profiling_batch_flask.py started in the background, profiling_batch_calls.py driving it,
# the app stopped at the end) -> PROFILES_DIR/model_loading_times_*, batch_profiling_* and
# best_batch_* CSVs. The defaults suit the tiny CPU models (about two minutes on two cores); on the GPU
# VM raise MAX_BATCH (0 = up to out-of-memory), RUNS and TIME_LIMIT_S.
#
#   bash run_profiling.sh                          # the defaults below
#   MAX_BATCH=0 RUNS=5 TIME_LIMIT_S=14400 bash run_profiling.sh
#   bash run_profiling.sh --batch-sizes 1 2 4 8    # extra flags go to profiling_batch_calls.py
#
# Each constant below can be edited here or set in the environment. Every Python step runs in its
# own process group; on exit, Ctrl-C, SIGTERM or the time limit, the script stops them all.
# With API_KEY exported, the app asks every call but /health for it and the sweep sends it (the
# app refuses a HOST beyond loopback without one). Both run here, over plain HTTP.
set -euo pipefail
cd "$(dirname "$0")"

MODELS_DIR=${MODELS_DIR:-models}                  # model folders (download_models.py)
WORKLOADS_DIR=${WORKLOADS_DIR:-workloads}         # prompt files (generate_workloads_jsonl.py)
PROFILES_DIR=${PROFILES_DIR:-profiling_results}   # where the CSVs go
MODELS=${MODELS:-}                                # aliases to profile, space-separated (empty = all)
HOST=${HOST:-127.0.0.1}                           # the profiling app's address (beyond loopback: export API_KEY)
PORT=${PORT:-5057}                                # the profiling app's port
DEVICE=${DEVICE:-}                                # torch device (empty = cuda when there is one)
DECODE=${DECODE:-eager}                           # batch engine: eager, or static (static KV cache + torch.compile)
CPU_THREADS=${CPU_THREADS:-0}                     # torch threads on a CPU (0 = all cores but one)
ITERATIONS=${ITERATIONS:-5}                       # timed load/unload rounds per model
MAX_BATCH=${MAX_BATCH:-32}                        # largest batch size swept (0 = until out-of-memory)
RUNS=${RUNS:-3}                                   # runs of each batch size
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-50}              # new tokens per prompt in the batch sweep
TIME_LIMIT_S=${TIME_LIMIT_S:-240}                 # everything is stopped after this many seconds
FINISH_MARGIN_S=${FINISH_MARGIN_S:-30}            # the sweep starts no new batch size this close to the limit
HEALTH_WAIT_S=${HEALTH_WAIT_S:-120}               # how long the app may take to answer /health
LOG_DIR=${LOG_DIR:-logs}                          # the app's log (no prompt text is ever logged)
if [[ -z "${PYTHON:-}" ]]; then                   # the interpreter: the active venv, ./.venv, python3
    if [[ -n "${VIRTUAL_ENV:-}" ]]; then PYTHON=$VIRTUAL_ENV/bin/python
    elif [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python
    else PYTHON=python3; fi
fi

STEP_PID=""     # the Python step running in the foreground, if any
APP_PID=""      # the profiling app, while it runs
WATCHDOG_PID=""

# Start "$@" in the background in its own process group (its PID is the group's id) -> $!.
start_group() {
    set -m
    "$@" &
    set +m
}

# TERM a process group, give it GRACE_S seconds, then KILL what is left of it.
stop_group() {
    local pgid=$1 grace_s=${2:-10}
    [[ -n "$pgid" ]] || return 0
    kill -TERM -- "-$pgid" 2>/dev/null || return 0
    for (( i = 0; i < grace_s * 10; i++ )); do
        kill -0 -- "-$pgid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "run_profiling: process group $pgid did not stop in ${grace_s} s; killing it" >&2
    kill -KILL -- "-$pgid" 2>/dev/null || true
}

on_exit() {
    local status=$?
    trap - EXIT INT TERM USR1
    stop_group "$STEP_PID" 5
    stop_group "$APP_PID" 10
    [[ -z "$WATCHDOG_PID" ]] || kill -KILL -- "-$WATCHDOG_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    echo "run_profiling: finished with status $status after $SECONDS s"
    exit "$status"
}
trap on_exit EXIT
trap 'echo "run_profiling: interrupted" >&2; exit 130' INT
trap 'echo "run_profiling: terminated" >&2; exit 143' TERM
trap 'echo "run_profiling: time limit of ${TIME_LIMIT_S} s reached" >&2; exit 124' USR1

# Run one Python step in its own process group and wait for it (a trapped signal cuts the wait).
run_step() {
    start_group "$PYTHON" "$@"
    STEP_PID=$!
    local status=0
    wait "$STEP_PID" || status=$?
    STEP_PID=""
    return "$status"
}

# 0 when something accepts connections on HOST:PORT.
port_open() {
    (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null
}

# 0 when the app at HOST:PORT answers /health with HTTP 200 and it is ours (its pid is APP_PID).
# Quiet while nothing listens yet: bash reports a refused /dev/tcp connection on the stderr of
# the shell that opens it, so that subshell's stderr goes nowhere.
app_healthy() {
    local reply line
    reply=$(exec 2>/dev/null
            exec 3<>"/dev/tcp/$HOST/$PORT" || exit 1
            printf 'GET /health HTTP/1.0\r\nHost: %s\r\n\r\n' "$HOST" >&3
            while IFS= read -r -t 5 line <&3 || [[ -n "$line" ]]; do
                printf '%s\n' "$line"
                line=""
            done) || return 1
    [[ "$reply" == "HTTP/1."*" 200 "* && "$reply" == *"\"pid\":$APP_PID"[,}]* ]]
}

for folder in "$MODELS_DIR" "$WORKLOADS_DIR"; do
    if [[ ! -d "$folder" ]]; then
        echo "run_profiling: no folder $folder: run download_models.py (--random --tiny for a CPU)" \
             "and generate_workloads_jsonl.py (--synthetic 500) first" >&2
        exit 2
    fi
done
read -r -a model_list <<< "$MODELS"
mkdir -p "$LOG_DIR" "$PROFILES_DIR"
start_group bash -c "sleep $TIME_LIMIT_S && kill -USR1 $$"
WATCHDOG_PID=$!

echo "run_profiling: load and unload times ($ITERATIONS rounds per model)"
run_step profiling_models.py --models-dir "$MODELS_DIR" --profiles-dir "$PROFILES_DIR" \
    --iterations "$ITERATIONS" --device "$DEVICE" --cpu-threads "$CPU_THREADS" \
    --decode "$DECODE" --models "${model_list[@]}"

if port_open; then
    echo "run_profiling: port $PORT on $HOST is already in use; set PORT to a free one" >&2
    exit 2
fi
app_log="$LOG_DIR/profiling_batch_flask_$(date +%Y%m%d-%H%M%S).log"
echo "run_profiling: starting the profiling app on $HOST:$PORT (log: $app_log)"
start_group "$PYTHON" profiling_batch_flask.py --host "$HOST" --port "$PORT" \
    --models-dir "$MODELS_DIR" --workloads-dir "$WORKLOADS_DIR" --device "$DEVICE" \
    --cpu-threads "$CPU_THREADS" --max-new-tokens "$MAX_NEW_TOKENS" --decode "$DECODE" \
    > "$app_log" 2>&1
APP_PID=$!
health_deadline_s=$(( SECONDS + HEALTH_WAIT_S ))
echo "run_profiling: waiting for the app to read the models and answer /health" \
     "(at most ${HEALTH_WAIT_S} s)"
until app_healthy; do
    if ! kill -0 "$APP_PID" 2>/dev/null; then
        echo "run_profiling: the profiling app exited before answering; its log:" >&2
        tail -n 20 "$app_log" >&2
        APP_PID=""
        exit 1
    fi
    if (( SECONDS >= health_deadline_s )); then
        echo "run_profiling: the profiling app did not answer /health in ${HEALTH_WAIT_S} s" >&2
        exit 1
    fi
    sleep 0.2
done
echo "run_profiling: the app answers after $SECONDS s; batch sweep"

sweep_limit_s=$(( TIME_LIMIT_S - SECONDS - FINISH_MARGIN_S ))
if (( sweep_limit_s < 1 )); then sweep_limit_s=1; fi
run_step profiling_batch_calls.py --url "http://$HOST:$PORT" --profiles-dir "$PROFILES_DIR" \
    --max-batch "$MAX_BATCH" --runs "$RUNS" --max-new-tokens "$MAX_NEW_TOKENS" \
    --time-limit-s "$sweep_limit_s" --models "${model_list[@]}" "$@"

echo "run_profiling: stopping the profiling app"
stop_group "$APP_PID" 10
APP_PID=""
