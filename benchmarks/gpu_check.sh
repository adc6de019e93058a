#!/usr/bin/env bash
# The GPU check, for a lent H100 (or any CUDA GPU with ~48 GB free disk): builds the three
# full-size random-weight models (download_models.py --random, bf16, built on the GPU), then
# profiles them with benchmarks/gpu_profile_check.py (load paths; batch sizes up to a bound) and
# times the swap paths with benchmarks/bench_swap.py, all within TIME_LIMIT_S. Needs torch with
# CUDA, transformers, tokenizers, safetensors, huggingface_hub and numpy; not Flask.
#
#   OUT=/tmp/gpu_out bash benchmarks/gpu_check.sh
#   DEVICE=cpu MODELS_DIR=/tmp/tiny OUT=/tmp/dry bash benchmarks/gpu_check.sh  # a dry run, tiny models
#
# Writes under $OUT: profiling_results/ (the same CSVs as run_profiling.sh), environment.txt,
# build.log, profile.log, bench_swap.txt and timings.txt (seconds of each step). The models go to
# MODELS_DIR, not $OUT (47 GB). Without a GPU it stops at once with a message and status 2.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:?set OUT to the folder the results go to}   # results folder (the device machine sets it)
MODELS_DIR=${MODELS_DIR:-models}                      # where the full-size models are built (kept)
DEVICE=${DEVICE:-cuda}                                # cpu: the same steps on tiny models (a dry run)
TIME_LIMIT_S=${TIME_LIMIT_S:-570}                     # the whole check stops after this many seconds
SWEEP_TIME_LIMIT_S=${SWEEP_TIME_LIMIT_S:-200}         # the batch sweep starts no new size after this
BATCH_SIZES=${BATCH_SIZES:-"1 8 32 64 128 256"}       # batch sizes swept, up to out-of-memory
ITERATIONS=${ITERATIONS:-3}                           # timed load rounds per model
BENCH_ROUNDS=${BENCH_ROUNDS:-3}                       # bench_swap rounds per model and path
MIN_FREE_GB=${MIN_FREE_GB:-50}                        # disk the models need when not built yet
if [[ -z "${PYTHON:-}" ]]; then                       # an interpreter with CUDA torch
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

mkdir -p "$OUT/profiling_results"
timings="$OUT/timings.txt"
: > "$timings"

if [[ "$DEVICE" == cpu ]]; then
    build_kind=(--random --tiny); MIN_FREE_GB=1
elif ! reason=$("$PYTHON" - 2>&1 <<'EOF'
try:
    import torch
except ImportError as exc:
    raise SystemExit(f"{exc}")
if not torch.cuda.is_available():
    raise SystemExit(f"torch {torch.__version__} (CUDA build {torch.version.cuda}) sees no GPU")
EOF
); then
    echo "gpu_check: no usable GPU for $PYTHON: $reason. This check needs a CUDA GPU; for a dry" \
         "run of its profiling on a CPU: python benchmarks/gpu_profile_check.py --device cpu" \
         "--models-dir <tiny models>, or DEVICE=cpu bash $0" >&2
    exit 2
else
    build_kind=(--random)
fi
"$PYTHON" - > "$OUT/environment.txt" 2>&1 <<'EOF' || true
import importlib.metadata as md, torch
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(), "memory_gib",
          round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
print("torch", torch.__version__, "cuda", torch.version.cuda)
for name in ("transformers", "tokenizers", "safetensors", "huggingface_hub", "numpy", "psutil",
             "nvidia-ml-py", "flask"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "missing")
EOF
nvidia-smi >> "$OUT/environment.txt" 2>&1 || true
nvidia-smi conf-compute -f >> "$OUT/environment.txt" 2>&1 || true
cat "$OUT/environment.txt"

# Run a step with what is left of the time limit; record its seconds and status.
step() {
    local name=$1; shift
    local left_s=$(( TIME_LIMIT_S - SECONDS ))
    if (( left_s < 10 )); then
        echo "gpu_check: no time left for $name" | tee -a "$timings" >&2
        return 124
    fi
    local started=$SECONDS status=0
    timeout -k 10 "$left_s" "$@" || status=$?
    echo "$name $(( SECONDS - started )) s status $status" | tee -a "$timings"
    return "$status"
}

mkdir -p "$MODELS_DIR"
built=$(find "$MODELS_DIR" -mindepth 2 -maxdepth 2 -name sincere_model.json | wc -l)
free_gb=$(df -Pk "$MODELS_DIR" | awk 'NR == 2 {print int($4 * 1024 / 1e9)}')
if (( built < 3 && free_gb < MIN_FREE_GB )); then
    echo "gpu_check: only $free_gb GB free for $MODELS_DIR; the three models need ~47 GB" >&2
    exit 2
fi
step build "$PYTHON" download_models.py "${build_kind[@]}" --models-dir "$MODELS_DIR" \
    > "$OUT/build.log" 2>&1 || { tail -n 20 "$OUT/build.log" >&2; exit 1; }
tee "$OUT/manifest.csv" < "$MODELS_DIR/manifest.csv"

# shellcheck disable=SC2086  # BATCH_SIZES is a list of words
step profile "$PYTHON" benchmarks/gpu_profile_check.py --models-dir "$MODELS_DIR" \
    --profiles-dir "$OUT/profiling_results" --iterations "$ITERATIONS" --device "$DEVICE" \
    --batch-sizes $BATCH_SIZES --time-limit-s "$SWEEP_TIME_LIMIT_S" 2>&1 \
    | tee "$OUT/profile.log" || echo "gpu_check: the profiling step failed (see profile.log)" >&2
step bench_swap "$PYTHON" benchmarks/bench_swap.py --models-dir "$MODELS_DIR" --device "$DEVICE" \
    --rounds "$BENCH_ROUNDS" 2>&1 | tee "$OUT/bench_swap.txt" || true
echo "gpu_check: done in $SECONDS s; results in $OUT"
