"""Prompt sets ("workloads"): read InstructLab JSONL, make synthetic prompts, write and read them.

A workloads folder holds one ``<prompt_id>.json`` per prompt,
``{"prompt": ..., "model_alias": ...}``, and an ``index.csv`` with lengths only (``prompt_id,
model_alias, prompt_chars``). Nothing here prints or logs prompt text: only counts and lengths
(SPEC section 2).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sincere.files import CsvWriter

log = logging.getLogger("sincere.assets")

INDEX_FILE = "index.csv"
INDEX_COLUMNS = ["prompt_id", "model_alias", "prompt_chars"]

# Fields that hold the user's turn in the formats InstructLab writes (legacy ``train_*.jsonl``:
# system/user/assistant; older ``generated_*``: instruction/input/output; seed examples:
# question/answer; some tools: prompt). ``messages`` lists are handled separately.
PROMPT_FIELDS = ("user", "instruction", "question", "prompt")
# A "pretraining" message (knowledge_train_msgs_*.jsonl) holds the whole exchange in one text,
# the user's turn between InstructLab's legacy or Granite role markers.
_PRETRAINING_USER_TURN = re.compile(
    r"(?:<\|user\|>|<\|start_of_role\|>user<\|end_of_role\|>)(.*?)"
    r"(?:<\|assistant\|>|<\|start_of_role\|>assistant<\|end_of_role\|>)", re.DOTALL)


@dataclass
class ParseStats:
    """What reading InstructLab output found: counts only, never text."""

    files: int = 0
    lines: int = 0
    prompts: int = 0
    blank: int = 0
    malformed: int = 0  # not JSON, not an object, or no prompt field
    duplicates: int = 0

    def summary(self) -> str:
        """One line for the console."""
        return (f"{self.files} files, {self.lines} lines: {self.prompts} prompts, "
                f"{self.blank} blank, {self.malformed} malformed, {self.duplicates} duplicates")


def prompt_from_record(record: object) -> str | None:
    """The user prompt of one InstructLab record, or None when it has none."""
    if not isinstance(record, Mapping):
        return None
    messages = record.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, Mapping) or not isinstance(message.get("content"), str):
                continue
            content = message["content"]
            if message.get("role") == "pretraining":
                match = _PRETRAINING_USER_TURN.search(content)
                content = match.group(1) if match else ""
            elif message.get("role") != "user":
                continue
            if content.strip():
                return content.strip()
    for field in PROMPT_FIELDS:
        value = record.get(field)
        if isinstance(value, str) and value.strip():
            extra = record.get("input") if field == "instruction" else None
            if isinstance(extra, str) and extra.strip():
                return f"{value.strip()}\n\n{extra.strip()}"
            return value.strip()
    return None


def parse_instructlab_lines(lines: Iterable[str], stats: ParseStats | None = None) -> list[str]:
    """Prompts from JSONL lines; blank and malformed lines are counted in ``stats``, not raised."""
    stats = stats if stats is not None else ParseStats()
    prompts: list[str] = []
    for line in lines:
        stats.lines += 1
        if not line.strip():
            stats.blank += 1
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            stats.malformed += 1
            continue
        prompt = prompt_from_record(record)
        if prompt is None:
            stats.malformed += 1
            continue
        prompts.append(prompt)
    return prompts


def read_instructlab_dir(input_dir: Path) -> tuple[list[str], ParseStats]:
    """All unique prompts of the ``*.jsonl`` files under ``input_dir`` (recursively, sorted)."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"no such folder: {input_dir}")
    stats = ParseStats()
    seen: set[str] = set()
    prompts: list[str] = []
    for path in sorted(input_dir.rglob("*.jsonl")):
        stats.files += 1
        with path.open(encoding="utf-8", errors="replace") as handle:
            for prompt in parse_instructlab_lines(handle, stats):
                if prompt in seen:  # the same sample appears in messages_*, train_*, node_datasets
                    stats.duplicates += 1
                    continue
                seen.add(prompt)
                prompts.append(prompt)
    stats.prompts = len(prompts)
    return prompts, stats


def assign_models(count: int, model_mix: Mapping[str, float],
                  rng: np.random.Generator) -> list[str]:
    """A model alias for each of ``count`` prompts, drawn from the weighted mix."""
    aliases = list(model_mix)
    weights = np.array([float(model_mix[a]) for a in aliases])
    if not aliases or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("the model mix needs at least one alias with a positive weight")
    picks = rng.choice(len(aliases), size=count, p=weights / weights.sum())
    return [aliases[i] for i in picks]


def write_workloads(prompts: Sequence[str], model_aliases: Sequence[str],
                    workloads_dir: Path) -> Path:
    """Write one JSON file per prompt and ``index.csv``; old prompt files there are replaced."""
    if len(prompts) != len(model_aliases):
        raise ValueError("one model alias per prompt")
    workloads_dir = Path(workloads_dir)
    workloads_dir.mkdir(parents=True, exist_ok=True)
    for old in workloads_dir.glob("*.json"):
        old.unlink()
    width = max(5, len(str(max(len(prompts) - 1, 0))))
    index_path = workloads_dir / INDEX_FILE
    with CsvWriter(index_path, INDEX_COLUMNS, flush_each_row=False) as writer:
        for number, (prompt, alias) in enumerate(zip(prompts, model_aliases, strict=True)):
            prompt_id = f"{number:0{width}d}"
            record = {"prompt": prompt, "model_alias": alias}
            (workloads_dir / f"{prompt_id}.json").write_text(json.dumps(record, ensure_ascii=False))
            writer.write(dict(zip(INDEX_COLUMNS, (prompt_id, alias, len(prompt)), strict=True)))
    return index_path


def read_workloads(workloads_dir: Path) -> dict[str, str]:
    """``{prompt_id: prompt}`` for every ``<prompt_id>.json`` in the folder, sorted by id."""
    workloads_dir = Path(workloads_dir)
    if not workloads_dir.is_dir():
        raise FileNotFoundError(f"no such workloads folder: {workloads_dir}")
    prompts: dict[str, str] = {}
    for path in sorted(workloads_dir.glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise ValueError(f"{path.name}: expected an object with a string 'prompt'")
        prompts[path.stem] = record["prompt"]
    if not prompts:
        raise ValueError(f"no prompt files in {workloads_dir}")
    return prompts


# --- synthetic prompts ----------------------------------------------------------------------
# Instruction-like text from templates and word lists, with log-normal word counts (median
# about 60 words, roughly 10 to 400), so batch profiles see a realistic spread of prompt lengths
# without any network access. Also the corpus the tiny models' tokenizers are trained on.

MEDIAN_WORDS = 60
WORDS_SIGMA = 0.75  # log-normal shape: about 95% of prompts between 14 and 260 words
MIN_WORDS, MAX_WORDS = 10, 400

_TOPICS = (
    "supply chain planning", "renewable energy storage", "customer onboarding", "data privacy",
    "cloud cost control", "urban cycling", "soil health", "remote team meetings",
    "incident response", "battery recycling", "public library funding", "container security",
    "sleep and memory", "small business loans", "river flood forecasting", "vaccine logistics",
    "open source licensing", "warehouse robotics", "coral reef monitoring", "online exams",
    "hospital scheduling", "music streaming royalties", "wildfire prevention", "home insulation",
    "machine translation", "credit card fraud", "school lunch programs", "rail freight",
    "water desalination", "quantum key distribution", "bee population decline", "tax filing",
    "electric bus fleets", "museum digitisation", "crop insurance", "password managers",
    "confidential computing", "graph databases", "earthquake early warning", "food waste",
)
_AUDIENCES = (
    "a new employee", "a ten-year-old", "a board of directors", "first-year students",
    "a busy manager", "a skeptical engineer", "a city council", "a grant committee",
    "non-technical customers", "a hiring panel", "retired teachers", "a product team",
)
_FORMATS = (
    "a short email", "a bulleted list", "a two-paragraph summary", "a table",
    "a step-by-step guide", "a haiku", "a press release", "an FAQ", "a checklist",
    "a one-page memo", "a dialogue", "a tweet thread",
)
_OPENERS = (
    "Write {fmt} about {topic} for {audience}.",
    "Explain {topic} to {audience} in {fmt}.",
    "Summarise the notes below on {topic} as {fmt}.",
    "Draft {fmt} that persuades {audience} to invest in {topic}.",
    "List {n} risks of {topic} and one way to reduce each.",
    "Compare {topic} and {topic2} for {audience}.",
    "Answer the question below about {topic} in at most {n} sentences.",
    "Rewrite the following text about {topic} so that {audience} can follow it.",
    "Classify the paragraph below as positive, negative or neutral about {topic}.",
    "Extract every date, name and number from the report on {topic} below.",
    "Suggest {n} titles for a talk on {topic} given to {audience}.",
    "Give feedback on this proposal from {name} about {topic}.",
)
_CLOSERS = (
    "Keep the tone friendly and avoid jargon.",
    "Use plain language and cite the figures given above.",
    "What should {name} do first, and why?",
    "Finish with a one-sentence recommendation.",
    "Point out anything in the notes that looks inconsistent.",
    "Which of these points matters most for {audience}?",
    "Return the answer as JSON with the keys title and summary.",
    "Do not exceed {n} bullet points.",
)
_ADJECTIVES = (
    "quarterly", "regional", "urgent", "detailed", "modest", "ambitious", "late", "shared",
    "manual", "automated", "seasonal", "local", "annual", "fragile", "robust", "costly",
    "cheaper", "unexpected", "gradual", "steady", "initial", "revised", "external", "internal",
    "northern", "digital", "legacy", "weekly", "temporary", "independent", "critical", "minor",
)
_NOUNS = (
    "budget", "report", "survey", "forecast", "pilot", "committee", "supplier", "contract",
    "dashboard", "audit", "backlog", "policy", "warehouse", "sensor", "schedule", "invoice",
    "prototype", "roadmap", "network", "customer", "volunteer", "council", "vendor", "review",
    "timeline", "shipment", "database", "outage", "campaign", "workshop", "release", "estimate",
    "incident", "training", "meeting", "proposal", "migration", "subsidy", "experiment", "fleet",
)
_VERBS = (
    "delayed", "improved", "reduced", "doubled", "replaced", "questioned", "approved",
    "postponed", "measured", "expanded", "simplified", "flagged", "funded", "rejected",
    "tracked", "reviewed", "cut", "raised", "shared", "tested",
)
_SENTENCES = (
    "The {adj} {noun} {verb} the {noun2} by {pct} percent in {month}.",
    "According to {name}, the {noun} {verb} the {adj} {noun2} last {period}.",
    "In {year} the {noun} cost {amount} dollars, while the {adj} {noun2} cost less.",
    "{name} said the {adj} {noun} was {verb} after the {noun2} in {place}.",
    "Our {noun} team {verb} {n} {noun2}s across {place} and {place2}.",
    "A {adj} {noun} at {name} {verb} the {noun2} twice this {period}.",
    "The {noun} in {place} is {adj}, but the {noun2} there was {verb}.",
    "Since {month} {year}, {n} {adj} {noun}s have {verb} the {noun2}.",
)
_MONTHS = ("January", "March", "April", "June", "August", "September", "October", "December")
_PERIODS = ("week", "month", "quarter", "year", "season")
_SYLLABLES = (
    "ka", "ro", "vel", "mi", "tor", "sa", "len", "qu", "ix", "dor", "na", "bri", "zu", "fen",
    "ga", "lo", "th", "ar", "ph", "ene", "os", "ul", "cy", "ma", "rek", "vo", "sti", "ha",
)


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def pseudo_name(rng: np.random.Generator) -> str:
    """A capitalised made-up name (people, firms, places), so the text has a long vocabulary."""
    word = "".join(_pick(rng, _SYLLABLES) for _ in range(int(rng.integers(2, 5))))
    return word.capitalize()


def _slots(rng: np.random.Generator) -> dict[str, str]:
    topic = _pick(rng, _TOPICS)
    return {
        "topic": topic, "topic2": _pick(rng, [t for t in _TOPICS if t != topic]),
        "audience": _pick(rng, _AUDIENCES), "fmt": _pick(rng, _FORMATS),
        "n": str(int(rng.integers(2, 12))), "name": pseudo_name(rng),
        "adj": _pick(rng, _ADJECTIVES), "noun": _pick(rng, _NOUNS), "noun2": _pick(rng, _NOUNS),
        "verb": _pick(rng, _VERBS), "pct": str(int(rng.integers(1, 95))),
        "month": _pick(rng, _MONTHS), "period": _pick(rng, _PERIODS),
        "year": str(int(rng.integers(1990, 2027))),
        "amount": f"{int(rng.integers(1, 1000)) * 1000:,}",
        "place": pseudo_name(rng), "place2": pseudo_name(rng),
    }


def synthetic_word_count(rng: np.random.Generator) -> int:
    """One prompt length in words: log-normal around MEDIAN_WORDS, clipped to the range."""
    words = rng.lognormal(mean=np.log(MEDIAN_WORDS), sigma=WORDS_SIGMA)
    return int(np.clip(round(words), MIN_WORDS, MAX_WORDS))


def synthetic_prompt(rng: np.random.Generator, target_words: int) -> str:
    """An instruction, context sentences up to about ``target_words`` words, and a closing line."""
    slots = _slots(rng)
    opener = _pick(rng, _OPENERS).format(**slots)
    closer = _pick(rng, _CLOSERS).format(**slots)
    sentences: list[str] = []
    words = len(opener.split()) + len(closer.split())
    while words < target_words:
        sentence = _pick(rng, _SENTENCES).format(**_slots(rng))
        sentences.append(sentence)
        words += len(sentence.split())
    parts = [opener]
    if sentences:
        parts.append(" ".join(sentences))
    parts.append(closer)
    return "\n\n".join(parts)


def synthetic_prompts(count: int, seed: int = 0) -> list[str]:
    """``count`` deterministic synthetic prompts with a realistic spread of lengths."""
    rng = np.random.default_rng(seed)
    return [synthetic_prompt(rng, synthetic_word_count(rng)) for _ in range(count)]


@dataclass(frozen=True)
class WorkloadSummary:
    """What ``build_workloads`` wrote: counts and lengths only."""

    prompts: int
    per_model: dict[str, int]
    chars_min: int
    chars_median: float
    chars_max: int
    index_path: Path
    parse_stats: ParseStats | None  # None for synthetic prompts

    def lines(self) -> list[str]:
        """Console lines."""
        mix = ", ".join(f"{alias} {n}" for alias, n in self.per_model.items())
        out = [] if self.parse_stats is None else [f"read {self.parse_stats.summary()}"]
        out += [f"wrote {self.prompts} prompts ({mix}) to {self.index_path.parent}",
                f"prompt length in characters: min {self.chars_min}, median "
                f"{self.chars_median:.0f}, max {self.chars_max}; index: {self.index_path}"]
        return out


def build_workloads(workloads_dir: Path, model_mix: Mapping[str, float], seed: int = 0,
                    input_dir: Path | None = None, synthetic: int = 0) -> WorkloadSummary:
    """Read InstructLab output (or make ``synthetic`` prompts), assign models, write the folder."""
    stats: ParseStats | None = None
    if synthetic > 0:
        prompts = synthetic_prompts(synthetic, seed=seed)
    else:
        if input_dir is None:
            raise ValueError("give an InstructLab output folder or a synthetic prompt count")
        prompts, stats = read_instructlab_dir(input_dir)
        if not prompts:
            raise ValueError(f"no prompts found in {input_dir} ({stats.summary()})")
    # Its own stream, so the assignment does not depend on how the prompts were made.
    aliases = assign_models(len(prompts), model_mix, np.random.default_rng([seed, 1]))
    index_path = write_workloads(prompts, aliases, workloads_dir)
    lengths = np.array([len(p) for p in prompts])
    per_model = {alias: aliases.count(alias) for alias in model_mix}
    return WorkloadSummary(prompts=len(prompts), per_model=per_model,
                           chars_min=int(lengths.min()), chars_median=float(np.median(lengths)),
                           chars_max=int(lengths.max()), index_path=index_path,
                           parse_stats=stats)
