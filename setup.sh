#!/usr/bin/env bash
# One-time set-up, safe to rerun: a virtual environment in .venv with everything SINCERE needs.
# PyTorch is installed first and only when missing: TORCH_SPEC (default torch==2.13.0, the CPU
# build where pip finds one locally) keeps pip from pulling a multi-GB CUDA build for a CPU machine.
# On a GPU VM, activate a venv that already has your CUDA build of torch, or set TORCH_SPEC.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "setup: installing $TORCH_SPEC"
    .venv/bin/python -m pip install --quiet "$TORCH_SPEC"
fi
.venv/bin/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
