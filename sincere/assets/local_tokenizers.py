"""Tokenizers trained here, for the random-weight and tiny models: byte-level BPE on the
project's own synthetic prompts, with each family's special tokens in the real tokenizer's order,
saved so that transformers 4.x and 5.x both load them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import transformers

from sincere.assets.workloads import synthetic_prompts

TOKENIZER_CORPUS_PROMPTS = 3000  # synthetic prompts the tiny tokenizers are trained on


@dataclass(frozen=True)
class SpecialTokens:
    """A family's special tokens, in the id order of the real tokenizer where it starts at 0."""

    bos: str
    eos: str
    pad: str
    unk: str | None = None

    def ordered(self) -> list[str]:
        """Tokens in the order they get ids 0, 1, 2, ..."""
        return [t for t in self._order() if t is not None]

    def _order(self) -> list[str | None]:
        if self.pad == "<pad>" and self.eos == "<eos>":  # gemma: pad 0, eos 1, bos 2, unk 3
            return [self.pad, self.eos, self.bos, self.unk]
        return [self.unk, self.bos, self.eos, self.pad]  # llama-style: unk 0, bos 1, eos 2


SPECIAL_TOKENS = {
    "granite-7b": SpecialTokens(bos="<s>", eos="</s>", pad="<pad>", unk="<unk>"),
    "gemma-7b": SpecialTokens(bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>"),
    "llama3-8b": SpecialTokens(bos="<|begin_of_text|>", eos="<|end_of_text|>",
                               pad="<|finetune_right_pad_id|>"),
}
DEFAULT_SPECIAL_TOKENS = SpecialTokens(bos="<s>", eos="</s>", pad="<pad>", unk="<unk>")


def tokenizer_corpus(seed: int = 0, prompts: int = TOKENIZER_CORPUS_PROMPTS) -> list[str]:
    """The text the tiny tokenizers are trained on: the project's own synthetic prompts."""
    return synthetic_prompts(prompts, seed=seed)


def train_tokenizer(vocab_size: int, special: SpecialTokens, corpus: Iterable[str],
                    model_max_length: int) -> transformers.PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained locally, which adds BOS like the real ones."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special.ordered(), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer)
    bos_id = tokenizer.token_to_id(special.bos)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{special.bos} $A", pair=f"{special.bos} $A {special.bos} $B",
        special_tokens=[(special.bos, bos_id)])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=special.bos, eos_token=special.eos,
        pad_token=special.pad, unk_token=special.unk, model_max_length=model_max_length)


def save_tokenizer(tokenizer: transformers.PreTrainedTokenizerBase, folder: Path) -> None:
    """Save so that both transformers 4.x and 5.x ``AutoTokenizer`` can load it."""
    tokenizer.save_pretrained(folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"  # 5.x writes its "TokenizersBackend"
    config_path.write_text(json.dumps(config, indent=2) + "\n")
