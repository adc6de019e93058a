"""What one machine of a Ray cluster does for the grid: the resources it advertises, and a run.

Nothing here imports ray. ``run_on_node`` is the body of the Ray task that sincere/grid/cluster.py
submits for each run: on the node that Ray picked, it runs ``run_point`` (server and generator as
subprocesses, the accounting check) into a scratch folder and returns the run.json and the run
directory packed as one tar archive, which the driver unpacks into RESULTS_DIR.

    python -m sincere.grid.node --resources            # the JSON for `ray start --resources`
    python -m sincere.grid.node --resources --runs-per-node 2 --cc-mode off
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import sys
import tarfile
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from sincere.cli import parse_constants
from sincere.files import write_json_atomic
from sincere.grid.children import ROOT
from sincere.grid.points import CC_MODES, GridPoint, cc_name
from sincere.grid.runner import PARTIAL_DIR, RunSpec, keep_unrun, promote, run_point

RUN_SLOT = "sincere_run"  # the Ray resource a run holds on a node without GPUs
CC_SOURCE = "ray node resource"  # run.json's cc_source when the mode came from the node's label


def node_resources(runs_per_node: int, cc_mode: str = "",
                   detected: str | None = None) -> dict[str, float]:
    """This node's custom resources: ``runs_per_node`` run slots and its CC mode (``cc_on`` /
    ``cc_off``). ``cc_mode`` labels a node whose mode cannot be detected (a CPU machine, for
    tests); it may not contradict a mode the GPU reports. No CC resource when neither says."""
    if runs_per_node < 1:
        raise ValueError("runs per node must be at least 1")
    if cc_mode and cc_mode not in CC_MODES:
        raise ValueError(f"unknown CC mode {cc_mode!r}; known: {', '.join(CC_MODES)}")
    if detected is None:
        from sincere.host.environment import detect_cc

        detected = detect_cc()["cc_mode"]
    if cc_mode and detected in CC_MODES and cc_mode != detected:
        raise ValueError(f"this machine's GPU reports CC {detected}; it cannot be labelled "
                         f"{cc_name(cc_mode)}")
    resources: dict[str, float] = {RUN_SLOT: float(runs_per_node)}
    mode = cc_mode or detected
    if mode in CC_MODES:
        resources[cc_name(mode)] = 1.0
    return resources


def run_on_node(point: GridPoint, spec: RunSpec, cc_mode: str,
                node_root: str) -> tuple[dict[str, Any], bytes]:
    """The Ray task of one run: run it here into a scratch folder; its run.json and its run
    directory as a tar archive. A node whose checkout is not at ``node_root``, or whose GPU
    contradicts the CC mode it advertises, keeps the run as failed without starting it."""
    # Ray gives its workers OMP_NUM_THREADS when unset; the run's processes should see the
    # node as a run started by hand does (the server sets its own CPU threads).
    os.environ.pop("OMP_NUM_THREADS", None)
    with tempfile.TemporaryDirectory(prefix="sincere-run-") as scratch:
        spec = replace(spec, results_dir=Path(scratch))
        reason = _node_mismatch(cc_mode, Path(node_root))
        run = keep_unrun(point, spec, reason) if reason else run_point(point, spec)
        run_dir = Path(scratch) / point.run_id
        if cc_mode:
            run = label_cc_mode(run_dir, run, cc_mode)
        return run, pack_run(run_dir)


def node_profiles(name: str, profiles_dir: str, device: str, decode: str,
                  std_factor: float) -> dict[str, Any]:
    """The Ray task that resolves, on a node, the profile set its servers will plan with
    (``auto``: the node's own device and CC mode), as ``ProfileSet.describe()``."""
    from sincere.profiles.selection import grid_profiles

    return grid_profiles(name, Path(profiles_dir), device, decode, std_factor).describe(name)


def _node_mismatch(cc_mode: str, node_root: Path) -> str:
    """Why this node must not run the run ("" when it may)."""
    host = socket.gethostname()
    if ROOT.resolve() != node_root.resolve():
        return (f"{host} imported sincere from {ROOT}, not from NODE_ROOT {node_root} (is the "
                "checkout there on this node?)")
    if cc_mode:
        from sincere.host.environment import detect_cc

        detected = detect_cc()["cc_mode"]
        if detected in CC_MODES and detected != cc_mode:
            return (f"{host} advertises {cc_name(cc_mode)} but its GPU reports CC {detected}; "
                    "restart Ray there with the resources "
                    "`python -m sincere.grid.node --resources` prints")
    return ""


def label_cc_mode(run_dir: Path, run: dict[str, Any], cc_mode: str) -> dict[str, Any]:
    """Where the run's environment could not detect a CC mode (no GPU), record the mode its
    node advertised, so that the report pairs it by that mode; a detected mode is kept."""
    environment = run.setdefault("environment", {})
    if environment.get("cc_mode") in CC_MODES:
        return run
    environment["cc_mode_detected"] = environment.get("cc_mode", "unknown")
    environment["cc_mode"] = cc_mode
    environment["cc_source"] = f"{CC_SOURCE} {cc_name(cc_mode)}"
    write_json_atomic(run_dir / "run.json", run)
    return run


def pack_run(run_dir: Path) -> bytes:
    """A run directory as a gzip'd tar archive whose one top folder is the run id."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(run_dir, arcname=run_dir.name)
    return buffer.getvalue()


def unpack_run(archive_bytes: bytes, results_dir: Path, run_id: str) -> Path:
    """Land a packed run directory in ``results_dir/<run_id>`` as a local run lands: unpacked
    under ``.partial/`` first, then moved into place (replacing an earlier attempt)."""
    staging_area = results_dir / PARTIAL_DIR
    staging = staging_area / run_id
    if staging.exists():
        shutil.rmtree(staging)
    staging_area.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive_bytes), mode="r:gz") as archive:
        names = {Path(m.name).parts[0] for m in archive.getmembers()}
        if names != {run_id}:
            raise ValueError(f"a packed run holds {sorted(names)}, not {run_id}")
        archive.extractall(staging_area, filter="data")
    promote(staging, results_dir / run_id)
    return results_dir / run_id


MAIN_FLAGS = {"RESOURCES": "print this node's resources as JSON",
              "RUNS_PER_NODE": f"{RUN_SLOT} slots: runs at once here when runs hold no GPU",
              "CC_MODE": "label a machine whose CC mode cannot be detected (no GPU): on or off"}


def main(argv: list[str] | None = None) -> int:
    """``python -m sincere.grid.node --resources``: the JSON of this node's resources for
    ``ray start --resources``."""
    args = parse_constants({"RESOURCES": False, "RUNS_PER_NODE": 1, "CC_MODE": ""}, argv,
                           main.__doc__, comments=MAIN_FLAGS)
    if not args.RESOURCES or args.CC_MODE not in ("", *CC_MODES):
        print("error: give --resources (and --cc-mode on or off, if any)", file=sys.stderr)
        return 2
    try:
        resources = node_resources(args.RUNS_PER_NODE, args.CC_MODE)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not any(cc_name(m) in resources for m in CC_MODES):
        print("note: no CC mode detected here and none given (--cc-mode): a grid with CC_MODES "
              "will not use this node", file=sys.stderr)
    print(json.dumps(resources, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
