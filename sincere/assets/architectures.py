"""The three served model families: hub ids and published architecture parameters.

The full-size parameters are those of ../shared/reference/README.md; download_models.py builds
random-weight models from them, and the example profiles derive model sizes from them.
"""

from __future__ import annotations

from dataclasses import dataclass

# The model mix's default weights (SPEC section 5), in alias order.
DEFAULT_MODEL_MIX = {"granite-7b": 0.1, "gemma-7b": 0.3, "llama3-8b": 0.6}

HUB_IDS = {
    "granite-7b": "ibm-granite/granite-7b-base",
    "gemma-7b": "google/gemma-7b",
    "llama3-8b": "meta-llama/Meta-Llama-3.1-8B",
}


@dataclass(frozen=True)
class Architecture:
    """Decoder-only transformer shape; ``family`` is the transformers model type."""

    family: str  # "llama" or "gemma"
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    rope_theta: float = 10000.0
    tie_embeddings: bool = False

    def param_count(self) -> int:
        """Number of weights (embeddings, attention, gated MLP, norms, and an untied head)."""
        q_dim = self.num_heads * self.head_dim
        kv_dim = self.num_kv_heads * self.head_dim
        attention = self.hidden_size * (q_dim + 2 * kv_dim) + q_dim * self.hidden_size
        mlp = 3 * self.hidden_size * self.intermediate_size
        norms = 2 * self.hidden_size
        embeddings = self.vocab_size * self.hidden_size
        head = 0 if self.tie_embeddings else embeddings
        return embeddings + self.num_layers * (attention + mlp + norms) + self.hidden_size + head

    def size_gb(self, bytes_per_param: int) -> float:
        """Weight bytes in GB (10^9 bytes), as the reference figures quote them."""
        return self.param_count() * bytes_per_param / 1e9


FULL_SIZE = {
    "granite-7b": Architecture("llama", 4096, 11008, 32, 32, 32, 128, 32008),
    "gemma-7b": Architecture("gemma", 3072, 24576, 28, 16, 16, 256, 256000,
                             tie_embeddings=True),
    "llama3-8b": Architecture("llama", 4096, 14336, 32, 32, 8, 128, 128256,
                              rope_theta=500000.0),
}

# Tiny models of the same families for CPU runs and tests (download_models.py --random --tiny):
# the real ones' proportions at a few tens of MB in float32. Granite is the smallest and keeps
# multi-head attention; llama has grouped-query attention (4 query heads per kv head) and twice
# granite's vocabulary; gemma ties embeddings and head, has head_dim * heads > hidden and the
# widest MLP. The vocabulary is that of the locally trained tokenizer.
TINY = {
    "granite-7b": Architecture("llama", 256, 688, 4, 4, 4, 64, 4096),
    "gemma-7b": Architecture("gemma", 256, 1536, 4, 4, 4, 96, 8192, tie_embeddings=True),
    "llama3-8b": Architecture("llama", 256, 896, 4, 4, 1, 64, 8192, rope_theta=500000.0),
}
