"""Where each model's folder is, and reading a model from it (SPEC section 7).

A model is a folder in the layout ``save_pretrained`` writes (config.json, safetensors weights,
tokenizer files): one per alias in the models folder, or anywhere else once added under an alias.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

from sincere.assets.models import dtype_kwargs, quiet_transformers
from sincere.engine.outcomes import EngineError


class ModelFolders:
    """The model folders an engine serves, by alias."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir)
        self._extra_paths: dict[str, Path] = {}  # alias -> folder outside models_dir

    def available(self) -> list[str]:
        """Aliases of the model folders (those with a config.json) in ``models_dir``, and of
        those added with ``add``."""
        found = set(self._extra_paths)
        if self.models_dir.is_dir():
            found.update(p.name for p in self.models_dir.iterdir()
                         if p.is_dir() and not p.name.startswith(".")
                         and (p / "config.json").is_file())
        return sorted(found)

    def add(self, alias: str, path: Path) -> None:
        """Serve the model folder ``path`` (Hugging Face layout) under ``alias``, wherever it is."""
        path = Path(path).expanduser().resolve()
        if not path.is_dir():
            raise FileNotFoundError(f"no such model folder: {path}")
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} is not a model folder (no config.json)")
        self._extra_paths[alias] = path

    def path(self, alias: str) -> Path:
        """The folder of ``alias``; EngineError naming what there is when it has none."""
        path = self._extra_paths.get(alias, self.models_dir / alias)
        if not (path / "config.json").is_file():
            raise EngineError(f"no model {alias!r} in {self.models_dir} "
                              f"(have: {', '.join(self.available()) or 'none'})")
        return path

    def read_tokenizer(self, alias: str) -> transformers.PreTrainedTokenizerBase:
        """``alias``'s tokenizer, as saved."""
        with quiet_transformers():
            return transformers.AutoTokenizer.from_pretrained(self.path(alias))

    def read_model(self, alias: str, dtype: torch.dtype) -> torch.nn.Module:
        """``from_pretrained`` onto the host, in ``dtype`` (possibly memory-mapped)."""
        with quiet_transformers():
            model = transformers.AutoModelForCausalLM.from_pretrained(
                self.path(alias), **dtype_kwargs(dtype))
        return model.eval()


def own_memory_(model: torch.nn.Module) -> None:
    """Give every weight its own memory, in place (tied weights stay tied, aliases follow).

    ``from_pretrained`` may leave weights memory-mapped on the safetensors file, read lazily on
    first use; a CPU load or a host-cache copy that kept them so would not be a load at all.
    """
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.data = tensor.data.clone()


def onto_device(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A model read from its folder onto the device: a copy to the GPU, or into owned memory
    on a CPU (the original study's way of loading, without the host cache)."""
    if device.type != "cuda":
        own_memory_(model)
        return model
    model = model.to(device)
    torch.cuda.synchronize(device)
    return model
