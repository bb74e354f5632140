"""How the study states a comparison: per pair of runs, as a median with an interval, and in words only
where the interval allows.

Benchmarks run their configurations in turn (A B A B ...), so a slow spell on a shared machine hits
both runs of a pair; the ratio of each pair (B's repeat k over A's repeat k) is what is compared, never
a ratio of separate medians. The interval is the 95% percentile bootstrap of the median of those
ratios (10,000 resamples, seeded: the same repeats give the same interval). With 5 pairs it comes out
as about their range, so "faster" needs every pair to agree.
"""

from __future__ import annotations

import numpy as np

KIND = "median of paired repeats [95% percentile-bootstrap interval]"
MIN_PAIRS = 3  # fewer: a median is reported with no interval, and no verdict is drawn from it


def median_interval(values, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0) -> dict | None:
    """{median, low, high, n, values}; low/high None for fewer than MIN_PAIRS values; None for none."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    if not len(x):
        return None
    out = {"median": float(np.median(x)), "low": None, "high": None, "n": len(x), "values": x.tolist()}
    if len(x) >= MIN_PAIRS:
        rng = np.random.default_rng(seed)
        medians = np.median(x[rng.integers(0, len(x), (resamples, len(x)))], axis=1)
        tail = 100 * (1 - confidence) / 2
        out["low"], out["high"] = (float(v) for v in np.percentile(medians, [tail, 100 - tail]))
    return out


def paired(numerator: list[float], denominator: list[float], op: str = "ratio") -> dict | None:
    """The median and interval of numerator[k] / denominator[k] (or - for op="difference") over the
    repeats both have, pair by pair."""
    n = min(len(numerator), len(denominator))
    if op == "ratio":
        return median_interval([a / b for a, b in zip(numerator[:n], denominator[:n], strict=True)])
    return median_interval([a - b for a, b in zip(numerator[:n], denominator[:n], strict=True)])


def verdict(iv: dict | None, above: str, below: str, level: float = 1.0) -> str:
    """``above`` where the whole interval is above ``level``, ``below`` where it is below; otherwise
    that no difference was measured (or, with too few pairs, that none could be)."""
    if iv is None or iv["low"] is None:
        return "too few repeats to tell"
    if iv["low"] > level:
        return above
    if iv["high"] < level:
        return below
    return "no difference measured"


def shown(iv: dict | None, digits: int = 2, scale: float = 1.0) -> str | None:
    """``1.78 [1.36, 2.07]`` (median [low, high]), or the median alone without an interval."""
    if iv is None:
        return None
    fmt = lambda v: f"{v * scale:.{digits}f}"  # noqa: E731
    if iv["low"] is None:
        return fmt(iv["median"])
    return f"{fmt(iv['median'])} [{fmt(iv['low'])}, {fmt(iv['high'])}]"
