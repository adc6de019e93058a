"""Workloads: reading InstructLab's JSONL formats, synthetic prompts, the seeded model draw, the
folder written, and that nothing ever prints a prompt."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import generate_workloads_jsonl
from sincere.assets.architectures import DEFAULT_MODEL_MIX
from sincere.assets.workloads import (
    MAX_WORDS,
    MEDIAN_WORDS,
    MIN_WORDS,
    ParseStats,
    assign_models,
    build_workloads,
    parse_instructlab_lines,
    prompt_from_record,
    read_instructlab_dir,
    read_workloads,
    synthetic_prompts,
)


@pytest.mark.parametrize(("record", "prompt"), [
    # skills_train_msgs_* / messages_*: chat messages (the user turn, not the system's)
    ({"messages": [{"role": "system", "content": "You are helpful."},
                   {"role": "user", "content": "  Name three rivers.  "},
                   {"role": "assistant", "content": "Nile, Rhine, Volga."}],
      "metadata": "{}"}, "Name three rivers."),
    # knowledge_train_msgs_*: "pretraining" messages, legacy and Granite role markers
    ({"messages": [{"role": "pretraining",
                    "content": "<|user|>\nWhat is a tonsil?\n<|assistant|>\nA gland."}]},
     "What is a tonsil?"),
    ({"messages": [{"role": "pretraining", "content": "<|start_of_role|>user<|end_of_role|>\n"
                    "Summarise the text.\n<|start_of_role|>assistant<|end_of_role|>\nDone."}]},
     "Summarise the text."),
    # legacy train_* / test_*: system / user / assistant
    ({"system": "You are helpful.", "user": "Write a haiku.", "assistant": "..."},
     "Write a haiku."),
    # older generated_*: instruction / input / output
    ({"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
     "Translate to French.\n\nGood morning"),
    ({"instruction": "List two colours.", "input": "", "output": "red, blue"},
     "List two colours."),
    ({"question": "Why is the sky blue?", "answer": "Rayleigh scattering."},
     "Why is the sky blue?"),
    ({"prompt": "Hello"}, "Hello"),
    # nothing usable
    ({"messages": [{"role": "assistant", "content": "only an answer"}]}, None),
    ({"messages": [{"role": "pretraining", "content": "no role markers"}]}, None),
    ({"user": "   "}, None),
    (["user", "a list"], None),
])
def test_prompt_from_each_instructlab_format(record: Any, prompt: str | None) -> None:
    assert prompt_from_record(record) == prompt


def test_blank_malformed_and_duplicate_lines_are_counted(tmp_path: Path) -> None:
    datasets = tmp_path / "datasets"
    (datasets / "node_datasets_2024-08-12T20_31_15").mkdir(parents=True)
    message = {"messages": [{"role": "user", "content": "Explain rain."}]}
    (datasets / "skills_train_msgs_2024-08-12T20_31_15.jsonl").write_text("\n".join([
        json.dumps(message), "", "{not json", json.dumps({"answer": "no prompt"}),
        json.dumps({"messages": [{"role": "user", "content": "Explain snow."}]})]) + "\n")
    # The same sample again, as InstructLab also writes it per leaf node.
    (datasets / "node_datasets_2024-08-12T20_31_15" / "rain.jsonl").write_text(
        json.dumps(message) + "\n")
    (datasets / "skills_recipe_2024-08-12T20_31_15.yaml").write_text("not: read\n")

    prompts, stats = read_instructlab_dir(datasets)
    assert prompts == ["Explain rain.", "Explain snow."]
    assert (stats.files, stats.lines, stats.prompts) == (2, 6, 2)
    assert (stats.blank, stats.malformed, stats.duplicates) == (1, 2, 1)


def test_parse_counts_into_given_stats() -> None:
    stats = ParseStats(lines=3)
    assert parse_instructlab_lines(['{"prompt": "a"}', "[]"], stats) == ["a"]
    assert (stats.lines, stats.malformed) == (5, 1)


def test_synthetic_prompt_lengths_have_a_realistic_spread() -> None:
    words = np.array([len(p.split()) for p in synthetic_prompts(2000, seed=1)])
    # Log-normal around MEDIAN_WORDS; a prompt overshoots its target by at most one sentence.
    assert abs(np.median(words) - MEDIAN_WORDS) / MEDIAN_WORDS < 0.15
    assert np.percentile(words, 5) < 0.5 * MEDIAN_WORDS
    assert np.percentile(words, 95) > 2.5 * MEDIAN_WORDS
    assert words.min() >= MIN_WORDS and words.max() <= MAX_WORDS + 30
    assert len(set(synthetic_prompts(200, seed=1))) == 200


def test_synthetic_prompts_are_seeded() -> None:
    assert synthetic_prompts(20, seed=3) == synthetic_prompts(20, seed=3)
    assert synthetic_prompts(20, seed=3) != synthetic_prompts(20, seed=4)


def test_model_assignment_is_seeded_and_follows_the_mix() -> None:
    mix = {"granite-7b": 0.1, "gemma-7b": 0.3, "llama3-8b": 0.6, "unused": 0.0}
    picks = assign_models(20_000, mix, np.random.default_rng(5))
    assert picks == assign_models(20_000, mix, np.random.default_rng(5))
    assert picks != assign_models(20_000, mix, np.random.default_rng(6))
    for alias, weight in mix.items():
        share = picks.count(alias) / len(picks)
        # Four binomial standard deviations at n = 20000: at most 0.014.
        assert abs(share - weight) <= 4 * np.sqrt(weight * (1 - weight) / len(picks))
    assert "unused" not in picks
    with pytest.raises(ValueError):
        assign_models(3, {"a": 0.0}, np.random.default_rng(0))


def test_the_model_draw_does_not_depend_on_where_prompts_come_from(tmp_path: Path) -> None:
    source = tmp_path / "instructlab"
    source.mkdir()
    (source / "train.jsonl").write_text("".join(
        json.dumps({"user": f"question {i}"}) + "\n" for i in range(50)))
    read = build_workloads(tmp_path / "a", DEFAULT_MODEL_MIX, seed=2, input_dir=source)
    made = build_workloads(tmp_path / "b", DEFAULT_MODEL_MIX, seed=2, synthetic=50)
    assert read.per_model == made.per_model


def test_workloads_folder_round_trip(workloads: Path, tmp_path: Path) -> None:
    prompts = read_workloads(workloads)
    assert len(prompts) == 200
    with (workloads / "index.csv").open(newline="") as handle:
        index = list(csv.DictReader(handle))
    assert [row["prompt_id"] for row in index] == list(prompts)
    assert all(int(row["prompt_chars"]) == len(prompts[row["prompt_id"]]) for row in index)
    assert {row["model_alias"] for row in index} == set(DEFAULT_MODEL_MIX)
    record = json.loads((workloads / f"{index[0]['prompt_id']}.json").read_text())
    assert set(record) == {"prompt", "model_alias"}

    smaller = tmp_path / "again"
    build_workloads(smaller, DEFAULT_MODEL_MIX, synthetic=30)
    build_workloads(smaller, DEFAULT_MODEL_MIX, synthetic=5)  # replaces, does not add
    assert len(read_workloads(smaller)) == 5


def test_the_script_prints_counts_never_prompts(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    secret = "my salary is 123456 and my account is XK-998"
    source = tmp_path / "datasets"
    source.mkdir()
    (source / "skills_train_msgs_x.jsonl").write_text(
        json.dumps({"messages": [{"role": "user", "content": secret}]}) + "\nnot json\n")
    out_dir = tmp_path / "workloads"
    status = generate_workloads_jsonl.main(["--input-dir", str(source),
                                            "--workloads-dir", str(out_dir)])
    printed = "".join(capsys.readouterr())
    assert status == 0
    assert "1 prompts" in printed and "1 malformed" in printed
    assert "123456" not in printed and "XK-998" not in printed
    assert secret not in (out_dir / "index.csv").read_text()
    assert list(read_workloads(out_dir).values()) == [secret]


def test_the_script_explains_a_missing_input(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    status = generate_workloads_jsonl.main(["--input-dir", str(tmp_path / "nowhere")])
    assert status == 2
    assert "--synthetic" in capsys.readouterr().err
