"""The result objects that ``lossctl.evaluate`` returns and every renderer reads."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TermResult:
    name: str
    weight: float
    params: dict[str, Any]
    value: float
    reduction: str


@dataclass
class Check:
    kind: str  # "fail_above" | "baseline"
    limit: float | None
    passed: bool
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Interval:
    """One interval: ``low``/``high`` are None (with ``note``) when the data cannot give one."""

    low: float | None
    high: float | None
    level: float
    method: str
    se: float | None
    note: str = ""

    @property
    def known(self) -> bool:
        return self.low is not None and self.high is not None

    def as_dict(self) -> dict[str, Any]:
        out = {"low": self.low, "high": self.high, "level": self.level, "method": self.method, "se": self.se}
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class Comparison:
    """``--against``: this model's value against a baseline model's on the same rows (SPEC §9)."""

    against: str
    paired: bool
    baseline_value: float
    diff: float  # candidate − baseline (lower is better)
    relative: float | None  # diff / abs(baseline_value); None when the baseline is 0 or not finite
    verdict: str  # "better" | "worse" | "no_difference"
    diff_ci: Interval | None = None
    #: the per-row differences dᵢ = ℓᵢ(candidate) − ℓᵢ(baseline), binned: {"edges", "counts" (finite
    #: dᵢ, summing to the paired rows), "approx" (from the sketch), "mean", "non_finite"} (the bundle's figure)
    histogram: dict[str, Any] | None = field(default=None, repr=False)


@dataclass
class Summary:
    """Distribution of per-sample values (``--reduction none`` / ``--worst``)."""

    count: int
    mean: float
    std: float
    min: float
    p50: float
    p95: float
    max: float
    worst: list[tuple[int, float]] = field(default_factory=list)
    approx: bool = False  # the quantiles come from a sketch (≤ 1 % relative error)
    #: the sketch's buckets as (value, count), ascending (the bundle's distribution figure)
    histogram: list[tuple[float, int]] = field(default_factory=list, repr=False)


@dataclass
class SliceResult:
    """One slice (``--by``): the loss over the samples whose key is ``key`` (``None``: a missing key)."""

    key: int | float | str | None
    samples: int
    value: float
    ci: dict[str, Any] | None = None
    checks: list[Check] = field(default_factory=list)
    gated: bool = True  # big enough to be gated (--min-slice-size)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


@dataclass
class LossResult:
    loss: str  # the expression as the user wrote it
    canonical: str
    value: float
    reduction: str
    terms: list[TermResult]
    checks: list[Check] = field(default_factory=list)
    omitted: int = 0
    samples: int = 0
    summary: Summary | None = None
    per_sample_path: str | None = None
    ci: Interval | None = None
    comparison: Comparison | None = None
    slices: list[SliceResult] | None = None  # --by: worst first
    calibration: dict[str, Any] | None = None  # reliability bins of a probabilistic classification loss

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks) and all(s.passed for s in self.slices or ())

    @property
    def finite(self) -> bool:
        return math.isfinite(self.value)


@dataclass
class Warning_:
    message: str
    level: str = "warn"
    code: str = ""


@dataclass
class Report:
    version: str
    inputs: dict[str, dict[str, Any]]
    results: list[LossResult]
    warnings: list[Warning_] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    baseline: str | None = None
    # report-level checks: losses in the baseline that this run did not evaluate
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results) and all(c.passed for c in self.checks)
