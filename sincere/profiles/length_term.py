"""A batch's time follows its longest prompt: the length term of a profile, and the prompt
lengths a simulated batch is timed by.

A batch engine pads every prompt of a batch to the longest one, so the batch computes
b × longest prompt positions before its first new token, and every decoding step attends over
them. Two batches of the same size can then differ by half their time: on the 2-core CPU machine
the tiny models' batches of 11 took 0.30 s and 0.42 s in one profile, and the batches the server
ran were 9-22% slower than the profile's mean at their size, because the traffic's prompts and
larger batches' longest prompts were longer than the profile's (README of issue 11).

A profile that records each batch's longest prompt (``prompt_tokens_max``) gets, per model and
max_new_tokens, the fit

    P(b, longest) = alpha(b) + per_token · b · longest

with one alpha per profiled size (linear between them, as P(b)) and one per_token for all sizes,
by least squares over every measured batch: the size's own measured cost, corrected by how much
longer or shorter its longest prompt is. A single line in b (alpha = a + c·b) does not do: on the
CPU it missed the small batches, which most served batches are, by 20-35%. The simulator times
a batch with it when it knows the prompts a run serves: the same prompt ids the traffic generator
draws (the same seed and the same workloads folder), counted with each model's own tokenizer as
the engine counts them. Without either it falls back to P(b).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sincere.profiles.piecewise import piecewise_linear

MIN_SIZES = 2  # distinct batch sizes a fit needs, and one more row than sizes


@dataclass(frozen=True)
class LengthFit:
    """P(b, longest) = alpha(b) + per_token_s·b·longest: ``alpha_s`` at ``sizes`` (ascending),
    linear between them, the nearest below the smallest, the last segment's slope above the
    largest; fitted on ``rows`` batches, ``relative_sd`` the spread of measured/predicted."""

    sizes: tuple[int, ...]
    alpha_s: tuple[float, ...]
    per_token_s: float
    relative_sd: float
    rows: int

    def processing_s(self, batch_size: int, longest: int) -> float:
        return (piecewise_linear(self.sizes, self.alpha_s, batch_size)
                + self.per_token_s * batch_size * longest)


def fit_length_term(batches: Iterable[tuple[int, float, float]]) -> LengthFit | None:
    """The fit over ``(batch size, longest prompt tokens, seconds)`` measurements; None when
    there are too few (MIN_SIZES sizes and a row more than sizes), no size was measured with two
    different longest prompts (nothing to tell the length's share from the size's), or the fit
    finds no length effect or a time that is not positive at a measured size."""
    rows = [(int(b), float(longest), float(seconds)) for b, longest, seconds in batches
            if b >= 1 and longest > 0 and seconds > 0 and math.isfinite(longest)]
    sizes = sorted({b for b, _, _ in rows})
    if len(sizes) < MIN_SIZES or len(rows) < len(sizes) + 2:
        return None
    design = np.zeros((len(rows), len(sizes) + 1))
    for i, (b, longest, _) in enumerate(rows):
        design[i, sizes.index(b)] = 1.0
        design[i, -1] = b * longest
    seconds = np.array([s for _, _, s in rows])
    coefficients, _, rank, _ = np.linalg.lstsq(design, seconds, rcond=None)
    if rank < design.shape[1] or coefficients[-1] <= 0:
        return None
    predicted = design @ coefficients
    if np.any(predicted <= 0):
        return None
    ratios = seconds / predicted
    spread = float(np.sqrt(np.sum((ratios - 1.0) ** 2) / max(1, len(rows) - design.shape[1])))
    return LengthFit(tuple(sizes), tuple(float(a) for a in coefficients[:-1]),
                     float(coefficients[-1]), spread, len(rows))


def prompt_token_counts(prompts: Mapping[str, str], models: Sequence[str], models_dir: Path
                        ) -> dict[str, dict[str, int]]:
    """Tokens of each prompt under each model's tokenizer in ``models_dir``, as the engine
    counts a prompt (sincere.engine.engine.Engine.count_tokens): {model: {prompt id: tokens}}.
    Raises sincere.engine.engine.EngineError for a model that is not in ``models_dir``."""
    from sincere.engine.model_folders import ModelFolders

    folders = ModelFolders(models_dir)
    ids = sorted(prompts)
    counts: dict[str, dict[str, int]] = {}
    for model in models:
        tokenizer = folders.read_tokenizer(model)
        encoded = tokenizer([prompts[i] for i in ids])["input_ids"]
        counts[model] = {prompt_id: len(tokens) for prompt_id, tokens
                         in zip(ids, encoded, strict=True)}
    return counts


def served_prompt_tokens(models: Sequence[str], prompt_ids: Sequence[str],
                         counts: Mapping[str, Mapping[str, int]]) -> list[int | None]:
    """Each request's prompt tokens (None where its model or prompt was not counted)."""
    return [counts.get(model, {}).get(prompt_id)
            for model, prompt_id in zip(models, prompt_ids, strict=True)]
