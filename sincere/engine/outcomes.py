"""What the engine's calls return, how an out-of-memory is recognised, and how a batch that
fails is retried in parts so that nothing is lost.

Nothing here logs or holds prompt or generated text beyond the texts a batch returns to its
caller: only counts, lengths and error class names are logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

log = logging.getLogger("sincere.engine")

# torch.OutOfMemoryError exists from torch 2.5; torch.cuda.OutOfMemoryError before (same class
# from 2.5 on). OOM_CLASS is what the engine raises and records.
OOM_CLASS: type[RuntimeError] = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
OOM_ERRORS: tuple[type[BaseException], ...] = tuple(dict.fromkeys(
    [OOM_CLASS, torch.cuda.OutOfMemoryError]))
OOM_ERROR_NAME = OOM_CLASS.__name__  # the name in BatchResult.errors of a prompt that ran out
# What allocators say when they run out without raising OutOfMemoryError (a CPU "device", cuBLAS).
_OOM_MESSAGES = ("can't allocate memory", "not enough memory", "out of memory",
                 "CUBLAS_STATUS_ALLOC_FAILED")


class EngineError(RuntimeError):
    """A call the engine cannot serve in its current state (nothing resident, unknown model)."""


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an out-of-memory, whether raised as such or as an allocator's RuntimeError."""
    if isinstance(exc, OOM_ERRORS):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _OOM_MESSAGES)


@dataclass(frozen=True)
class LoadResult:
    """How a load went: ``path`` is "disk" or "host_cache"; ``size_gb`` counts the weights.

    ``seconds`` leaves out the one-off pinning of the host copy a first load from disk makes
    (``pin_s`` seconds for ``pinned_bytes``; 0 for every other load), so that a disk load is
    not charged for it.
    """

    alias: str
    seconds: float
    path: str
    size_gb: float
    pin_s: float = 0.0
    pinned_bytes: int = 0


@dataclass
class BatchResult:
    """One ``generate`` call: per-prompt lists in input order, plus the batch's accounting.

    A prompt in ``failed`` has an empty text and 0 output tokens; ``errors[i]`` is the error
    class name of ``failed[i]``. ``retries`` counts the splits after an out-of-memory (no other
    error splits a batch). ``output_ids`` holds each prompt's new token ids (what the texts
    decode from; empty for a failed prompt).
    """

    texts: list[str]
    prompt_tokens: list[int]
    output_tokens: list[int]
    seconds: float
    retries: int = 0
    peak_mem_gib: float | None = None
    failed: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    output_ids: list[list[int]] = field(default_factory=list)

    @property
    def out_of_memory(self) -> bool:
        """True when the batch did not fit whole: it was split for memory, or a single prompt
        ran out."""
        return self.retries > 0 or OOM_ERROR_NAME in self.errors

    @property
    def other_errors(self) -> list[str]:
        """The error class names, other than out-of-memory, that failed prompts (sorted)."""
        return sorted(set(self.errors) - {OOM_ERROR_NAME})


# One part of a batch: (texts, prompt tokens, output tokens, output ids), each per prompt.
PartOutput = tuple[Sequence[str], Sequence[int], Sequence[int], Sequence[list[int]]]


@dataclass
class SplitOutcome:
    """What ``run_in_parts`` gathered, per prompt in input order, and its accounting."""

    texts: list[str]
    prompt_tokens: list[int]
    output_tokens: list[int]
    output_ids: list[list[int]]
    errors: dict[int, str]  # prompt index -> error class name
    retries: int = 0  # splits after an out-of-memory


def run_in_parts(run: Callable[[list[int]], PartOutput], count: int,
                 free_after_oom: Callable[[], None]) -> SplitOutcome:
    """Run prompts ``0..count-1`` with ``run(indices)``. Only an out-of-memory splits a part in
    halves to retry, down to single prompts, so that a batch too large for the device is still
    served whole. Any other error (a compile error, a bad input, a sticky CUDA error) would
    fail again however the part is cut, so it fails every prompt of that part at once, with
    its error class name: never 2N - 1 retries of a deterministic failure, and nothing lost."""
    outcome = SplitOutcome([""] * count, [0] * count, [0] * count,
                           [[] for _ in range(count)], {})
    pending = [list(range(count))] if count else []
    while pending:  # depth-first, so results come in order of the halves
        indices = pending.pop()
        error: str | None = None
        try:
            part = run(indices)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, never lost
            error = OOM_ERROR_NAME if is_out_of_memory(exc) else type(exc).__name__
        if error is None:
            for i, text, n_prompt, n_output, ids in zip(indices, *part, strict=True):
                outcome.texts[i], outcome.prompt_tokens[i] = text, n_prompt
                outcome.output_tokens[i], outcome.output_ids[i] = n_output, ids
            continue
        # Outside the except block, so the traceback's tensors are gone.
        if error == OOM_ERROR_NAME:
            free_after_oom()
        if error != OOM_ERROR_NAME or len(indices) == 1:
            log.error("%d prompt(s) failed (%s); recorded as failed", len(indices), error)
            outcome.errors.update(dict.fromkeys(indices, error))
            continue
        outcome.retries += 1
        half = len(indices) // 2
        log.warning("%s at batch %d: retrying as %d + %d", error, len(indices), half,
                    len(indices) - half)
        pending.extend([indices[half:], indices[:half]])
    return outcome
