"""Read model-loading and batch profiles (SPEC section 3) and answer the scheduler's questions.

Per model: load time L = mean + k·std, unload time U, processing time P(b) for any batch size b
(piecewise-linear between profiled sizes), the largest batch that fit, and the best batch B
(highest throughput). P is kept per max_new_tokens; for a token count that was not profiled,
the nearest profiled count is scaled in proportion (decoding time grows with the steps taken).
A profile that records each batch's longest prompt also has P(b, longest), its length term
(sincere.profiles.length_term), which the simulator times batches with when it knows their prompts.
"""

from __future__ import annotations

import bisect
import csv
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from sincere import REPO_ROOT
from sincere.files import file_digest
from sincere.profiles.length_term import LengthFit, fit_length_term
from sincere.profiles.piecewise import piecewise_linear
from sincere.schemas import BATCH_PROFILE_COLUMNS, LOADING_PROFILE_COLUMNS

DEFAULT_PROFILES_DIR = REPO_ROOT / "profiling_results"


class ProfileError(ValueError):
    """A profile file is missing, malformed, or lacks what the run needs."""


@dataclass(frozen=True)
class BatchCurve:
    """Processing time against batch size for one max_new_tokens (non-OOM sizes, ascending)."""

    max_new_tokens: int
    sizes: tuple[int, ...]
    mean_s: tuple[float, ...]
    std_s: tuple[float, ...]
    length: LengthFit | None = None  # P(b, longest prompt), where the profile has the lengths

    def processing_s(self, batch_size: int) -> float:
        """P(b): linear between profiled sizes, the smallest size's time below it, the last
        segment's slope above the largest."""
        return piecewise_linear(self.sizes, self.mean_s, batch_size)

    def std_at(self, batch_size: int) -> float:
        i = min(bisect.bisect_left(self.sizes, batch_size), len(self.sizes) - 1)
        return self.std_s[i]


@dataclass(frozen=True)
class ModelProfile:
    model: str
    size_gb: float
    load_mean_s: float
    load_std_s: float
    unload_mean_s: float
    unload_std_s: float
    curves: dict[int, BatchCurve]  # by max_new_tokens
    max_batch: dict[int, int]  # largest size that fit, by max_new_tokens
    load_path: str = ""
    copy_mode: str = ""  # how host-cache swaps copy (sincere.engine.weights.COPY_MODES); "" unknown

    def _curve(self, max_new_tokens: int) -> tuple[BatchCurve, float]:
        """The curve for ``max_new_tokens``, or the nearest one and the time scale to apply."""
        if max_new_tokens in self.curves:
            return self.curves[max_new_tokens], 1.0
        nearest = min(self.curves, key=lambda t: (abs(t - max_new_tokens), t))
        return self.curves[nearest], max_new_tokens / nearest

    def processing_s(self, batch_size: int, max_new_tokens: int) -> float:
        curve, scale = self._curve(max_new_tokens)
        return curve.processing_s(batch_size) * scale

    def processing_std_s(self, batch_size: int, max_new_tokens: int) -> float:
        curve, scale = self._curve(max_new_tokens)
        return curve.std_at(batch_size) * scale

    def processing_for_prompts_s(self, batch_size: int, longest: int, max_new_tokens: int
                                 ) -> tuple[float, float] | None:
        """(mean, std) of a batch whose longest prompt has ``longest`` tokens, from the length
        term (sincere.profiles.length_term); None when the profile has none."""
        curve, scale = self._curve(max_new_tokens)
        if curve.length is None:
            return None
        mean = curve.length.processing_s(batch_size, longest) * scale
        return mean, mean * curve.length.relative_sd

    def batch_time_s(self, batch_size: int, longest: int | None, max_new_tokens: int
                     ) -> tuple[float, float]:
        """(mean, std) of a batch: by its longest prompt (``longest`` tokens) where that is
        known and the profile has a length term, else by its size, P(b)."""
        by_length = (self.processing_for_prompts_s(batch_size, longest, max_new_tokens)
                     if longest is not None else None)
        return by_length or (self.processing_s(batch_size, max_new_tokens),
                             self.processing_std_s(batch_size, max_new_tokens))

    def has_length_term(self) -> bool:
        return any(curve.length is not None for curve in self.curves.values())

    def largest_batch(self, max_new_tokens: int) -> int:
        curve, _ = self._curve(max_new_tokens)
        return self.max_batch[curve.max_new_tokens]

    def least_time_per_request_s(self, max_new_tokens: int) -> float:
        """min over the profiled batch sizes that fit of P(b) / b: the least GPU time one
        request can take (at the best batch, by definition of B)."""
        best = self.best_batch(max_new_tokens)
        return self.processing_s(best, max_new_tokens) / best

    def best_batch(self, max_new_tokens: int) -> int:
        """The profiled batch size with the highest throughput (the smaller one on a tie)."""
        curve, _ = self._curve(max_new_tokens)
        rates = [b / p for b, p in zip(curve.sizes, curve.mean_s, strict=True)]
        return curve.sizes[rates.index(max(rates))]


def profiles_digest(loading_file: str, batch_file: str) -> str:
    """The digest of a profile set: its two files' contents, whatever they are called."""
    return f"{file_digest(str(loading_file))}-{file_digest(str(batch_file))}"


@dataclass(frozen=True)
class ProfileSet:
    """The profiles a run uses: one ModelProfile per model, and where they came from."""

    models: dict[str, ModelProfile]
    device: str
    cc_mode: str
    loading_file: str
    batch_file: str
    std_factor: float = 1.0  # k in L = mean + k·std
    dtype: str = ""
    sources: tuple[str, ...] = field(default_factory=tuple)

    def describe(self, name: str) -> dict[str, object]:
        """The ``profiles`` entry of run.json: the set's name as given, where it came from and
        a digest of the two files' contents (the simulator and the server write it alike)."""
        return {"name": name, "loading_file": self.loading_file, "batch_file": self.batch_file,
                "digest": profiles_digest(self.loading_file, self.batch_file),
                "device": self.device, "cc_mode": self.cc_mode, "std_factor": self.std_factor}

    def __getitem__(self, model: str) -> ModelProfile:
        try:
            return self.models[model]
        except KeyError:
            raise ProfileError(
                f"no profile for model {model!r} in {self.loading_file} / {self.batch_file}; "
                f"profiled models: {', '.join(sorted(self.models))}") from None

    def load_s(self, model: str) -> float:
        p = self[model]
        return p.load_mean_s + self.std_factor * p.load_std_s

    def unload_s(self, model: str) -> float:
        p = self[model]
        return p.unload_mean_s + self.std_factor * p.unload_std_s

    def swap_s(self, current: str | None, target: str) -> float:
        """swap(c→m): 0 when m is resident, else U_c + L_m (U = 0 when nothing is loaded)."""
        if current == target:
            return 0.0
        return (self.unload_s(current) if current else 0.0) + self.load_s(target)


def _float(row: dict[str, str], column: str, where: str, default: float | None = None) -> float:
    text = (row.get(column) or "").strip()
    if not text:
        if default is not None:
            return default
        raise ProfileError(f"{where}: column {column!r} is empty")
    try:
        value = float(text)
    except ValueError:
        raise ProfileError(f"{where}: column {column!r} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise ProfileError(f"{where}: column {column!r} is not finite: {text!r}")
    return value


def _read_rows(path: Path, required: list[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise ProfileError(f"profile file not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise ProfileError(f"{path}: missing columns {', '.join(missing)}")
            rows = []
            for row in reader:
                # DictReader fills a short row with None and files a long row's rest under None.
                if None in row or None in row.values():
                    fields = (sum(v is not None for k, v in row.items() if k is not None)
                              + len(row.get(None) or []))
                    raise ProfileError(f"{path} line {reader.line_num}: {fields} fields "
                                       f"where the header has {len(reader.fieldnames or [])}")
                rows.append(row)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ProfileError(f"{path}: not a readable CSV ({exc})") from None
    if not rows:
        raise ProfileError(f"{path}: no rows")
    return rows


def _is_true(text: str | None) -> bool:
    return (text or "").strip().lower() in {"true", "1", "yes"}


def read_loading_profile(path: Path) -> dict[str, dict[str, object]]:
    """Rows of a model_loading_times CSV by model, numbers parsed."""
    result: dict[str, dict[str, object]] = {}
    for n, row in enumerate(_read_rows(path, LOADING_PROFILE_COLUMNS), start=2):
        where = f"{path} line {n}"
        model = row["model"].strip()
        if not model:
            raise ProfileError(f"{where}: empty model name")
        result[model] = {
            "size_gb": _float(row, "size_gb", where, default=0.0),
            "load_mean_s": max(0.0, _float(row, "load_mean_s", where)),
            "load_std_s": max(0.0, _float(row, "load_std_s", where, default=0.0)),
            "unload_mean_s": max(0.0, _float(row, "unload_mean_s", where)),
            "unload_std_s": max(0.0, _float(row, "unload_std_s", where, default=0.0)),
            "device": row.get("device", "").strip(),
            "cc_mode": row.get("cc_mode", "").strip() or "unknown",
            "dtype": row.get("dtype", "").strip(),
            "load_path": (row.get("load_path") or "").strip(),
            "copy_mode": (row.get("copy_mode") or "").strip(),
            "source": (row.get("source") or "").strip(),
        }
    return result


def read_batch_profile(path: Path) -> tuple[dict[str, dict[int, BatchCurve]],
                                            dict[str, dict[int, int]], set[str]]:
    """Curves and largest fitting sizes by model and max_new_tokens, and the sources named."""
    times: dict[tuple[str, int], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    lengths: dict[tuple[str, int], list[tuple[int, float, float]]] = defaultdict(list)
    sources: set[str] = set()
    for n, row in enumerate(_read_rows(path, BATCH_PROFILE_COLUMNS), start=2):
        where = f"{path} line {n}"
        model = row["model"].strip()
        batch_size = int(_float(row, "batch_size", where))
        tokens = int(_float(row, "max_new_tokens", where))
        if batch_size < 1 or tokens < 1:
            raise ProfileError(f"{where}: batch_size and max_new_tokens must be at least 1")
        if row.get("source"):
            sources.add(row["source"].strip())
        if _is_true(row.get("oom")):
            times[(model, tokens)]  # a model whose only rows are OOM still shows up below
            continue
        seconds = _float(row, "processing_time_s", where)
        if seconds <= 0:
            raise ProfileError(f"{where}: processing_time_s must be positive")
        times[(model, tokens)][batch_size].append(seconds)
        if (row.get("prompt_tokens_max") or "").strip():
            longest = _float(row, "prompt_tokens_max", where)
            lengths[(model, tokens)].append((batch_size, longest, seconds))
    curves: dict[str, dict[int, BatchCurve]] = defaultdict(dict)
    max_batch: dict[str, dict[int, int]] = defaultdict(dict)
    for (model, tokens), by_size in times.items():
        if not by_size:
            raise ProfileError(f"{path}: model {model!r} has no batch that fit in memory")
        sizes = tuple(sorted(by_size))
        means = tuple(sum(by_size[b]) / len(by_size[b]) for b in sizes)
        stds = tuple(_std(by_size[b]) for b in sizes)
        curves[model][tokens] = BatchCurve(tokens, sizes, means, stds,
                                           fit_length_term(lengths[(model, tokens)]))
        max_batch[model][tokens] = sizes[-1]
    return dict(curves), dict(max_batch), sources


def _std(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def find_profile_files(name: str, directory: Path = DEFAULT_PROFILES_DIR) -> tuple[Path, Path]:
    """The newest ``model_loading_times_<name>*.csv`` and ``batch_profiling_<name>*.csv``
    (a measured profile before a shipped example of the same set).

    ``name`` is a profile set's ``<device>_<cc|noncc>`` prefix (``h100_noncc``), optionally with
    its stamp; or a directory to take the newest pair from; or two paths joined by a comma.
    """
    if "," in name:
        loading, batch = (Path(p.strip()) for p in name.split(",", 1))
        return loading, batch
    candidate = Path(name)
    if candidate.is_dir():
        directory, name = candidate, ""
    found = []
    for kind in ("model_loading_times", "batch_profiling"):
        # Newest stamp last; shipped examples (``..._example-<date>``) rank below anything
        # measured, so a profile measured on the machine wins over the example of its set.
        matches = sorted(directory.glob(f"{kind}_{name}*.csv"),
                         key=lambda p: ("_example" not in p.stem, p.name))
        if not matches:
            available = sorted(p.name for p in directory.glob("model_loading_times_*.csv"))
            raise ProfileError(
                f"no {kind}_{name}*.csv in {directory}; loading profiles there: "
                f"{', '.join(available) or 'none'}")
        found.append(matches[-1])
    return found[0], found[1]


def load_profiles(name: str, directory: Path = DEFAULT_PROFILES_DIR,
                  std_factor: float = 1.0) -> ProfileSet:
    """Read the profile set ``name`` (see find_profile_files) into a ProfileSet."""
    loading_file, batch_file = find_profile_files(name, directory)
    loading = read_loading_profile(loading_file)
    curves, max_batch, batch_sources = read_batch_profile(batch_file)
    models = {}
    for model, row in loading.items():
        if model not in curves:
            raise ProfileError(f"{batch_file}: no batch rows for model {model!r} "
                               f"(it is in {loading_file})")
        models[model] = ModelProfile(
            model=model, size_gb=float(row["size_gb"]), load_mean_s=float(row["load_mean_s"]),
            load_std_s=float(row["load_std_s"]), unload_mean_s=float(row["unload_mean_s"]),
            unload_std_s=float(row["unload_std_s"]), curves=curves[model],
            max_batch=max_batch[model], load_path=str(row["load_path"]),
            copy_mode=str(row["copy_mode"]))
    first = next(iter(loading.values()))
    cc_modes = {str(r["cc_mode"]) for r in loading.values()}
    sources = {str(r["source"]) for r in loading.values() if r["source"]} | batch_sources
    return ProfileSet(models=models, device=str(first["device"]),
                      cc_mode=cc_modes.pop() if len(cc_modes) == 1 else "unknown",
                      loading_file=str(loading_file), batch_file=str(batch_file),
                      std_factor=std_factor, dtype=str(first["dtype"]),
                      sources=tuple(sorted(sources)))
