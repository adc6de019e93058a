"""Downloads from the Hugging Face Hub: safetensors, configs and tokenizer files only, and a
one-line reason, fit for the console, when the Hub refuses (never a traceback or the token)."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)

# Safetensors weights, configs and tokenizer files only: never the .bin / .pth / .gguf copies.
HUB_ALLOW_PATTERNS = ["*.safetensors", "*.json", "tokenizer*"]
HUB_IGNORE_PATTERNS = ["original/*", "*.bin", "*.pth", "*.pt", "*.gguf", "*.msgpack", "*.h5"]


class HubDownloadError(RuntimeError):
    """A download that failed, with a one-line reason fit for the console."""


def _status_code(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def describe_hub_error(exc: BaseException, hub_id: str, token_given: bool) -> str:
    """One line saying why a download failed and what to do, without a traceback."""
    page = f"https://huggingface.co/{hub_id}"
    if isinstance(exc, GatedRepoError):
        if not token_given:
            return (f"gated model and HF_TOKEN is not set: accept the licence at {page} and "
                    f"export HF_TOKEN=<your token>")
        return f"access refused to the gated model: request access at {page} for this token"
    if isinstance(exc, RepositoryNotFoundError):
        hint = "" if token_given else " (or private/gated and HF_TOKEN is not set)"
        return f"repository not found{hint}: check the hub id {hub_id}"
    if isinstance(exc, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set, so the Hub is not contacted; unset it to download"
    if isinstance(exc, LocalEntryNotFoundError) or "Connect" in type(exc).__name__ \
            or "Timeout" in type(exc).__name__ or isinstance(exc, ConnectionError):
        return ("the Hugging Face Hub cannot be reached (no network, proxy or DNS); "
                "use --random to build models offline")
    if isinstance(exc, HfHubHTTPError):
        status = _status_code(exc)
        if status == 401:
            return "token rejected (HTTP 401): check HF_TOKEN" if token_given else (
                "authentication required (HTTP 401): export HF_TOKEN=<your token>")
        if status == 403:
            return f"access refused (HTTP 403): request access at {page}"
        return f"the Hub answered HTTP {status}"
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line}"[:300]


def download_from_hub(hub_id: str, folder: Path, token: str | None) -> None:
    """Fetch a model's safetensors, configs and tokenizer files into ``folder`` (resumable)."""
    try:
        snapshot_download(hub_id, local_dir=folder, allow_patterns=HUB_ALLOW_PATTERNS,
                          ignore_patterns=HUB_IGNORE_PATTERNS, token=token)
    except Exception as exc:  # the hub call boundary: every failure becomes one line
        raise HubDownloadError(describe_hub_error(exc, hub_id, token is not None)) from None
    if not list(folder.glob("*.safetensors")):
        raise HubDownloadError(f"{hub_id} has no safetensors weights; only those are used")
