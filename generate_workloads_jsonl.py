"""Turn InstructLab's generated JSONL (or a synthetic prompt set) into a workloads folder.

    python generate_workloads_jsonl.py --input-dir ~/.local/share/instructlab/datasets
    python generate_workloads_jsonl.py --synthetic 500     # no InstructLab needed

Writes WORKLOADS_DIR/<prompt_id>.json = {"prompt": ..., "model_alias": ...} for each prompt, with
the model drawn from MODEL_MIX, and WORKLOADS_DIR/index.csv (prompt_id, model_alias,
prompt_chars). Only counts and lengths are printed, never prompt text. See instructLab_steps.md.
"""

import sys
from pathlib import Path

from sincere.assets import architectures
from sincere.assets.workloads import build_workloads
from sincere.cli import parse_constants

INPUT_DIR = "instructlab_output"  # folder of InstructLab JSONL files (searched recursively)
WORKLOADS_DIR = "workloads"  # output folder: one JSON file per prompt plus index.csv
SYNTHETIC = 0  # N > 0: write N synthetic prompts made here instead of reading INPUT_DIR
MODEL_MIX = dict(architectures.DEFAULT_MODEL_MIX)  # alias=weight of each prompt's model draw
SEED = 0  # seed of the synthetic prompts and of the model assignment

def main(argv: list[str] | None = None) -> int:
    """Write the workloads folder and print what it holds (counts and lengths only)."""
    cfg = parse_constants(globals(), argv)
    try:
        summary = build_workloads(Path(cfg.WORKLOADS_DIR), cfg.MODEL_MIX, seed=cfg.SEED,
                                  input_dir=Path(cfg.INPUT_DIR).expanduser(),
                                  synthetic=cfg.SYNTHETIC)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc} (see instructLab_steps.md, or use --synthetic N)", file=sys.stderr)
        return 2
    print("\n".join(summary.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
