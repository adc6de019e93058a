"""The grid on a Ray cluster: one Ray task per run, each on a node with a free GPU (or run slot)
of the CC mode the run asks for; every run directory comes back and lands in RESULTS_DIR.

ray is imported only inside these functions, so that a grid without Ray never needs it. The
task body is ``sincere.grid.node.run_on_node``: the very ``run_point`` of a local run, on the node.
Tasks are never retried by Ray (a run redone on another node would not be the same
measurement): a task lost with its worker or its node comes back as a failed run, which a
rerun of the grid redoes, as it redoes any failed run.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sincere.cli import parse_constants
from sincere.grid.children import ROOT, STOP_GRACE_S
from sincere.grid.node import RUN_SLOT, node_profiles, node_resources, run_on_node, unpack_run
from sincere.grid.points import CC_MODES, GridRun, cc_name
from sincere.grid.runner import RunSpec, keep_unrun

CC_SHARE = 0.001  # of a node's cc_<mode> resource (1) a run holds: a label, not a limit
# After Ctrl-C, how long runs may take to stop their generator and server (run_point's
# SIGTERM, grace, SIGKILL for each) before their Ray workers are killed outright.
CANCEL_GRACE_S = 2 * (STOP_GRACE_S + 5.0) + 5.0
WAIT_POLL_S = 1.0  # the driver's wait for finished runs returns this often (Ctrl-C lands)
NODE_CHECK_S = 15.0  # how often the driver checks that waiting runs still have a node


class ClusterError(RuntimeError):
    """The grid cannot go to the cluster (no connection, no node that can take its runs)."""


@dataclass(frozen=True)
class ClusterConfig:
    """run_experiments.py's Ray constants."""

    address: str  # local, auto, host:port or ray://host:port
    run_gpus: float = 1.0  # GPUs a run holds where the nodes have GPUs
    runs_per_node: int = 1  # the local instance's run slots (cluster nodes set theirs)
    node_root: str = ""  # the checkout on the nodes ("" = where it is here)

    @property
    def root_on_nodes(self) -> Path:
        return Path(self.node_root) if self.node_root else ROOT


@contextlib.contextmanager
def connected(config: ClusterConfig) -> Iterator[Any]:
    """The ray module, connected to ``config.address`` (a local instance started) until the
    block ends."""
    import ray

    _connect(ray, config)
    try:
        yield ray
    finally:
        ray.shutdown()


def profiles_on_nodes(ray: Any, cc_modes: Iterable[str], config: ClusterConfig,
                      profile_args: tuple) -> dict[str, dict[str, Any]]:
    """The profile set the servers of each CC mode ("" = any node) will plan with, resolved on
    a node of that mode (``PROFILES=auto`` picks a node's own device and mode), as
    ``ProfileSet.describe()``: the runs' identities need it before they run."""
    name, profiles_dir, *rest = profile_args
    task = ray.remote(node_profiles)
    refs = {mode: task.options(num_cpus=0, max_retries=0,
                               resources={cc_name(mode): CC_SHARE} if mode else {})
            .remote(name, str(_on_node(profiles_dir, config.root_on_nodes)), *rest)
            for mode in dict.fromkeys(cc_modes)}
    try:
        return {mode: ray.get(ref) for mode, ref in refs.items()}
    except Exception as exc:  # noqa: BLE001 - a node's ValueError comes back as a Ray error
        raise ClusterError(f"could not resolve the profile set {name!r} on the nodes: "
                           f"{type(exc).__name__}: {exc}") from None


def run_on_ray(ray: Any, runs: Sequence[GridRun], spec_for: Callable[[GridRun], RunSpec],
               config: ClusterConfig, on_done: Callable[[GridRun, dict[str, Any]], None],
               log: Callable[[str], None] = print) -> None:
    """Run ``runs`` as Ray tasks (``ray`` connected, see ``connected``) and call ``on_done``
    with each run.json as runs finish, their directories already in place. KeyboardInterrupt
    cancels every task (each stops its server and generator) and is raised again."""
    pending: dict[Any, GridRun] = {}
    try:
        use_gpus = config.run_gpus > 0 and _alive_total(ray, "GPU") > 0
        need = ("GPU", config.run_gpus) if use_gpus else (RUN_SLOT, 1.0)
        log(_check_capacity(ray, {r.cc_mode for r in runs}, *need))
        task = ray.remote(run_on_node)
        for run in runs:
            options = task_options(run, use_gpus, config.run_gpus)
            node_spec = for_node(spec_for(run), config.root_on_nodes)
            ref = task.options(**options).remote(run.point, node_spec, run.cc_mode,
                                                 str(config.root_on_nodes))
            pending[ref] = run
        stranded: set[str] = set()  # modes whose waiting runs no alive node can take
        next_check = time.monotonic() + NODE_CHECK_S
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_POLL_S)
            for ref in ready:
                run = pending.pop(ref)
                on_done(run, _collect(ray, ref, run, spec_for(run)))
            if time.monotonic() >= next_check:
                stranded = _say_stranded(ray, pending.values(), *need, stranded, log)
                next_check = time.monotonic() + NODE_CHECK_S
    except KeyboardInterrupt:
        _cancel(ray, list(pending))
        raise


def task_options(run: GridRun, use_gpus: bool, run_gpus: float) -> dict[str, Any]:
    """What a run's task asks Ray for: a GPU (or a run slot), and its CC mode's label; no CPU
    (the run's processes are not Ray workers), and no retry."""
    resources = {} if use_gpus else {RUN_SLOT: 1.0}
    if run.cc_mode:
        resources[cc_name(run.cc_mode)] = CC_SHARE
    return {"num_cpus": 0, "num_gpus": run_gpus if use_gpus else 0, "resources": resources,
            "max_retries": 0, "name": f"sincere {run.label}"}


def for_node(spec: RunSpec, node_root: Path) -> RunSpec:
    """``spec`` with every path inside this checkout moved to the same place under
    ``node_root`` (models, prompts, profiles, a trace); other paths are kept as they are."""

    def move(value: Any) -> Any:
        return _on_node(value, node_root) if isinstance(value, Path) else value

    return replace(spec, server_options={k: move(v) for k, v in spec.server_options.items()},
                   generator_options={k: move(v) for k, v in spec.generator_options.items()})


def _on_node(path: Path, node_root: Path) -> Path:
    """A path inside this checkout moved to the same place under ``node_root``."""
    return node_root / path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def _connect(ray: Any, config: ClusterConfig) -> None:
    """Start a local Ray instance (``local``) or join a cluster; the nodes import sincere from
    their checkout (PYTHONPATH), which a Ray Client driver does not otherwise give them."""
    sigterm = signal.getsignal(signal.SIGTERM)  # ray.init replaces the driver's handler
    kwargs: dict[str, Any] = {
        "log_to_driver": False, "logging_level": logging.WARNING,
        "runtime_env": {"env_vars": {"PYTHONPATH": str(config.root_on_nodes)}}}
    if config.address == "local":
        kwargs.update(include_dashboard=False,
                      resources=node_resources(config.runs_per_node))
    try:
        ray.init(address=config.address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"could not start or join Ray at {config.address!r}: "
                           f"{type(exc).__name__}: {exc}") from None
    finally:
        signal.signal(signal.SIGTERM, sigterm)


def _alive_nodes(ray: Any) -> list[dict[str, float]]:
    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def _alive_total(ray: Any, resource: str) -> float:
    return sum(node.get(resource, 0.0) for node in _alive_nodes(ray))


def _able_nodes(nodes: Sequence[dict[str, float]], cc_mode: str, unit: str,
                need: float) -> list[dict[str, float]]:
    """The nodes that could take a run of ``cc_mode`` ("" = any) holding ``need`` ``unit``."""
    return [n for n in nodes if n.get(unit, 0.0) >= need
            and (not cc_mode or n.get(cc_name(cc_mode), 0.0) > 0)]


def _slots(nodes: Sequence[dict[str, float]], unit: str, need: float) -> float:
    """How many runs holding ``need`` ``unit`` these nodes take at once."""
    return sum(n.get(unit, 0.0) // need for n in nodes)


def run_slots(ray: Any, cc_modes: Iterable[str], run_gpus: float) -> dict[str, float]:
    """How many runs of each CC mode ("" = any node) the alive nodes take at once: their GPUs
    (``run_gpus`` a run), or their run slots where no node has a GPU."""
    use_gpus = run_gpus > 0 and _alive_total(ray, "GPU") > 0
    unit, need = ("GPU", run_gpus) if use_gpus else (RUN_SLOT, 1.0)
    nodes = _alive_nodes(ray)
    return {mode: _slots(_able_nodes(nodes, mode, unit, need), unit, need)
            for mode in dict.fromkeys(cc_modes)}


def _check_capacity(ray: Any, cc_modes: set[str], unit: str, need: float) -> str:
    """One line on what each mode's runs will use; ClusterError when a mode has no node that
    could ever take its runs (Ray would wait for one forever)."""
    nodes = _alive_nodes(ray)
    parts = []
    for mode in sorted(cc_modes):
        able = _able_nodes(nodes, mode, unit, need)
        if not able:
            advertise = (f" advertising {cc_name(mode)}" if mode else "")
            raise ClusterError(
                f"no node of the Ray cluster{advertise} has {need:g} {unit} for a run "
                f"({len(nodes)} nodes alive; see docs/cluster.md for `ray start --resources`)")
        slots = _slots(able, unit, need)
        where = f"{cc_name(mode)} " if mode else ""
        parts.append(f"{where}on {len(able)} node{'s' * (len(able) != 1)}, "
                     f"{slots:g} at once")
    return (f"ray: {len(nodes)} nodes alive; each run holds {need:g} {unit}; runs "
            f"{'; '.join(parts)}")


def _say_stranded(ray: Any, waiting: Iterable[GridRun], unit: str, need: float,
                  said: set[str], log: Callable[[str], None]) -> set[str]:
    """Say once when a mode's waiting runs lose the last node that could take them (it died):
    they wait for one to join, as Ray does; the modes stranded now."""
    nodes = _alive_nodes(ray)
    stranded = {run.cc_mode for run in waiting if not _able_nodes(nodes, run.cc_mode, unit, need)}
    for mode in sorted(stranded - said):
        which = f"{cc_name(mode)} " if mode else ""
        log(f"ray: no alive node can take the waiting {which}runs; they wait for one to join "
            "(ray start on such a node), or Ctrl-C")
    return stranded


def _collect(ray: Any, ref: Any, run: GridRun, spec: RunSpec) -> dict[str, Any]:
    """A finished task's run.json, its directory landed in place; a task that was lost (its
    worker or node died, it could not start) is kept as a failed run that names why."""
    try:
        result, archive = ray.get(ref)
    except ray.exceptions.RayError as exc:
        return keep_unrun(run.point, spec, task_failure(exc), log=lambda _line: None,
                          files_lost=True)
    try:
        unpack_run(archive, run.results_dir, run.point.run_id)
    except (OSError, ValueError, tarfile.TarError) as exc:
        return keep_unrun(run.point, spec, f"the run came back but could not be unpacked: "
                          f"{type(exc).__name__}: {exc}", log=lambda _line: None)
    return result


def task_failure(exc: BaseException) -> str:
    """A lost task's failure, in a line: the Ray error and the first two sentences of its
    message (Ray's go on with advice)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = ". ".join(lines[0].split(". ")[:2])[:300] if lines else ""
    hint = ""
    if "No module named 'sincere'" in str(exc):
        hint = " (is the checkout at NODE_ROOT on that node?)"
    return f"the Ray task was lost: {type(exc).__name__}: {detail}{hint}"


def _cancel(ray: Any, refs: list[Any]) -> None:
    """Cancel every task: a waiting one never starts; a running one gets KeyboardInterrupt,
    so run_point stops its server and generator; one still running after CANCEL_GRACE_S has
    its worker killed, and its children follow (their parent-death signal)."""
    if not refs:
        return
    print(f"interrupted: cancelling {len(refs)} Ray tasks (their servers stop within "
          f"{CANCEL_GRACE_S:.0f} s)", file=sys.stderr, flush=True)
    for ref in refs:
        ray.cancel(ref)
    _, left = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S)
    for ref in left:
        ray.cancel(ref, force=True)
    if left:
        ray.wait(left, num_returns=len(left), timeout=10.0)


def describe_nodes(nodes: Sequence[dict[str, Any]]) -> list[str]:
    """One line per alive node of ``ray.nodes()``: its address, GPUs, run slots and CC mode."""
    lines = []
    for node in nodes:
        if not node.get("Alive"):
            continue
        resources = node.get("Resources", {})
        modes = [m for m in CC_MODES if resources.get(cc_name(m), 0) > 0]
        lines.append(f"{node.get('NodeManagerAddress', '?'):<16} GPU {resources.get('GPU', 0):g}"
                     f"  {RUN_SLOT} {resources.get(RUN_SLOT, 0):g}"
                     f"  CC {', '.join(modes) or 'not advertised'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """``python -m sincere.grid.cluster --nodes``: what each node of the Ray cluster offers a
    grid."""
    args = parse_constants({"NODES": False, "ADDRESS": "auto"}, argv, main.__doc__, comments={
        "NODES": "list the alive nodes: GPUs, run slots, CC mode",
        "ADDRESS": "the Ray cluster to ask"})
    if not args.NODES:
        print("error: give --nodes", file=sys.stderr)
        return 2
    import ray

    try:
        ray.init(address=args.ADDRESS, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        print(f"error: could not join Ray at {args.ADDRESS!r}: {exc}", file=sys.stderr)
        return 2
    try:
        print("\n".join(describe_nodes(ray.nodes())))
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
