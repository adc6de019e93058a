"""What the GPU check measures besides the engine itself: host-to-device bandwidth, the original
study's way of generating (the Hugging Face text-generation pipeline), and whether two ways of
decoding predict the same tokens. Prompts are the project's synthetic ones, never user text.

Token agreement is measured teacher-forced: the eager engine decodes greedily and records, at
every step, its two highest logits; the static engine then decodes the same prompts with each
step's token forced to eager's, recording its own prediction, so both are scored on the very
same prefixes and one flipped near-tie stays one token (free-running, a flip changes every
later prefix and the rest of the row diverges). A control run scores eager against itself on
other prompts' prefixes: how much the predictions depend on the context at all, which bounds
what agreement on random weights can show.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import transformers

from benchmarks.check_report import Report


class StepRecorder(transformers.LogitsProcessor):
    """Each decoding step's scores of the first ``rows`` rows, reduced as they come: the two
    highest and their token ids, and how many scores were not finite (the ``masked`` ids
    excepted: ``min_new_tokens`` sets EOS to -inf until the last step). With ``forced`` (rows x
    steps token ids), each row's token is then forced to it: the batch decodes on those
    prefixes. Rows past ``rows`` (a static batch's padding) are left alone."""

    def __init__(self, rows: int, masked: Sequence[int] = (),
                 forced: torch.Tensor | None = None) -> None:
        self.rows = rows
        self.masked = sorted(set(masked))
        self.forced = forced
        self.chosen: list[torch.Tensor] = []
        self.top_values: list[torch.Tensor] = []
        self.non_finite: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        real = scores[:self.rows]
        self.chosen.append(real.argmax(dim=-1))  # what greedy decoding takes, as generate does
        self.top_values.append(real.topk(2, dim=-1).values.float())
        checked = real
        if self.masked:
            checked = real.clone()
            checked[:, self.masked] = 0.0
        self.non_finite.append((~torch.isfinite(checked)).sum(dim=-1))
        if self.forced is not None:
            step = len(self.chosen) - 1
            tokens = self.forced[:, step].to(scores.device)
            real.fill_(float("-inf"))
            real[torch.arange(self.rows, device=scores.device), tokens] = 0.0
        return scores

    def result(self) -> dict[str, torch.Tensor]:
        """On the CPU: ``chosen`` (the greedy token before any forcing) and ``non_finite``
        (rows x steps), ``top_values`` (rows x steps x 2)."""
        return {"chosen": torch.stack(self.chosen, dim=1).cpu(),
                "top_values": torch.stack(self.top_values, dim=1).cpu(),
                "non_finite": torch.stack(self.non_finite, dim=1).cpu()}


def teacher_forced_agreement(eager: dict[str, torch.Tensor], static: dict[str, torch.Tensor],
                             control: dict[str, torch.Tensor] | None = None
                             ) -> dict[str, Any]:
    """How often ``static``'s prediction (decoded on eager's tokens) equals eager's, over every
    row and step: ``fraction``; at the first step (the prefill) and after it (the compiled
    decoding steps); eager's top-2 logit gap where they differ (a flip at a near-tie is noise
    of the kernels, one across a wide gap is not); how far the two top logits are apart where
    they agree; the logits that were not finite; with ``control`` (eager on other prompts'
    prefixes), the same fraction for it."""
    same = eager["chosen"] == static["chosen"]
    gap = eager["top_values"][..., 0] - eager["top_values"][..., 1]
    top_diff = (static["top_values"][..., 0] - eager["top_values"][..., 0]).abs()[same]
    flipped_gaps = gap[~same]

    def share(mask: torch.Tensor) -> float | None:
        return round(float(mask.float().mean()), 6) if mask.numel() else None

    def finite_values(values: torch.Tensor) -> torch.Tensor:
        return values[torch.isfinite(values)]

    gaps, flips, diffs = finite_values(gap), finite_values(flipped_gaps), finite_values(top_diff)
    summary = {
        "fraction": share(same), "tokens": int(same.numel()), "rows": int(same.shape[0]),
        "steps": int(same.shape[1]) if same.dim() > 1 else 0,
        "first_step_fraction": share(same[:, :1]), "decode_steps_fraction": share(same[:, 1:]),
        "disagreements": int((~same).sum()),
        "median_top2_gap": round(float(gaps.median()), 5) if gaps.numel() else None,
        "largest_gap_flipped": round(float(flips.max()), 5) if flips.numel() else None,
        "median_top_logit_diff": round(float(diffs.median()), 5) if diffs.numel() else None,
        "max_top_logit_diff": round(float(diffs.max()), 5) if diffs.numel() else None,
        "non_finite_logits": int(eager["non_finite"].sum() + static["non_finite"].sum()),
    }
    if control is not None:
        summary["control_fraction"] = share(control["chosen"] == eager["chosen"])
    return summary


def free_running_agreement(static: list[list[int]], eager: list[list[int]]) -> float:
    """Share of new tokens equal position by position when each way decodes on its own
    tokens (after a flip a row diverges: reported for comparison, not checked)."""
    pairs = [(a, b) for row_a, row_b in zip(static, eager, strict=True)
             for a, b in zip(row_a, row_b, strict=False)]
    return sum(a == b for a, b in pairs) / max(len(pairs), 1)


def prompt_of_tokens(count_tokens: Callable[[str], int], tokens: int, word: str = "w") -> str:
    """Made-up text (``word`` repeated) of exactly ``tokens`` tokens as ``count_tokens`` counts
    them (BOS included, as a batch's length is), found by bisection on the number of words."""
    low, high = 1, max(1, tokens)
    while low < high:
        middle = (low + high) // 2
        if count_tokens(" ".join([word] * middle)) < tokens:
            low = middle + 1
        else:
            high = middle
    text = " ".join([word] * low)
    if count_tokens(text) != tokens:
        raise ValueError(f"no text of {word!r} repeated has exactly {tokens} tokens")
    return text


def made_up_prompts(count: int, max_words: int, seed: int) -> list[str]:
    """The project's synthetic prompts (no user text), cut to 8..max_words words."""
    from sincere.assets.workloads import synthetic_prompts

    prompts = synthetic_prompts(count, seed=seed)
    return [" ".join(p.split()[:8 + (i * 37) % max(1, max_words - 7)])
            for i, p in enumerate(prompts)]


def bandwidth(device: Any, report: Report) -> float:
    """Host-to-device GB/s from host memory pinned as the host cache pins it (registered at its
    exact size), and from pageable memory; on a CPU a host copy's GB/s. The pinned (or CPU)
    figure, the denominator of the swap ratios."""
    import torch

    from sincere.engine.weights import _register, _unregister

    def median_gbps(source: Any, target: Any, copies: int = 3) -> float:
        times = []
        for _ in range(copies):
            if target.is_cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
            target.copy_(source, non_blocking=target.is_cuda)
            if target.is_cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        return source.numel() / statistics.median(times) / 1e9

    if device.type != "cuda":
        host = torch.ones(256 * 2**20, dtype=torch.uint8)
        gbps = median_gbps(host, torch.empty_like(host))
        report.set("bandwidth", {"host_copy_gbps": round(gbps, 2), "note": "CPU: a host copy"})
        return gbps
    host = torch.ones(2 * 2**30, dtype=torch.uint8)
    target = torch.empty_like(host, device=device)
    pageable = median_gbps(host, target)
    registered = _register([host])
    pinned_host = host if registered else host.pin_memory()
    pinned = median_gbps(pinned_host, target)
    if registered:
        _unregister([host.data_ptr()])
    report.set("bandwidth", {"pinned_h2d_gbps": round(pinned, 2),
                             "pageable_h2d_gbps": round(pageable, 2),
                             "pinned_by": "cudaHostRegister" if registered else "pin_memory",
                             "buffer_gib": 2})
    return pinned


def pipeline_seconds(model: Any, tokenizer: Any, prompts: list[str], new_tokens: int,
                     runs: int) -> tuple[float, float]:
    """The original study's way: pipeline('text-generation') over a float32 model, one batch
    of all the prompts; (first call's seconds, median seconds of ``runs`` more)."""
    import torch
    import transformers

    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    generator = transformers.pipeline("text-generation", model=model, tokenizer=tokenizer)
    options = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False,
               "batch_size": len(prompts), "return_full_text": False,
               "pad_token_id": tokenizer.pad_token_id}
    times = []
    for _ in range(1 + runs):
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        outputs = generator(prompts, **options)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
        if len(outputs) != len(prompts):
            raise RuntimeError(f"the pipeline answered {len(outputs)} of {len(prompts)} prompts")
    return times[0], statistics.median(times[1:])


def agreement_runs(engine: Any, prompts: list[str]) -> dict[str, Any]:
    """Teacher-forced agreement of the resident model's static engine with its eager decoding
    (``teacher_forced_agreement``): eager greedy, recorded; eager again on the prompts rotated
    by one row, forced to the first run's tokens (the control); the static engine forced to
    them. Needs a static engine, warmed up for the batch's shape."""
    model = engine._model
    eos = model.generation_config.eos_token_id if engine.exact_new_tokens else None
    masked = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    rows = len(prompts)

    def run(batch: list[str], recorder: StepRecorder) -> dict[str, torch.Tensor]:
        result = engine.generate(batch, logits_processor=recorder)
        if result.failed or result.retries:
            raise RuntimeError(f"agreement run: {len(result.failed)} of {rows} prompts failed "
                               f"({', '.join(sorted(set(result.errors))) or 'split'})")
        return recorder.result()

    with engine.eager_decoding():
        eager = run(prompts, StepRecorder(rows, masked))
        control = run(prompts[1:] + prompts[:1], StepRecorder(rows, masked, eager["chosen"]))
    fallbacks = engine.static.eager_fallbacks
    static = run(prompts, StepRecorder(rows, masked, eager["chosen"]))
    if engine.static.eager_fallbacks != fallbacks:  # eager against eager would agree by design
        raise RuntimeError("agreement run: the prompts are longer than every prompt bucket, so "
                           "the static engine decoded them eagerly")
    return teacher_forced_agreement(eager, static, control)
