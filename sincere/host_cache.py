"""Models kept in host RAM between swaps, and the copy that puts one on the device.

Each model is kept as it is, a module object whose weights are packed in flat host buffers
(sincere.weights); a swap copies those buffers to the device and re-points the module's tensors
there, and unloading re-points them back. The module, and whatever was compiled for it, is never
rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import transformers

from sincere.weights import FlatWeights, pack, to_device, to_host


@dataclass
class HostEntry:
    """A model kept in host RAM between swaps: the module itself, its weights packed in flat
    host buffers, and its tokenizer."""

    module: torch.nn.Module
    weights: FlatWeights
    tokenizer: transformers.PreTrainedTokenizerBase
    size_gb: float


def _drop_static_cache(module: torch.nn.Module) -> None:
    """Free the KV cache generate() keeps on a module between calls (a static cache)."""
    if getattr(module, "_cache", None) is not None:
        module._cache = None


class HostCache:
    """The host copies of the models of one engine, by alias."""

    def __init__(self, device: torch.device, pin_memory: bool, copy_threads: int,
                 copy_chunk_bytes: int) -> None:
        self.device = device
        self.pin_memory = pin_memory
        self.copy_threads = copy_threads
        self.copy_chunk_bytes = copy_chunk_bytes
        self.entries: dict[str, HostEntry] = {}

    def __contains__(self, alias: str) -> bool:
        return alias in self.entries

    def get(self, alias: str) -> HostEntry | None:
        """The entry of ``alias``, or None when it is not kept."""
        return self.entries.get(alias)

    def keep(self, alias: str, model: torch.nn.Module,
             tokenizer: transformers.PreTrainedTokenizerBase) -> HostEntry:
        """Keep ``model`` in host RAM: its weights copied into flat host buffers (pinned where
        pinning is on), since its own may be memory-mapped on the file."""
        weights = pack(model, pin_memory=self.pin_memory)
        entry = HostEntry(module=model, weights=weights, tokenizer=tokenizer,
                          size_gb=weights.nbytes / 1e9)
        self.entries[alias] = entry
        return entry

    def attach(self, entry: HostEntry) -> torch.nn.Module:
        """The kept module onto the device: one copy per dtype, its tensors re-pointed."""
        to_device(entry.weights, self.device, self.copy_threads, self.copy_chunk_bytes)
        return entry.module

    def detach(self, entry: HostEntry) -> None:
        """The module's tensors back in host RAM (the module stays)."""
        to_host(entry.weights)
        _drop_static_cache(entry.module)

    def evict(self, alias: str) -> bool:
        """Drop ``alias``'s host copy; True when there was one."""
        return self.entries.pop(alias, None) is not None
