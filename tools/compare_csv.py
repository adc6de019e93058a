"""Whether two results tables agree: the same rows (by a key), every number within a relative
tolerance and every text equal, in the columns they share.

    python tools/compare_csv.py OLD.csv NEW.csv [--key run_id] [--rtol 1e-9] [--skip COLUMN ...]

A refactoring that must not change a figure is checked this way: summarise (or simulate) the
same runs before and after, and compare the CSVs. Exit 0 when they agree, 1 with a line per
difference (the first 20) when they do not.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd


def differences(old: pd.DataFrame, new: pd.DataFrame, key: list[str], rtol: float,
                skip: set[str]) -> list[str]:
    """Every disagreement between ``old`` and ``new`` rows matched by ``key``; a key that
    names more than one row of a table is reported as such, since its rows cannot be matched
    (e.g. run_id alone over runs of two folders)."""
    found: list[str] = []
    for name, table in (("old", old), ("new", new)):
        repeated = table[key].astype(str).duplicated(keep=False)
        if repeated.any():
            first = "/".join(table.loc[repeated, key].astype(str).iloc[0])
            found.append(f"key {'+'.join(key)} names {int(repeated.sum())} rows of the {name} "
                         f"table that share it (e.g. {first}): give more key columns")
    if found:
        return found
    old_keys, new_keys = (set(map(tuple, t[key].astype(str).values)) for t in (old, new))
    gone, added = old_keys - new_keys, new_keys - old_keys
    found += [f"row {k} only in the old table" for k in sorted(gone)]
    found += [f"row {k} only in the new table" for k in sorted(added)]
    only_old = sorted(set(old.columns) - set(new.columns) - skip)
    only_new = sorted(set(new.columns) - set(old.columns) - skip)
    found += [f"column {c} only in the old table" for c in only_old]
    found += [f"column {c} only in the new table" for c in only_new]
    merged = old.astype({k: str for k in key}).merge(
        new.astype({k: str for k in key}), on=key, suffixes=("__old", "__new"))
    names = ["/".join(row) for row in merged[key].astype(str).itertuples(index=False)]
    for column in [c for c in old.columns if c in new.columns and c not in key and c not in skip]:
        a, b = merged[f"{column}__old"], merged[f"{column}__new"]
        for row, x, y in zip(names, a, b, strict=True):
            if not _same(x, y, rtol):
                found.append(f"{row} {column}: {x!r} -> {y!r}")
    return found


def _same(x: object, y: object, rtol: float) -> bool:
    if pd.isna(x) and pd.isna(y):
        return True
    try:
        fx, fy = float(x), float(y)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(x) == str(y)
    if math.isnan(fx) or math.isnan(fy):
        return math.isnan(fx) and math.isnan(fy)
    return math.isclose(fx, fy, rel_tol=rtol, abs_tol=0.0) or fx == fy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--key", nargs="+", default=["run_id"], help="columns that name a row")
    parser.add_argument("--rtol", type=float, default=1e-9, help="relative tolerance of numbers")
    parser.add_argument("--skip", nargs="*", default=["results_dir", "run_dir"],
                        help="columns not compared (where the runs were written)")
    args = parser.parse_args(argv)
    old, new = pd.read_csv(args.old), pd.read_csv(args.new)
    found = differences(old, new, args.key, args.rtol, set(args.skip))
    for line in found[:20]:
        print(line)
    if len(found) > 20:
        print(f"... and {len(found) - 20} more")
    print(f"{args.old} vs {args.new}: {len(old)} and {len(new)} rows, "
          f"{'agree' if not found else f'{len(found)} differences'} (rtol {args.rtol:g})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
