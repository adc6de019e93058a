"""Which model is where: its folder, its copy in host RAM, and the one model on the device.

``load`` puts a model on the device from the host cache when its weights are there (a copy from
host RAM, pinned where CC is off: what a swap costs), else from its folder; ``unload`` frees the
device and keeps the host copy; ``prefetch``, ``adopt`` and ``evict`` fill and empty the host
cache without touching the device. Tokenizers are kept by alias, left-padded, as generation
needs them. Generating for a batch is ``sincere.engine.engine.Engine``'s; the host buffers and
the device arena are ``sincere.engine.host_cache``'s; reading a folder is
``sincere.engine.model_folders``'. Not thread-safe: the engine is called from one thread.
"""

from __future__ import annotations

import gc
import logging
import time
from pathlib import Path

import torch
import transformers

from sincere.engine.host_cache import NOT_PINNED, HostCache
from sincere.engine.model_folders import ModelFolders, onto_device
from sincere.engine.outcomes import EngineError, LoadResult
from sincere.engine.weights import PinReport

log = logging.getLogger("sincere.engine")


def _weights_gb(module: torch.nn.Module) -> float:
    return sum(p.numel() * p.element_size() for p in module.parameters()) / 1e9


class Residency:
    """The models of one folder on one device: at most one resident, the others on disk or in
    the host cache (``use_host_cache``)."""

    def __init__(self, folders: ModelFolders, host: HostCache, device: torch.device,
                 dtype: torch.dtype, use_host_cache: bool) -> None:
        self.folders = folders
        self.host = host
        self.device = device
        self.dtype = dtype
        self.use_host_cache = use_host_cache
        self.resident: str | None = None  # the alias on the device
        self.model: torch.nn.Module | None = None  # its module and tokenizer
        self.tokenizer: transformers.PreTrainedTokenizerBase | None = None
        self._tokenizers: dict[str, transformers.PreTrainedTokenizerBase] = {}

    # --- tokenizers ---------------------------------------------------------------------------

    def tokenizer_of(self, alias: str) -> transformers.PreTrainedTokenizerBase:
        """``alias``'s tokenizer, read from its folder the first time."""
        tokenizer = self._tokenizers.get(alias)
        return tokenizer if tokenizer is not None else self._read_tokenizer(alias)

    def _read_tokenizer(self, alias: str) -> transformers.PreTrainedTokenizerBase:
        return self._use_tokenizer(alias, self.folders.read_tokenizer(alias))

    def _use_tokenizer(self, alias: str, tokenizer: transformers.PreTrainedTokenizerBase
                       ) -> transformers.PreTrainedTokenizerBase:
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:  # llama and granite ship none: pad with EOS
            tokenizer.pad_token = tokenizer.eos_token
        self._tokenizers[alias] = tokenizer
        return tokenizer

    # --- the device ---------------------------------------------------------------------------

    def load(self, alias: str) -> LoadResult:
        """Put ``alias`` on the device (from the host cache when there, else disk); seconds."""
        if self.resident is not None:
            raise EngineError(f"{self.resident!r} is resident: unload() it before loading "
                              f"{alias!r}")
        self.folders.path(alias)
        started_s = time.perf_counter()
        entry = self.host.get(alias) if self.use_host_cache else None
        pinning = NOT_PINNED  # only a first load from disk pins, and is not charged for it
        if entry is not None:
            model, tokenizer, path = self.host.attach(entry), entry.tokenizer, "host_cache"
        else:
            tokenizer = self._read_tokenizer(alias)
            host_model = self.folders.read_model(alias, self.dtype)
            path = "disk"
            if self.use_host_cache:
                entry = self.host.keep(alias, host_model, tokenizer)
                pinning, model = entry.pinning, self.host.attach(entry)
            else:
                model = onto_device(host_model, self.device)
        seconds = time.perf_counter() - started_s - pinning.seconds
        self.model, self.tokenizer, self.resident = model, tokenizer, alias
        result = LoadResult(alias, seconds, path, round(_weights_gb(model), 6),
                            pin_s=pinning.seconds, pinned_bytes=pinning.nbytes)
        log.info("loaded %s from %s in %.3f s (%.3f GB)", alias, path, seconds, result.size_gb)
        return result

    def unload(self) -> float:
        """Free the device of the resident model (its host copy stays); seconds."""
        if self.resident is None:
            return 0.0
        started_s = time.perf_counter()
        alias = self.resident
        entry = self.host.get(alias)
        kept = entry is not None and entry.module is self.model
        if kept:  # the module stays, its tensors back in host RAM; nothing is freed
            self.host.detach(entry)
        self.model = self.tokenizer = self.resident = None
        if not kept:  # a module loaded without the host cache is dropped: free its memory
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
                torch.cuda.empty_cache()
        seconds = time.perf_counter() - started_s
        log.info("unloaded %s in %.3f s", alias, seconds)
        return seconds

    def swap(self, alias: str) -> LoadResult:
        """Unload the resident model (if any) and load ``alias``."""
        self.unload()
        return self.load(alias)

    # --- the host cache -----------------------------------------------------------------------

    def prefetch(self, alias: str) -> float:
        """Fill the host cache from disk without touching the device; seconds (0 if cached)."""
        if not self.use_host_cache:
            raise EngineError("prefetch needs host_cache=True")
        if alias in self.host:
            return 0.0
        started_s = time.perf_counter()
        tokenizer = self._read_tokenizer(alias)
        self.host.keep(alias, self.folders.read_model(alias, self.dtype), tokenizer)
        seconds = time.perf_counter() - started_s
        log.info("prefetched %s into host RAM in %.3f s", alias, seconds)
        return seconds

    def adopt(self, alias: str, model: torch.nn.Module,
              tokenizer: transformers.PreTrainedTokenizerBase) -> PinReport:
        """Keep a model built in memory in the host cache under ``alias``, as if it had been
        read from a folder; how its copy was pinned."""
        if not self.use_host_cache:
            raise EngineError("adopt needs host_cache=True")
        self.evict(alias)
        return self.host.keep(alias, model.eval(), self._use_tokenizer(alias, tokenizer)).pinning

    def pinning(self, alias: str) -> PinReport:
        """How ``alias``'s host copy was pinned ("none" when it was not)."""
        entry = self.host.get(alias)
        if entry is None:
            raise EngineError(f"{alias!r} is not in the host cache")
        return entry.pinning

    def evict(self, alias: str) -> None:
        """Drop ``alias``'s host copy (a resident model stays on the device until unloaded)."""
        if alias == self.resident:
            raise EngineError(f"{alias!r} is resident: unload() it before evicting it")
        if self.host.evict(alias):
            gc.collect()
            log.info("evicted %s from host RAM", alias)

    def cached_modules(self, aliases: list[str]) -> dict[str, torch.nn.Module]:
        """The host-cached modules of ``aliases``; EngineError naming those not cached."""
        missing = [a for a in aliases if a not in self.host]
        if missing:
            raise EngineError(f"reserve needs host-cached models: prefetch {', '.join(missing)}")
        return {alias: self.host.entries[alias].module for alias in aliases}

    # --- the folders --------------------------------------------------------------------------

    def available_models(self) -> list[str]:
        """Aliases of the model folders and of those added."""
        return self.folders.available()

    def add_model_path(self, alias: str, path: Path) -> None:
        """Serve the model folder ``path`` (Hugging Face layout) under ``alias``, wherever it is."""
        self.folders.add(alias, path)
