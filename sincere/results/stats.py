"""Statistics without scipy: Student t quantiles, mean intervals and ratio intervals.

Used by the grid tables (`sincere.results.tables`) to put a confidence interval on every cell mean
and on every CC ratio.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache

import numpy as np


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Lentz's continued fraction for the regularised incomplete beta function."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return result


def _regularised_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularised incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _regularised_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def _t_pdf(t: float, df: float) -> float:
    """Density of Student's t with ``df`` degrees of freedom."""
    log_norm = math.lgamma((df + 1.0) / 2.0) - math.lgamma(df / 2.0) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1.0) / 2.0 * math.log1p(t * t / df))


@lru_cache(maxsize=4096)
def t_quantile(probability: float, df: float) -> float:
    """The ``probability`` quantile of Student's t with ``df`` degrees of freedom.

    Newton's method on the CDF, kept inside a bisection bracket so that it always converges.
    """
    if not 0.0 < probability < 1.0 or not df > 0:
        return math.nan
    if probability < 0.5:
        return -t_quantile(1.0 - probability, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < probability:
        low, high = high, high * 2.0
    t = 0.5 * (low + high)
    for _ in range(100):
        error = t_cdf(t, df) - probability
        if error < 0:
            low = t
        else:
            high = t
        step = error / _t_pdf(t, df)
        candidate = t - step
        t = candidate if low < candidate < high else 0.5 * (low + high)
        if abs(step) <= 1e-12 * max(1.0, abs(t)) or high - low <= 1e-12 * max(1.0, high):
            break
    return t


def _finite(values: Iterable[float | None]) -> np.ndarray:
    array = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return array[np.isfinite(array)]


def mean_ci(values: Iterable[float | None],
            confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the sample mean with its Student t confidence interval.

    None and NaN values are dropped. One value gives NaN bounds (no spread to estimate); none
    gives all NaN.
    """
    sample = _finite(values)
    if sample.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(sample.mean())
    if sample.size == 1:
        return mean, math.nan, math.nan
    half = (t_quantile(0.5 + confidence / 2.0, sample.size - 1)
            * float(sample.std(ddof=1)) / math.sqrt(sample.size))
    return mean, mean - half, mean + half


def ratio_ci(numerator: Iterable[float | None], denominator: Iterable[float | None],
             confidence: float = 0.95) -> tuple[float, float, float]:
    """(ratio, low, high): mean(numerator) / mean(denominator) with Fieller's interval.

    The two samples are independent runs (e.g. non-CC and CC repeats of one cell). Fieller's
    interval solves (mean_x - r mean_y)^2 = t^2 (var_x/n_x + r^2 var_y/n_y) for r, with t at the
    Welch-Satterthwaite degrees of freedom of that pivot at the point estimate. It is NaN when
    either side has fewer than two runs (no variance to estimate) and when the denominator's mean
    is not clearly away from zero (the interval would be unbounded).
    """
    x, y = _finite(numerator), _finite(denominator)
    if x.size == 0 or y.size == 0 or y.mean() == 0:
        return math.nan, math.nan, math.nan
    mean_x, mean_y = float(x.mean()), float(y.mean())
    ratio = mean_x / mean_y
    if x.size < 2 or y.size < 2:
        return ratio, math.nan, math.nan
    var_x = float(x.var(ddof=1)) / x.size  # variance of each sample mean
    var_y = float(y.var(ddof=1)) / y.size
    pivot_var = var_x + ratio * ratio * var_y
    if pivot_var == 0.0:
        return ratio, ratio, ratio
    df = pivot_var ** 2 / (var_x ** 2 / (x.size - 1) + (ratio * ratio * var_y) ** 2 / (y.size - 1))
    t = t_quantile(0.5 + confidence / 2.0, df)
    scale = mean_y * mean_y - t * t * var_y
    if scale <= 0.0:
        return ratio, math.nan, math.nan
    spread = t * math.sqrt(mean_x * mean_x * var_y + mean_y * mean_y * var_x
                           - t * t * var_x * var_y)
    return ratio, (mean_x * mean_y - spread) / scale, (mean_x * mean_y + spread) / scale


def paired_ratio_ci(numerator: Iterable[float | None], denominator: Iterable[float | None],
                    confidence: float = 0.95) -> tuple[float, float, float, str]:
    """(ratio, low, high, how): the ratio of paired samples, e.g. the non-CC and CC runs of one
    cell repeat by repeat (the two sides of a pair share their arrivals).

    The ratio is the geometric mean of the per-pair ratios, its interval the Student t interval
    of the mean log-ratio (n - 1 degrees of freedom) taken back with exp: pairing removes the
    arrivals' variation that both sides share. With one pair there is no spread to estimate
    (NaN bounds); where a value is zero or missing the log is undefined and the ratio of the
    means is given without an interval. ``how`` says which of these it was.
    """
    x = np.asarray([np.nan if v is None else v for v in numerator], dtype=np.float64)
    y = np.asarray([np.nan if v is None else v for v in denominator], dtype=np.float64)
    if x.size == 0 or x.size != y.size:
        return math.nan, math.nan, math.nan, "no pairs"
    if not (np.all(np.isfinite(x) & np.isfinite(y)) and np.all(x > 0) and np.all(y > 0)):
        mean_x, mean_y = nanmean(x), nanmean(y)
        ratio = mean_x / mean_y if mean_y else math.nan
        return ratio, math.nan, math.nan, "a repeat has 0 or no value: ratio of means, no interval"
    logs = np.log(x / y)
    centre = float(logs.mean())
    if logs.size == 1:
        return math.exp(centre), math.nan, math.nan, "one repeat per side: no interval"
    half = (t_quantile(0.5 + confidence / 2.0, logs.size - 1) * float(logs.std(ddof=1))
            / math.sqrt(logs.size))
    return (math.exp(centre), math.exp(centre - half), math.exp(centre + half),
            f"paired over {logs.size} repeats")


def nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan
