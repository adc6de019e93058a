"""Model folders on disk, read without torch: which are complete, what each is (its marker),
their weights' size from the safetensors headers, and ``manifest.csv``.

``sincere.assets.models`` writes the folders (download, random weights); this module only
reads them and writes the marker and the manifest, so that a check before a long job (models
missing, of another kind, disk to find) runs in a fraction of a second.
"""

from __future__ import annotations

import json
import struct
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sincere.assets.architectures import HUB_IDS
from sincere.files import CsvWriter

MARKER_FILE = "sincere_model.json"
MANIFEST_FILE = "manifest.csv"
MANIFEST_COLUMNS = ["alias", "hub_id", "kind", "family", "params", "size_gb", "dtype", "path",
                    "created_epoch_s"]
KINDS = ("hub", "random", "tiny")


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The ``sincere_model.json`` a finished folder carries, or None."""
    path = folder / MARKER_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def _weights_complete(folder: Path) -> bool:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        return bool(shards) and all((folder / shard).is_file() for shard in shards)
    return (folder / "model.safetensors").is_file()


def is_complete(folder: Path) -> bool:
    """True when the folder holds config, weights, tokenizer and the completion marker."""
    has_tokenizer = (folder / "tokenizer.json").is_file() or (folder / "tokenizer.model").is_file()
    return ((folder / "config.json").is_file() and has_tokenizer and _weights_complete(folder)
            and read_marker(folder) is not None)


def write_marker(folder: Path, alias: str, hub_id: str, kind: str, family: str) -> None:
    """Record what the folder is; written last, so its presence means the folder is complete."""
    marker = {"alias": alias, "hub_id": hub_id, "kind": kind, "family": family,
              "created_epoch_s": round(time.time(), 3)}
    (folder / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")


_SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64",
                       "I64": "int64", "I32": "int32", "U8": "uint8", "I8": "int8",
                       "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def safetensors_summary(folder: Path) -> tuple[int, int, str]:
    """(parameters, weight bytes, main dtype) from the safetensors headers, reading no weights."""
    params = weight_bytes = 0
    dtypes: Counter[str] = Counter()
    for path in sorted(folder.glob("*.safetensors")):
        with path.open("rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(header_len))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            numel = 1
            for dim in info["shape"]:
                numel *= dim
            start, end = info["data_offsets"]
            params += numel
            weight_bytes += end - start
            dtypes[info["dtype"]] += numel
    main = dtypes.most_common(1)[0][0] if dtypes else ""
    return params, weight_bytes, _SAFETENSORS_DTYPES.get(main, main.lower())


def scan_models(models_dir: Path) -> list[dict[str, Any]]:
    """One manifest row per model folder (one with a config.json) in ``models_dir``."""
    rows: list[dict[str, Any]] = []
    if not models_dir.is_dir():
        return rows
    for folder in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        if folder.name.startswith(".") or not (folder / "config.json").is_file():
            continue
        marker = read_marker(folder) or {}
        config = json.loads((folder / "config.json").read_text())
        params, weight_bytes, dtype = safetensors_summary(folder)
        rows.append({
            "alias": folder.name,
            "hub_id": marker.get("hub_id", HUB_IDS.get(folder.name, "")),
            "kind": marker.get("kind", "unknown"),
            "family": config.get("model_type", marker.get("family", "")),
            "params": params,
            "size_gb": round(weight_bytes / 1e9, 4),
            "dtype": dtype,
            "path": str(folder),
            "created_epoch_s": marker.get("created_epoch_s", round(folder.stat().st_mtime, 3)),
        })
    return rows


def write_manifest(models_dir: Path) -> Path:
    """Rewrite ``manifest.csv`` from what is actually in ``models_dir``."""
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / MANIFEST_FILE
    with CsvWriter(path, MANIFEST_COLUMNS, flush_each_row=False) as writer:
        writer.write_many(scan_models(models_dir))
    return path


def weights_gb(models_dir: Path, aliases: list[str]) -> dict[str, float]:
    """The weights' size in GB of each alias whose folder is in ``models_dir`` (from the
    safetensors headers); an alias without a folder is left out."""
    return {alias: safetensors_summary(models_dir / alias)[1] / 1e9 for alias in aliases
            if (models_dir / alias / "config.json").is_file()}
