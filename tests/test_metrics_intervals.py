"""Confidence intervals over repeats and of non-CC / CC ratios, against hand-worked numbers.

Student t quantiles below are from printed tables: t(0.975; 1) = 12.7062, t(0.975; 2) = 4.3027,
t(0.975; 10) = 2.2281, t(0.95; 5) = 2.0150.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.results.stats import mean_ci, ratio_ci, t_quantile
from sincere.results.tables import cell_table


@pytest.mark.parametrize(("probability", "df", "table_value"), [
    (0.975, 1, 12.7062), (0.975, 2, 4.3027), (0.975, 10, 2.2281), (0.95, 5, 2.0150),
    (0.025, 2, -4.3027),
])
def test_t_quantiles_match_the_printed_tables(probability: float, df: float,
                                              table_value: float) -> None:
    assert t_quantile(probability, df) == pytest.approx(table_value, abs=1e-4)


def t_density(t: np.ndarray, df: float) -> np.ndarray:
    """Student's t density, written out: Γ((ν+1)/2) / (√(νπ) Γ(ν/2)) · (1 + t²/ν)^(-(ν+1)/2)."""
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return np.exp(log_norm - (df + 1) / 2 * np.log1p(t * t / df))


def t_cdf_by_simpson(t: float, df: float, intervals: int = 4000) -> float:
    """P(T <= t) for t >= 0 as 1/2 + the density's integral from 0 to t (Simpson's rule): a
    second way to the CDF, independent of the incomplete beta function the module uses."""
    x = np.linspace(0.0, t, intervals + 1)
    y = t_density(x, df)
    return 0.5 + (t / intervals) / 3 * (y[0] + y[-1] + 4 * y[1:-1:2].sum() + 2 * y[2:-1:2].sum())


@settings(max_examples=200, deadline=None)
@given(st.floats(1.0, 120.0), st.floats(0.55, 0.995))
def test_t_quantile_at_fractional_df_inverts_the_cdf(df: float, probability: float) -> None:
    """Welch's interval uses fractional degrees of freedom (e.g. 4.37): at any df the quantile
    must be the point where the CDF, integrated independently, reaches the probability; and the
    lower tail mirrors the upper."""
    quantile = t_quantile(probability, df)
    assert t_cdf_by_simpson(quantile, df) == pytest.approx(probability, abs=1e-7)
    assert t_quantile(1 - probability, df) == pytest.approx(-quantile, rel=1e-9)


@pytest.mark.parametrize("probability", [0.6, 0.9, 0.975, 0.995])
def test_t_quantile_closed_forms(probability: float) -> None:
    """Two df with a closed form: df 1 is Cauchy, tan(π(p - 1/2)); df 2 is
    (2p - 1) / √(2p(1 - p)). (Seven digits: an interval is reported to four.)"""
    assert t_quantile(probability, 1.0) == pytest.approx(math.tan(math.pi * (probability - 0.5)),
                                                         rel=1e-7)
    assert t_quantile(probability, 2.0) == pytest.approx(
        (2 * probability - 1) / math.sqrt(2 * probability * (1 - probability)), rel=1e-7)


def test_mean_interval_of_three_repeats() -> None:
    # mean 2, sample sd 1, standard error 1/sqrt(3) = 0.57735; half width 4.3027 * 0.57735
    # = 2.48414.
    mean, low, high = mean_ci([1.0, 2.0, 3.0, None, math.nan])
    assert mean == pytest.approx(2.0)
    assert (low, high) == (pytest.approx(2.0 - 2.48414, abs=1e-4),
                           pytest.approx(2.0 + 2.48414, abs=1e-4))


def test_a_single_repeat_has_a_mean_but_no_interval() -> None:
    mean, low, high = mean_ci([7.0])
    assert mean == 7.0 and math.isnan(low) and math.isnan(high)


def test_ratio_interval_with_a_constant_denominator_is_the_numerators_t_interval() -> None:
    # x = 9, 11: mean 10, standard error 1, df 1. y = 20, 20: no spread, so the interval is
    # (10 -+ 12.7062 * 1) / 20.
    ratio, low, high = ratio_ci([9.0, 11.0], [20.0, 20.0])
    assert ratio == pytest.approx(0.5)
    assert low == pytest.approx(-2.7062 / 20, abs=1e-4)
    assert high == pytest.approx(22.7062 / 20, abs=1e-4)


def test_fieller_interval_with_both_sides_varying() -> None:
    # x = 9, 11 (mean 10, var of mean 1); y = 18, 22 (mean 20, var of mean 4); r = 0.5.
    # The pivot's two variance terms are equal (1 and 0.25 * 4), so Welch's df = 2, t = 4.3027.
    # Roots of r^2 (400 - t^2 4) - 2 r 200 + (100 - t^2) = 0:
    #   (200 -+ t sqrt(100 * 4 + 400 * 1 - t^2 * 4)) / (400 - 4 t^2) = 0.25792 and 0.96926.
    ratio, low, high = ratio_ci([9.0, 11.0], [18.0, 22.0])
    assert ratio == pytest.approx(0.5)
    assert low == pytest.approx(0.25792, abs=1e-4)
    assert high == pytest.approx(0.96926, abs=1e-4)


def test_fieller_interval_of_the_inverse_ratio_is_the_inverse_interval() -> None:
    noncc, cc = [9.0, 10.5, 11.0, 12.0], [18.0, 22.0, 21.0]
    ratio, low, high = ratio_ci(noncc, cc)
    inverse, inverse_low, inverse_high = ratio_ci(cc, noncc)
    assert inverse == pytest.approx(1 / ratio)
    assert (inverse_low, inverse_high) == (pytest.approx(1 / high), pytest.approx(1 / low))


def test_ratio_without_two_runs_per_side_or_with_a_zero_denominator() -> None:
    ratio, low, high = ratio_ci([3.0], [2.0, 2.2])
    assert ratio == pytest.approx(3.0 / 2.1) and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in ratio_ci([1.0, 2.0], [0.0, 0.0]))


def test_cell_table_averages_repeats_and_keeps_cells_apart() -> None:
    cell = {"engine": "sim", "platform": "h100", "strategy": "BestBatch", "pattern": "gamma",
            "mean_rps": 4.0, "sla_s": 40.0, "cc_mode": "off", "max_new_tokens": 50.0,
            "duration_s": 100.0, "cell_id": "sla40", "status": "complete"}
    runs = pd.DataFrame([{**cell, "repeat": r, "run_id": f"a{r}", "sla_attainment": v}
                         for r, v in enumerate([0.1, 0.2, 0.3])]
                        + [{**cell, "sla_s": 60.0, "cell_id": "sla60", "repeat": 0,
                            "run_id": "b0", "sla_attainment": 0.9},
                           {**cell, "sla_s": 60.0, "cell_id": "sla60", "repeat": 1,
                            "run_id": "b1", "sla_attainment": 0.1, "status": "failed"}])
    table = cell_table(runs, ["sla_attainment"]).set_index("sla_s")
    assert table.loc[40.0, "runs"] == 3
    assert table.loc[40.0, "sla_attainment_mean"] == pytest.approx(0.2)
    assert table.loc[40.0, "sla_attainment_ci_low"] == pytest.approx(0.2 - 0.248414, abs=1e-5)
    assert table.loc[40.0, "sla_attainment_ci_high"] == pytest.approx(0.2 + 0.248414, abs=1e-5)
    # The failed run is counted and named, and left out of the mean.
    assert (table.loc[60.0, "runs"], table.loc[60.0, "runs_failed"]) == (1, 1)
    assert table.loc[60.0, "failed_runs"] == "b1"
    assert table.loc[60.0, "sla_attainment_mean"] == pytest.approx(0.9)
    assert math.isnan(table.loc[60.0, "sla_attainment_ci_low"])
