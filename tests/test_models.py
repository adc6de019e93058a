"""Model folders: the tiny models and their manifest, reruns, and what download_models.py says
when the Hub refuses (errors built by huggingface_hub itself from HTTP answers)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import transformers
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
)
from huggingface_hub.utils import _http as hub_http
from huggingface_hub.utils import hf_raise_for_status

import download_models
import sincere.assets.hub
from sincere.assets.architectures import HUB_IDS, TINY
from sincere.assets.hub import describe_hub_error
from sincere.assets.model_store import MANIFEST_COLUMNS, is_complete, scan_models, write_manifest
from sincere.assets.models import count_parameters, meta_model, prepare_models

GEMMA_API_URL = "https://huggingface.co/api/models/google/gemma-7b/revision/main"


def manifest_rows(models_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    with (models_dir / "manifest.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_tiny_models_and_their_manifest(tiny_models: Path) -> None:
    header, rows = manifest_rows(tiny_models)
    assert header == MANIFEST_COLUMNS
    assert [r["alias"] for r in rows] == sorted(HUB_IDS)
    for row in rows:
        alias = row["alias"]
        folder = tiny_models / alias
        assert (row["hub_id"], row["kind"], row["dtype"]) == (HUB_IDS[alias], "tiny", "float32")
        assert row["family"] == TINY[alias].family
        assert Path(row["path"]) == folder and is_complete(folder)
        # The weights on disk are exactly the architecture's (a tied head stored once).
        config = transformers.AutoConfig.from_pretrained(folder)
        params = count_parameters(meta_model(config))
        assert int(row["params"]) == params
        assert float(row["size_gb"]) == pytest.approx(params * 4 / 1e9, abs=1e-4)
        assert (config.hidden_size, config.num_key_value_heads) == (
            TINY[alias].hidden_size, TINY[alias].num_kv_heads)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        assert config.vocab_size == len(tokenizer)
        assert tokenizer("hello")["input_ids"][0] == config.bos_token_id


def test_a_rerun_skips_complete_models_and_the_manifest_lists_only_finished_ones(
        tiny_models: Path, tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    shutil.copytree(tiny_models / "granite-7b", models_dir / "granite-7b")
    shutil.copytree(tiny_models / "gemma-7b", models_dir / ".gemma-7b.partial")  # interrupted
    (models_dir / "gemma-7b").mkdir()  # a stray folder with no config
    outcomes = prepare_models({"granite-7b": HUB_IDS["granite-7b"]}, models_dir, "tiny")
    assert [(o.alias, o.status) for o in outcomes] == [("granite-7b", "skipped")]
    assert "already complete" in outcomes[0].detail
    assert [r["alias"] for r in manifest_rows(models_dir)[1]] == ["granite-7b"]

    (models_dir / "granite-7b" / "model.safetensors").unlink()
    assert not is_complete(models_dir / "granite-7b")


def test_a_folder_without_the_marker_is_listed_as_unknown(tiny_models: Path,
                                                          tmp_path: Path) -> None:
    shutil.copytree(tiny_models / "llama3-8b", tmp_path / "llama3-8b")
    (tmp_path / "llama3-8b" / "sincere_model.json").unlink()  # e.g. copied in by hand
    write_manifest(tmp_path)
    [row] = scan_models(tmp_path)
    assert (row["alias"], row["kind"], row["family"]) == ("llama3-8b", "unknown", "llama")
    assert row["hub_id"] == HUB_IDS["llama3-8b"]


def hub_error(status: int, error_code: str | None = None,
              error_message: str | None = None) -> HfHubHTTPError:
    """The exception huggingface_hub raises for this HTTP answer to a model-info request."""
    http = getattr(hub_http, "httpx2", None) or getattr(hub_http, "httpx", None)
    if http is None:
        pytest.skip("this huggingface_hub does not use an httpx-style client")
    headers = {key: value for key, value in (("X-Error-Code", error_code),
                                             ("X-Error-Message", error_message)) if value}
    response = http.Response(status, headers=headers, request=http.Request("GET", GEMMA_API_URL))
    with pytest.raises(HfHubHTTPError) as caught:
        hf_raise_for_status(response)
    return caught.value


@pytest.mark.parametrize(("answer", "token_given", "expected"), [
    ((401, "GatedRepo"), False, "gated model and HF_TOKEN is not set: accept the licence at "
                                "https://huggingface.co/google/gemma-7b"),
    ((403, "GatedRepo"), True, "access refused to the gated model: request access at "
                               "https://huggingface.co/google/gemma-7b"),
    ((401,), False, "repository not found (or private/gated and HF_TOKEN is not set)"),
    ((404, "RepoNotFound"), True, "repository not found: check the hub id google/gemma-7b"),
    ((401, None, "Invalid credentials in Authorization header"), True,
     "token rejected (HTTP 401): check HF_TOKEN"),
    ((403,), True, "access refused (HTTP 403)"),
    ((500,), True, "the Hub answered HTTP 500"),
])
def test_hub_http_errors_become_one_line(answer: tuple[Any, ...], token_given: bool,
                                         expected: str) -> None:
    exc = hub_error(*answer)
    assert isinstance(exc, GatedRepoError) == (answer[1:2] == ("GatedRepo",))
    message = describe_hub_error(exc, "google/gemma-7b", token_given)
    assert message.startswith(expected)
    assert "\n" not in message


@pytest.mark.parametrize(("exc", "expected"), [
    (OfflineModeIsEnabled("offline"), "HF_HUB_OFFLINE is set"),
    (LocalEntryNotFoundError("cannot find the requested files"), "the Hugging Face Hub cannot"),
    (ConnectionError("name resolution failed"), "the Hugging Face Hub cannot be reached"),
    (ValueError("first line\nsecond line"), "ValueError: first line"),
])
def test_other_hub_failures_become_one_line(exc: Exception, expected: str) -> None:
    message = describe_hub_error(exc, "google/gemma-7b", token_given=False)
    assert message.startswith(expected) and "\n" not in message


def refuse_as_gated(*args: Any, **kwargs: Any) -> None:
    raise hub_error(401, "GatedRepo")


def test_download_without_hf_token_says_what_to_do(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(sincere.assets.hub, "snapshot_download", refuse_as_gated)
    status = download_models.main(["--models", "gemma-7b=google/gemma-7b",
                                   "--models-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert status == 1
    assert "note: HF_TOKEN is not set" in out
    assert ("gemma-7b: failed: gated model and HF_TOKEN is not set: accept the licence at "
            "https://huggingface.co/google/gemma-7b") in out
    assert "Traceback" not in out + err and "failed: gemma-7b" in err
    assert manifest_rows(tmp_path)[1] == []


def test_download_with_a_refused_token_never_prints_it(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    monkeypatch.setattr(sincere.assets.hub, "snapshot_download", refuse_as_gated)
    assert download_models.main(["--models", "gemma-7b=google/gemma-7b",
                                 "--models-dir", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "access refused to the gated model" in out
    assert "HF_TOKEN is not set" not in out
    assert "hf_secret_value_123" not in out + err


def test_a_download_without_safetensors_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    def only_configs(hub_id: str, local_dir: Path, **kwargs: Any) -> None:
        Path(local_dir).mkdir(parents=True)
        (Path(local_dir) / "config.json").write_text(json.dumps({"model_type": "llama"}))

    monkeypatch.setattr(sincere.assets.hub, "snapshot_download", only_configs)
    [outcome] = prepare_models({"granite-7b": HUB_IDS["granite-7b"]}, tmp_path, "hub")
    assert (outcome.status, outcome.detail) == (
        "failed", "ibm-granite/granite-7b-base has no safetensors weights; only those are used")
    assert not (tmp_path / "granite-7b").exists()


def test_tiny_needs_random(capsys: pytest.CaptureFixture[str]) -> None:
    assert download_models.main(["--tiny"]) == 2
    assert "--random" in capsys.readouterr().err


def test_an_unknown_alias_fails_without_a_partial_folder(tmp_path: Path) -> None:
    [outcome] = prepare_models({"mistral-7b": "mistralai/Mistral-7B-v0.1"}, tmp_path, "tiny")
    assert outcome.status == "failed" and "mistral-7b" in outcome.detail
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.csv"]


@pytest.mark.parametrize("alias", sorted(HUB_IDS))
def test_a_model_built_in_memory_is_the_model_on_disk(alias: str, tiny_models: Path) -> None:
    """random_model's non-persistent buffers (rotary frequencies, Gemma's embedding scale) are
    those transformers computes loading the folder: the same logits, every tensor finite."""
    import torch

    from sincere.assets.local_tokenizers import tokenizer_corpus
    from sincere.assets.models import non_finite_tensors, random_model_and_tokenizer

    built, tokenizer = random_model_and_tokenizer(alias, 0, tiny=True, corpus=tokenizer_corpus(0))
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tiny_models / alias)
    assert non_finite_tensors(built) == []
    buffers = dict(loaded.named_buffers())
    assert {name for name, _ in built.named_buffers()} == set(buffers)
    for name, buffer in built.named_buffers():
        assert torch.equal(buffer, buffers[name]), name
    ids = tokenizer(["one two three four five six seven eight nine ten"] * 2,
                    return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(built(ids).logits, loaded(ids).logits)


@pytest.mark.parametrize("alias", sorted(HUB_IDS))
def test_full_size_rotary_frequencies_are_those_of_the_architecture(alias: str) -> None:
    """The full-size configs (llama3-8b's 'llama3' rope scaling, gemma's head_dim 256): the
    buffers set after to_empty equal those the rotary module's own constructor computes."""
    import torch

    from sincere.assets.architectures import FULL_SIZE
    from sincere.assets.models import build_config, init_non_persistent_buffers_

    config = build_config(alias, FULL_SIZE[alias], FULL_SIZE[alias].vocab_size,
                          {"bos": 1, "eos": 2, "pad": 0})
    model = meta_model(config)
    rotary = model.model.rotary_emb
    rotary.to_empty(device="cpu")  # the rest stays on the meta device: no 16 GB here
    names = init_non_persistent_buffers_(model)
    assert {"model.rotary_emb.inv_freq", "model.rotary_emb.original_inv_freq"} <= set(names)
    expected = type(rotary)(config)
    assert rotary.inv_freq.dtype == torch.float32
    assert torch.equal(rotary.inv_freq, expected.inv_freq)
    assert torch.equal(rotary.original_inv_freq, expected.original_inv_freq)
    assert rotary.attention_scaling == expected.attention_scaling


def test_a_buffer_the_architecture_does_not_recompute_is_reported(tiny_models: Path) -> None:
    """A non-persistent buffer that no init code knows stays NaN after to_empty, and the
    finiteness check names it (it is never garbage that looks valid)."""
    import torch

    from sincere.assets.models import init_non_persistent_buffers_, non_finite_tensors

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_models / "llama3-8b")
    model.model.layers[0].register_buffer("mystery", torch.ones(4), persistent=False)
    names = init_non_persistent_buffers_(model)
    assert "model.layers.0.mystery" in names
    assert non_finite_tensors(model) == ["model.layers.0.mystery"]
    model.model.layers[0].mystery.fill_(1.0)
    model.model.norm.weight.data[0] = float("inf")
    assert non_finite_tensors(model) == ["model.norm.weight"]
