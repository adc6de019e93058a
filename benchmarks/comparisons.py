"""What the GPU check measures besides the engine itself: host-to-device bandwidth, the original
study's way of generating (the Hugging Face text-generation pipeline), and how many tokens two
ways of decoding agree on. Prompts are the project's synthetic ones, never user text.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from benchmarks.check_report import Report


def token_agreement(static: list[list[int]], eager: list[list[int]]) -> dict[str, float]:
    """Share of new tokens (row by row, position by position) that are equal, and share of
    rows whose first new token is equal (the prefill alone)."""
    pairs = [(a, b) for row_a, row_b in zip(static, eager, strict=True)
             for a, b in zip(row_a, row_b, strict=False)]
    total = max(len(pairs), 1)
    first = [bool(a) and bool(b) and a[0] == b[0] for a, b in zip(static, eager, strict=True)]
    return {"fraction": sum(a == b for a, b in pairs) / total,
            "first_token_fraction": sum(first) / max(len(first), 1), "tokens": len(pairs)}


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
