#!/usr/bin/env bash
# The whole pipeline in one command, each stage skipped when its output is already there:
#   1. models       download_models.py        (tiny random models by default: no GPU, no Hub)
#   2. prompts      generate_workloads_jsonl.py (synthetic by default: no InstructLab)
#   3. profiles     run_profiling.sh          (load times and batch sweep on this machine)
#   4. experiments  run_experiments.py        (a short grid: real server, real traffic)
#   5. simulation   simulate_experiments.py   (the same grid replayed from the measured profile)
#   6. report       process_results.py        (tables, figures, RESULTS_DIR/report/report.html)
# Before stage 1 it prints the plan (the values in effect, this machine's GPU and CC mode, each
# stage, the runs done and to do and their estimated duration) and checks in seconds what would
# fail hours in (HF_TOKEN, free disk, a GPU), each failure with its fix.
#
#   bash run_pipeline.sh                           # the CPU demo, about 7 minutes
#   STUDY=original bash run_pipeline.sh            # the original study on the GPU VM (docs/study.md)
#   STUDY=original DRY_RUN=1 bash run_pipeline.sh  # its plan only, on any machine
#
# Each constant below can be edited here or set in the environment; a STUDY's values replace the
# defaults below wherever the environment sets none (STUDY=original REPEATS=1 ...). Rerunning goes
# on where it stopped: finished runs are kept (run_experiments.py resumes), existing models,
# prompts and profiles are reused (FORCE_PROFILE=1 measures the profiles again).
set -euo pipefail
cd "$(dirname "$0")"

if [[ -z "${PYTHON:-}" ]]; then             # the interpreter: the active venv, ./.venv, python3
    if [[ -n "${VIRTUAL_ENV:-}" ]]; then PYTHON=$VIRTUAL_ENV/bin/python
    elif [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python
    else PYTHON=python3; fi
fi
STUDY=${STUDY:-}                            # a study preset: original (docs/study.md), or none
DRY_RUN=${DRY_RUN:-0}                       # 1: print the plan and exit, starting nothing
REQUIRE_GPU=${REQUIRE_GPU:-auto}            # auto: a GPU for full-size models or a STUDY; 1; 0
if [[ -n "$STUDY" ]]; then                  # the preset's values, where the environment sets none
    preset=$("$PYTHON" -m sincere.grid.study --study "$STUDY" --preset) || exit 2
    while read -r name value; do
        [[ -n "${!name:-}" ]] || printf -v "$name" '%s' "$value"
    done <<< "$preset"
fi
MODEL_KIND=${MODEL_KIND:-tiny}              # tiny (CPU demo), random (full-size, random weights) or hub
MODELS_DIR=${MODELS_DIR:-models}            # model folders
PROMPTS=${PROMPTS:-500}                     # synthetic prompts to make (0 = read INSTRUCTLAB_DIR)
INSTRUCTLAB_DIR=${INSTRUCTLAB_DIR:-instructlab_output}  # InstructLab JSONL, when PROMPTS=0
WORKLOADS_DIR=${WORKLOADS_DIR:-workloads}   # prompt files
PROFILES_DIR=${PROFILES_DIR:-profiling_results}  # profile CSVs (measured ones are added here)
FORCE_PROFILE=${FORCE_PROFILE:-0}           # 1: profile again even if this machine has a profile
MAX_BATCH=${MAX_BATCH:-16}                  # profiling: largest batch size (0 = until out-of-memory)
PROFILE_TIME_LIMIT_S=${PROFILE_TIME_LIMIT_S:-150}  # profiling: time limit of run_profiling.sh
RESULTS_DIR=${RESULTS_DIR:-results}         # run directories and report/
STRATEGIES=${STRATEGIES:-"BestBatch+Timer SelectBatch+Timer Immediate"}  # strategies to run
PATTERNS=${PATTERNS:-"gamma bursty"}        # traffic patterns
MEANS=${MEANS:-"6"}                         # mean request rates, requests per second
SLAS=${SLAS:-"4"}                           # SLAs, seconds
REPEATS=${REPEATS:-1}                       # runs per grid cell
DURATION_S=${DURATION_S:-30}                # seconds of traffic per run
SIM_REPLAYS=${SIM_REPLAYS:-100}             # simulation: replays of each run's arrivals (their spread)
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-50}        # new tokens per request
DECODE=${DECODE:-eager}                     # batch engine: eager, or static (KV cache + torch.compile)

stage() { echo; echo "== pipeline: $* ($SECONDS s)"; }
read -r -a strategies <<< "$STRATEGIES"
read -r -a patterns <<< "$PATTERNS"
read -r -a means <<< "$MEANS"
read -r -a slas <<< "$SLAS"
grid=(--strategies "${strategies[@]}" --patterns "${patterns[@]}" --means "${means[@]}"
      --slas "${slas[@]}" --repeats "$REPEATS" --duration-s "$DURATION_S")
dry_run=false; [[ "$DRY_RUN" == 1 ]] && dry_run=true

stage "plan"
"$PYTHON" -m sincere.grid.study --study "$STUDY" --model-kind "$MODEL_KIND" \
    --models-dir "$MODELS_DIR" --workloads-dir "$WORKLOADS_DIR" --prompts "$PROMPTS" \
    --max-batch "$MAX_BATCH" --profile-time-limit-s "$PROFILE_TIME_LIMIT_S" \
    --results-dir "$RESULTS_DIR" --decode "$DECODE" \
    --require-gpu "$REQUIRE_GPU" --dry-run "$dry_run" "${grid[@]}" || exit $?
profile_set=$("$PYTHON" -m sincere.profiles.selection --profile-name --decode "$DECODE")
keep_profile=0
if [[ "$FORCE_PROFILE" != 1 ]] \
        && compgen -G "$PROFILES_DIR/batch_profiling_${profile_set}_[0-9]*.csv" > /dev/null \
        && compgen -G "$PROFILES_DIR/model_loading_times_${profile_set}_[0-9]*.csv" > /dev/null; then
    keep_profile=1
    echo "pipeline:     the set $profile_set is in $PROFILES_DIR: kept (FORCE_PROFILE=1 measures again)"
else
    echo "pipeline:     the set $profile_set: to measure"
fi
echo "pipeline: 4/6 experiments, run_experiments.py's plan:"
experiments=(--results-dir "$RESULTS_DIR" --models-dir "$MODELS_DIR"
             --workloads-dir "$WORKLOADS_DIR" --profiles "$profile_set" --profiles-dir "$PROFILES_DIR"
             --decode "$DECODE" --max-new-tokens "$MAX_NEW_TOKENS" "${grid[@]}")
"$PYTHON" run_experiments.py --dry-run true "${experiments[@]}" || exit $?
echo "pipeline: 5/6 simulation: the same grid from the $profile_set profile, $SIM_REPLAYS replays a run"
echo "pipeline: 6/6 report: process_results.py $RESULTS_DIR"
if [[ "$DRY_RUN" == 1 ]]; then
    echo "pipeline: DRY_RUN=1: the plan above; nothing was started"
    exit 0
fi

stage "1/6 models ($MODEL_KIND) in $MODELS_DIR"
case "$MODEL_KIND" in
    tiny) "$PYTHON" download_models.py --models-dir "$MODELS_DIR" --random --tiny ;;
    random) "$PYTHON" download_models.py --models-dir "$MODELS_DIR" --random ;;
    hub) "$PYTHON" download_models.py --models-dir "$MODELS_DIR" ;;
    *) echo "pipeline: MODEL_KIND must be tiny, random or hub, not $MODEL_KIND" >&2; exit 2 ;;
esac

stage "2/6 prompts in $WORKLOADS_DIR"
if compgen -G "$WORKLOADS_DIR/*.json" > /dev/null; then
    echo "pipeline: $WORKLOADS_DIR already holds prompts; kept"
elif (( PROMPTS > 0 )); then
    "$PYTHON" generate_workloads_jsonl.py --workloads-dir "$WORKLOADS_DIR" --synthetic "$PROMPTS"
else
    "$PYTHON" generate_workloads_jsonl.py --workloads-dir "$WORKLOADS_DIR" \
        --input-dir "$INSTRUCTLAB_DIR"
fi

stage "3/6 profiles of this machine in $PROFILES_DIR"
if (( keep_profile )); then
    echo "pipeline: $PROFILES_DIR already holds a measured $profile_set profile; kept" \
         "(FORCE_PROFILE=1 to measure again)"
else
    MODELS_DIR=$MODELS_DIR WORKLOADS_DIR=$WORKLOADS_DIR PROFILES_DIR=$PROFILES_DIR \
        MAX_BATCH=$MAX_BATCH MAX_NEW_TOKENS=$MAX_NEW_TOKENS TIME_LIMIT_S=$PROFILE_TIME_LIMIT_S \
        DECODE=$DECODE \
        PYTHON=$PYTHON bash run_profiling.sh
fi

stage "4/6 experiments -> $RESULTS_DIR"
status=0
"$PYTHON" run_experiments.py "${experiments[@]}" || status=$?
if (( status != 0 && status != 1 )); then exit "$status"; fi  # 1: some runs failed; go on

stage "5/6 the same grid simulated from the $profile_set profile -> $RESULTS_DIR/sim"
"$PYTHON" simulate_experiments.py --results-dir "$RESULTS_DIR/sim" --profiles "$profile_set" \
    --profiles-dir "$PROFILES_DIR" --workloads-dir "$WORKLOADS_DIR" --models-dir "$MODELS_DIR" \
    --replays "$SIM_REPLAYS" --max-new-tokens "$MAX_NEW_TOKENS" "${grid[@]}"

stage "6/6 report"
"$PYTHON" process_results.py "$RESULTS_DIR"
echo
echo "pipeline: done in $SECONDS s; open $RESULTS_DIR/report/report.html"
exit "$status"
