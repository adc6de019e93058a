"""Hand-built profiles with round numbers, so expected decisions can be worked out by hand."""

from __future__ import annotations

from sincere.profiles.profile_set import BatchCurve, ModelProfile, ProfileSet

# P(b) for 50 new tokens: 2 s alone, 3 s for 4, 8 s for 8 -> best batch 4 (1.33 req/s), largest 8.
SIZES = (1, 4, 8)
TIMES_S = (2.0, 3.0, 8.0)


def model(name: str, load_s: float, unload_s: float, load_std_s: float = 0.0) -> ModelProfile:
    curve = BatchCurve(50, SIZES, TIMES_S, (0.0, 0.0, 0.0))
    return ModelProfile(name, 1.0, load_s, load_std_s, unload_s, 0.0, {50: curve}, {50: 8})


def two_models(std_factor: float = 1.0) -> ProfileSet:
    """Model a: load 10 s, unload 2 s. Model b: load 20 s, unload 3 s. Same batch curve."""
    return ProfileSet({"a": model("a", 10.0, 2.0), "b": model("b", 20.0, 3.0)}, "test", "off",
                      "loading.csv", "batch.csv", std_factor=std_factor)
