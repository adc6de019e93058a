"""Fetch the served models from the Hugging Face Hub, or build random-weight ones offline.

    python download_models.py                   # real weights (gated: export HF_TOKEN=...)
    python download_models.py --random          # random bf16 weights, full-size architectures
    python download_models.py --random --tiny   # tiny float32 models for a CPU, a few seconds

Every model goes to MODELS_DIR/<alias>/ in the layout transformers saves, so the engine loads a
built model exactly as a downloaded one; MODELS_DIR/manifest.csv lists what is there.
"""

import os
import sys
from pathlib import Path

from sincere.assets import architectures
from sincere.cli import parse_constants

MODELS = dict(architectures.HUB_IDS)  # alias=hub_id for each model to fetch or build
MODELS_DIR = "models"  # folder holding one subfolder per model and manifest.csv
RANDOM = False  # build random-weight models of the same architectures instead of downloading
TINY = False  # with --random: tiny models (a few tens of MB, float32) for CPU runs and tests
SEED = 0  # seed of the random weights and of the tokenizer training text
OVERWRITE = False  # rebuild or re-download models that are already complete


def main(argv: list[str] | None = None) -> int:
    """Download or build every model of MODELS, print one line each, and rewrite the manifest."""
    cfg = parse_constants(globals(), argv)
    from sincere.assets.models import prepare_models  # after parsing: --help stays instant

    if cfg.TINY and not cfg.RANDOM:
        print("--tiny builds random-weight models: use it with --random", file=sys.stderr)
        return 2
    kind = ("tiny" if cfg.TINY else "random") if cfg.RANDOM else "hub"
    token = os.environ.get("HF_TOKEN") or None
    if kind == "hub" and token is None:
        print("note: HF_TOKEN is not set; gated models (gemma, llama) will be refused "
              "(export HF_TOKEN=<your token>, or use --random to build models offline)")
    models_dir = Path(cfg.MODELS_DIR)
    outcomes = prepare_models(cfg.MODELS, models_dir, kind, seed=cfg.SEED,
                              overwrite=cfg.OVERWRITE, token=token)
    for outcome in outcomes:
        print(f"{outcome.alias}: {outcome.status}: {outcome.detail}")
    print(f"manifest: {models_dir / 'manifest.csv'}")
    failed = [o.alias for o in outcomes if o.status == "failed"]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
