"""Models on disk: download from the Hub (``sincere.assets.hub``), build random-weight or tiny
ones, and list them.

Each model lives in ``MODELS_DIR/<alias>/`` as transformers would save it (config.json,
generation_config.json, safetensors weights, tokenizer files), so ``AutoModelForCausalLM`` and
``AutoTokenizer`` load a built model exactly as they load a downloaded one. A folder is written
under a temporary name and renamed when complete, with a ``sincere_model.json`` marker saying
what it is; ``manifest.csv`` lists what is actually there (both read and written by
``sincere.assets.model_store``, which needs no torch).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from packaging.version import Version

from sincere.assets.architectures import FULL_SIZE, TINY, Architecture
from sincere.assets.hub import HubDownloadError, download_from_hub
from sincere.assets.local_tokenizers import (
    DEFAULT_SPECIAL_TOKENS,
    SPECIAL_TOKENS,
    save_tokenizer,
    tokenizer_corpus,
    train_tokenizer,
)
from sincere.assets.model_store import KINDS, is_complete, read_marker, write_manifest, write_marker

log = logging.getLogger("sincere.assets")


INIT_STD = 0.02  # normal init of every matrix, as the families' own initializer_range
INIT_CHUNK_ELEMENTS = 1 << 26  # fill big matrices 64M values at a time
FULL_SIZE_TOKENIZER_VOCAB = 8192  # random full-size models keep the real (larger) config vocab
SAVE_SHARD_SIZE = "5GB"  # as the published checkpoints are sharded


# Config fields of the published checkpoints that the Architecture does not carry.
REAL_CONFIG_EXTRAS: dict[str, dict[str, Any]] = {
    "granite-7b": {"max_position_embeddings": 4096, "rms_norm_eps": 1e-5},
    "gemma-7b": {"max_position_embeddings": 8192, "rms_norm_eps": 1e-6},
    "llama3-8b": {"max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
                  "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 8192}},
}


@dataclass(frozen=True)
class Outcome:
    """What happened to one model in a run of download_models.py."""

    alias: str
    status: str  # "downloaded", "built", "skipped" or "failed"
    detail: str = ""


# --- transformers version differences ----------------------------------------------------------

def dtype_kwargs(dtype: torch.dtype | None) -> dict[str, Any]:
    """``{"dtype": ...}`` for transformers >= 4.56, ``{"torch_dtype": ...}`` before."""
    if dtype is None:
        return {}
    key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    return {key: dtype}


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Within: no transformers progress bars ("Loading weights", "Writing model shards") and
    only its errors logged, so loads do not fill a server's log; the settings come back after."""
    tf_logging = transformers.utils.logging
    bars_on, verbosity = tf_logging.is_progress_bar_enabled(), tf_logging.get_verbosity()
    tf_logging.disable_progress_bar()
    tf_logging.set_verbosity_error()
    try:
        yield
    finally:
        tf_logging.set_verbosity(verbosity)
        if bars_on:
            tf_logging.enable_progress_bar()


# --- configs and random weights ---------------------------------------------------------------

def build_config(alias: str, arch: Architecture, vocab_size: int,
                 token_ids: Mapping[str, int]) -> transformers.PretrainedConfig:
    """The transformers config of an architecture, with the given vocab and special-token ids."""
    extras = dict(REAL_CONFIG_EXTRAS.get(alias, {}))
    common = {
        "vocab_size": vocab_size, "hidden_size": arch.hidden_size,
        "intermediate_size": arch.intermediate_size, "num_hidden_layers": arch.num_layers,
        "num_attention_heads": arch.num_heads, "num_key_value_heads": arch.num_kv_heads,
        "head_dim": arch.head_dim, "rope_theta": arch.rope_theta,
        "tie_word_embeddings": arch.tie_embeddings, "initializer_range": INIT_STD,
        "bos_token_id": token_ids["bos"], "eos_token_id": token_ids["eos"],
        "pad_token_id": token_ids["pad"], **extras,
    }
    if arch.family == "llama":
        return transformers.LlamaConfig(**common)
    if arch.family == "gemma":
        return transformers.GemmaConfig(**common)
    raise ValueError(f"unknown family {arch.family!r} for {alias}")


def meta_model(config: transformers.PretrainedConfig,
               dtype: torch.dtype = torch.bfloat16) -> torch.nn.Module:
    """The model skeleton on the meta device: shapes and parameter count, no memory."""
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(config, **dtype_kwargs(dtype))


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct weights (a tied embedding and head count once)."""
    return sum(p.numel() for p in model.parameters())


def init_random_weights_(model: torch.nn.Module, family: str, seed: int,
                         std: float = INIT_STD) -> None:
    """Fill every weight in place: matrices ~ N(0, std), norms at their identity value."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    for name, param in model.named_parameters():
        with torch.no_grad():
            if param.dim() == 1:
                # RMSNorm: llama scales by w (identity at 1), gemma by 1 + w (identity at 0).
                is_norm = "norm" in name
                param.fill_(1.0 if is_norm and family != "gemma" else 0.0)
                continue
            flat = param.view(-1)
            for start in range(0, flat.numel(), INIT_CHUNK_ELEMENTS):
                flat[start:start + INIT_CHUNK_ELEMENTS].normal_(0.0, std, generator=generator)


def init_non_persistent_buffers_(model: torch.nn.Module) -> list[str]:
    """Give every non-persistent buffer the value the architecture's own code gives it; the
    names of those buffers.

    Such buffers (the rotary embeddings' ``inv_freq`` and ``original_inv_freq``, Gemma's
    ``embed_scale``) are never in a checkpoint: ``to_empty`` leaves them holding whatever the
    memory held, and transformers 5.x, loading a checkpoint, recomputes them with the model's
    ``_init_weights``. The same is done here, module by module, with the module's parameters
    flagged as initialised so that transformers' init functions leave them alone (the caller
    fills them). Floating buffers are set to NaN first: one that this code does not recompute
    stays NaN, which ``non_finite_tensors`` reports, rather than garbage that looks valid."""
    named = dict(model.named_buffers())
    owners = [(prefix, module) for prefix, module in model.named_modules()
              if module._non_persistent_buffers_set]
    names = []
    with torch.no_grad():
        for prefix, module in owners:
            for buffer_name in sorted(module._non_persistent_buffers_set):
                buffer = getattr(module, buffer_name, None)
                if buffer is not None and buffer.is_floating_point():
                    buffer.fill_(float("nan"))
                names.append(f"{prefix}.{buffer_name}" if prefix else buffer_name)
            params = [(p, getattr(p, "_is_hf_initialized", None))
                      for p in module.parameters(recurse=False)]
            for param, _flag in params:
                param._is_hf_initialized = True
            try:
                model._init_weights(module)
            finally:
                for param, flag in params:
                    if flag is None:
                        del param._is_hf_initialized
                    else:
                        param._is_hf_initialized = flag
    return [name for name in names if name in named]


def non_finite_tensors(model: torch.nn.Module) -> list[str]:
    """Names of the parameters and floating buffers holding a NaN or an infinity."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    with torch.no_grad():
        return [name for name, tensor in tensors
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]


def random_model(config: transformers.PretrainedConfig, family: str, dtype: torch.dtype,
                 device: str, seed: int) -> torch.nn.Module:
    """A random-weight model allocated once, directly in ``dtype`` on ``device``: weights
    from ``seed``, non-persistent buffers as the architecture computes them."""
    model = meta_model(config, dtype)
    model.to_empty(device=device)
    if hasattr(model, "tie_weights"):
        model.tie_weights()  # to_empty may give a tied head its own storage
    init_non_persistent_buffers_(model)
    init_random_weights_(model, family, seed)
    return model


def _special_ids(tokenizer: transformers.PreTrainedTokenizerBase) -> dict[str, int]:
    return {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id,
            "pad": tokenizer.pad_token_id}


def _set_generation_ids(model: torch.nn.Module, ids: Mapping[str, int]) -> None:
    generation = model.generation_config
    generation.bos_token_id, generation.eos_token_id = ids["bos"], ids["eos"]
    generation.pad_token_id = ids["pad"]


def random_model_and_tokenizer(alias: str, seed: int, tiny: bool,
                               corpus: Sequence[str] | None = None, device: str | None = None,
                               dtype: torch.dtype | None = None
                               ) -> tuple[torch.nn.Module, transformers.PreTrainedTokenizerFast]:
    """A random-weight model of ``alias``'s architecture, made in memory, with a locally
    trained tokenizer. Tiny models are float32 with the tokenizer's vocab; full-size ones
    bfloat16 with the real vocab, made on the GPU when there is one (seconds) or on the CPU
    (about a minute a model). ``dtype`` overrides the dtype (the same seed, the same values)."""
    table = TINY if tiny else FULL_SIZE
    if alias not in table:
        raise KeyError(f"no {'tiny' if tiny else 'full-size'} architecture for {alias!r}; "
                       f"known: {', '.join(table)}")
    arch = table[alias]
    special = SPECIAL_TOKENS.get(alias, DEFAULT_SPECIAL_TOKENS)
    extras = REAL_CONFIG_EXTRAS.get(alias, {})
    max_positions = int(extras.get("max_position_embeddings", 4096))
    tokenizer_vocab = arch.vocab_size if tiny else FULL_SIZE_TOKENIZER_VOCAB
    corpus = corpus if corpus is not None else tokenizer_corpus(seed)
    tokenizer = train_tokenizer(tokenizer_vocab, special, corpus, max_positions)
    ids = _special_ids(tokenizer)
    vocab = len(tokenizer) if tiny else arch.vocab_size
    config = build_config(alias, arch, vocab, ids)
    dtype = dtype or (torch.float32 if tiny else torch.bfloat16)
    device = device or ("cuda" if torch.cuda.is_available() and not tiny else "cpu")
    model = random_model(config, arch.family, dtype, device, seed)
    _set_generation_ids(model, ids)
    return model, tokenizer


def build_random_model(alias: str, folder: Path, seed: int, tiny: bool,
                       corpus: Sequence[str] | None = None,
                       device: str | None = None) -> None:
    """Write a random-weight model of ``alias``'s architecture, with a locally trained tokenizer
    (``random_model_and_tokenizer``), in the layout ``save_pretrained`` writes."""
    model, tokenizer = random_model_and_tokenizer(alias, seed, tiny, corpus, device)
    folder.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tokenizer, folder)
    with quiet_transformers():
        model.save_pretrained(folder, max_shard_size=SAVE_SHARD_SIZE)
    on_gpu = next(model.parameters()).is_cuda
    del model
    if on_gpu:
        torch.cuda.empty_cache()


# --- one run of download_models.py --------------------------------------------------------------

def _replace(partial: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)


def prepare_model(alias: str, hub_id: str, models_dir: Path, kind: str, seed: int = 0,
                  overwrite: bool = False, token: str | None = None,
                  corpus: Sequence[str] | None = None) -> Outcome:
    """Download or build one model into ``models_dir/alias`` unless a complete one is there."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    final = models_dir / alias
    if is_complete(final) and not overwrite:
        existing = (read_marker(final) or {}).get("kind", "unknown")
        note = "" if existing == kind else f" (it is a {existing} model; --overwrite replaces it)"
        return Outcome(alias, "skipped", f"already complete{note}")
    partial = models_dir / f".{alias}.partial"
    models_dir.mkdir(parents=True, exist_ok=True)
    started_s = time.perf_counter()
    if kind == "hub":
        try:
            download_from_hub(hub_id, partial, token)
        except HubDownloadError as exc:
            return Outcome(alias, "failed", str(exc))  # partial stays: a rerun resumes
        family = json.loads((partial / "config.json").read_text()).get("model_type", "")
    else:
        if partial.exists():
            shutil.rmtree(partial)
        try:
            build_random_model(alias, partial, seed, tiny=(kind == "tiny"), corpus=corpus)
        except (KeyError, ValueError) as exc:
            shutil.rmtree(partial, ignore_errors=True)
            return Outcome(alias, "failed", str(exc).strip("'\""))
        family = (TINY if kind == "tiny" else FULL_SIZE)[alias].family
    write_marker(partial, alias, hub_id, kind, family)
    _replace(partial, final)
    elapsed_s = time.perf_counter() - started_s
    verb = "downloaded" if kind == "hub" else "built"
    return Outcome(alias, verb, f"{kind} model in {elapsed_s:.1f} s")


def prepare_models(models: Mapping[str, str], models_dir: Path, kind: str, seed: int = 0,
                   overwrite: bool = False, token: str | None = None) -> list[Outcome]:
    """Prepare every model of ``{alias: hub_id}``, then rewrite the manifest."""
    corpus = tokenizer_corpus(seed) if kind != "hub" else None  # one corpus for all tokenizers
    outcomes = [prepare_model(alias, hub_id, models_dir, kind, seed, overwrite, token, corpus)
                for alias, hub_id in models.items()]
    write_manifest(models_dir)
    return outcomes
