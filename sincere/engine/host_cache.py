"""Models kept in host RAM between swaps, and the copy that puts one on the device.

Each model is kept as it is, a module object whose weights are packed in flat host buffers of
their exact size (sincere.engine.weights), pinned once when swaps copy from pinned memory. A swap
copies those buffers into one device arena (sincere.engine.arena), reserved for the largest model
kept, and re-points the module's tensors there; unloading re-points them back. The module, and
whatever was compiled for it, is never rebuilt, nothing is allocated or freed per swap, and a
model's tensors have the same device addresses at every swap.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import transformers

from sincere.engine.arena import DeviceArena
from sincere.engine.weights import (
    COPY_MODES,
    FlatWeights,
    PinReport,
    pack,
    pin,
    to_device,
    to_host,
    unpin,
)

log = logging.getLogger("sincere.engine")

NOT_PINNED = PinReport("none", 0, 0, 0.0)


@dataclass
class HostEntry:
    """A model kept in host RAM between swaps: the module itself, its weights packed in flat
    host buffers, its tokenizer, and how those buffers were pinned."""

    module: torch.nn.Module
    weights: FlatWeights
    tokenizer: transformers.PreTrainedTokenizerBase
    size_gb: float
    pinning: PinReport


class HostCache:
    """The host copies of the models of one engine, by alias, and the arena they swap into.

    ``copy_mode`` (sincere.engine.weights.COPY_MODES) is how a swap copies: the host buffers are
    pinned only for "pinned", on a GPU.
    """

    def __init__(self, device: torch.device, copy_mode: str, copy_threads: int,
                 copy_chunk_bytes: int) -> None:
        if copy_mode not in COPY_MODES:
            raise ValueError(f"copy_mode must be one of {', '.join(COPY_MODES)}, "
                             f"got {copy_mode!r}")
        self.device = torch.device(device)
        self.copy_mode = copy_mode
        self.copy_threads = copy_threads
        self.copy_chunk_bytes = copy_chunk_bytes
        self.arena = DeviceArena(self.device, "weights")
        self.entries: dict[str, HostEntry] = {}

    def __contains__(self, alias: str) -> bool:
        return alias in self.entries

    def get(self, alias: str) -> HostEntry | None:
        """The entry of ``alias``, or None when it is not kept."""
        return self.entries.get(alias)

    def keep(self, alias: str, model: torch.nn.Module,
             tokenizer: transformers.PreTrainedTokenizerBase) -> HostEntry:
        """Keep ``model`` in host RAM: its weights copied into flat host buffers of their exact
        size (its own may be memory-mapped on the file, or on the device), pinned once when
        swaps copy from pinned memory; the pinning's bytes and seconds are kept apart."""
        weights = pack(model)
        wants_pinned = self.copy_mode == "pinned" and self.device.type == "cuda"
        pinning = pin(weights) if wants_pinned else NOT_PINNED
        if wants_pinned and pinning.how == "none":
            log.warning("host memory could not be pinned: swaps copy from pageable memory")
        entry = HostEntry(module=model, weights=weights, tokenizer=tokenizer,
                          size_gb=weights.nbytes / 1e9, pinning=pinning)
        self.entries[alias] = entry
        return entry

    def reserve(self, aliases: Iterable[str]) -> int:
        """Size the arena once for the largest of ``aliases``; its bytes."""
        self.arena.ensure(max((self.entries[a].weights.arena_offsets()[1] for a in aliases),
                              default=0))
        return self.arena.capacity

    def attach(self, entry: HostEntry) -> torch.nn.Module:
        """The kept module onto the device: one copy per dtype into the arena, its tensors
        re-pointed there."""
        to_device(entry.weights, self.arena, self.copy_mode, self.copy_threads,
                  self.copy_chunk_bytes)
        return entry.module

    def detach(self, entry: HostEntry) -> None:
        """The module's tensors back in host RAM (the module stays, the arena keeps its bytes;
        on a GPU once nothing queued still reads them)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        to_host(entry.weights)

    def evict(self, alias: str) -> bool:
        """Drop ``alias``'s host copy (unpinned first); True when there was one."""
        entry = self.entries.pop(alias, None)
        if entry is not None:
            unpin(entry.weights)
        return entry is not None
