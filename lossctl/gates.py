"""CI gates: ``--fail-above`` thresholds and ``--baseline`` regression checks (SPEC §6).

Everything here is a pure function of a :class:`~lossctl.result.Report`, the gate specs and a
baseline (a parsed earlier JSON report): it appends :class:`~lossctl.result.Check` objects to
``LossResult.checks`` (and, for losses the baseline has but this run lacks, to ``Report.checks``).
Only :func:`load_baseline` touches the file system.

Rules, chosen so that a gate fails for the right reasons only:

* ``--fail-above LOSS=VALUE`` fails when the value is *above* VALUE (equal passes).
* A non-finite value (NaN, inf, -inf) never passes any gate.
* ``--max-increase`` is absolute (``0.01``) or relative to the baseline (``5%``); given both, the
  larger allowance wins (like ``math.isclose``'s ``abs_tol``/``rel_tol``). Without it the allowance
  is 0: any increase beyond float rounding (1e-12 relative) fails.
* Relative tolerances scale with ``abs(baseline)``, so a baseline of 0 allows no increase at all
  under a relative tolerance (an improvement or an exact 0 still passes); add an absolute
  ``--max-increase`` to tolerate some.
* A baseline value that was non-finite cannot be regressed from: a finite value now passes (with
  a message saying there was nothing to compare against).
* A loss in the baseline that this run did not evaluate fails unless ``allow_missing``.

With confidence intervals (``--ci``, SPEC §9) a gate is a test with three outcomes, in
``Check.extra["verdict"]``: ``--fail-above`` fails when the interval lies above the limit (low >
limit), passes when it lies at or below it (high ≤ limit), else is ``inconclusive``; ``--max-increase``
is a non-inferiority test on the difference candidate − baseline: pass when its interval's high ≤ the
allowed increase, fail when its low > it, else inconclusive. An inconclusive check passes (with a
warning) unless ``inconclusive="fail"``. An interval that could not be computed (one sample) is
inconclusive. The difference's interval is the paired one (``--against``) or, against a
``--baseline`` report written with ``--ci``, Welch's: diff ± t·√(se_new² + se_old²) with the
Welch–Satterthwaite degrees of freedom.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lossctl.errors import ExprError, UsageError, cut
from lossctl.result import Check, LossResult, Report, Warning_

ROUNDING = 1e-12  # relative change treated as float noise, not a regression
SUPPORTED_SCHEMA = 1


# --------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class FailAbove:
    """``--fail-above LOSS=VALUE``: ``loss`` as the user wrote it, ``limit`` the highest passing value."""

    loss: str
    limit: float
    origin: str = "--fail-above"  # where it came from, for messages ("scoring.yaml: fail_above")


@dataclass(frozen=True)
class Tolerance:
    """Allowed increase over the baseline: absolute, relative (a fraction: 5% → 0.05), or both."""

    absolute: float | None = None
    relative: float | None = None

    def allowed(self, old: float) -> float:
        return max(self.absolute or 0.0, (self.relative or 0.0) * abs(old))

    def describe(self) -> str:
        parts = []
        if self.absolute is not None:
            parts.append(f"{self.absolute:g}")
        if self.relative is not None:
            parts.append(f"{self.relative * 100:g}%")
        return " or ".join(parts) if parts else "0"


def parse_limit(text: Any, where: str) -> float:
    """A threshold number (int/float, or text such as ``0.3``, ``1e-3``); NaN is refused."""
    if isinstance(text, bool):
        raise UsageError(f"{where}: expected a number, got {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        try:
            value = float(str(text).strip())
        except ValueError:
            raise UsageError(f"{where}: {str(text).strip()!r} is not a number") from None
    if math.isnan(value):
        raise UsageError(f"{where}: the limit must be a number, not NaN")
    return value


def parse_fail_above(item: str, origin: str = "--fail-above") -> FailAbove:
    """``LOSS=VALUE``, split at the last ``=`` (so ``huber(delta=0.5)=0.2`` works)."""
    loss, sep, value = item.rpartition("=")
    loss = loss.strip()
    if not sep or not loss or not value.strip():
        raise UsageError(f"{origin} {item!r}: expected LOSS=VALUE, e.g. --fail-above mse=0.3 or "
                         f"--fail-above 'huber(delta=0.5)=0.2'")
    return FailAbove(loss, parse_limit(value, f"{origin} {item!r}"), origin)


def parse_max_increase(items: Sequence[Any] | Any, origin: str = "--max-increase") -> Tolerance:
    """``X`` (absolute) or ``X%`` (relative to the baseline); at most one of each."""
    if not isinstance(items, (list, tuple)):
        items = [items]
    absolute = relative = None
    for item in items:
        text = str(item).strip() if not isinstance(item, bool) else ""
        if isinstance(item, bool) or not text:
            raise UsageError(f"{origin} {item!r}: expected a number (absolute, e.g. 0.01) or a "
                             f"percentage (relative to the baseline, e.g. 5%)")
        is_pct = text.endswith("%")
        value = parse_limit(text[:-1] if is_pct else text, f"{origin} {item!r}")
        if value < 0 or math.isinf(value):
            raise UsageError(f"{origin} {item!r}: the tolerated increase must be a finite number >= 0")
        if is_pct:
            if relative is not None:
                raise UsageError(f"{origin}: two relative tolerances given ({relative * 100:g}% and {text})")
            relative = value / 100.0
        else:
            if absolute is not None:
                raise UsageError(f"{origin}: two absolute tolerances given ({absolute:g} and {text})")
            absolute = value
    return Tolerance(absolute, relative)


# ------------------------------------------------------------------------------------ matching


def _signature(text: str) -> tuple[Any, ...] | None:
    """What an expression computes: (name, weight, params, reduction) per term; None if unbindable."""
    from lossctl.expr import bind

    try:
        terms = bind(text)
    except (ExprError, UsageError):
        return None
    return tuple((t.spec.name, t.weight, json.dumps(t.params, sort_keys=True, default=repr), t.reduction)
                 for t in terms)


def _bare_name(text: str) -> str | None:
    """The canonical loss name if ``text`` is a bare loss name (``huber``, ``l2``), else None."""
    import lossctl.losses  # noqa: F401  (the built-in losses, by name)
    from lossctl.expr import parse
    from lossctl.registry import canonical_name

    try:
        expr = parse(text)
    except ExprError:
        return None
    if len(expr.terms) != 1 or expr.terms[0].weight != 1.0 or expr.terms[0].call.args:
        return None
    try:
        return canonical_name(expr.terms[0].call.name)
    except ExprError:
        return None


def _norm(text: str) -> str:
    return "".join(text.split()).lower()


def match_loss(loss: str, results: Sequence[LossResult]) -> list[tuple[LossResult, int | None]]:
    """The results (and, for a bare name found only inside combinations, the term) ``loss`` names.

    In order: the expression exactly as written (ignoring spaces and case); a bare loss name or
    alias, which names every single-term result of that loss (``huber`` matches ``huber`` and
    ``huber(delta=0.5)``; ``l2`` matches ``mse``), or failing that the terms of that loss inside
    combined expressions; otherwise the same computation (default parameters and aliases
    resolved: ``huber(delta=1)`` == ``huber(delta=1.0)`` == ``huber``, ``2*l1`` == ``2*mae``).
    """
    exact = [(r, None) for r in results if _norm(r.loss) == _norm(loss)]
    if exact:
        return exact
    name = _bare_name(loss)
    if name is not None:
        single = [(r, None) for r in results if len(r.terms) == 1 and r.terms[0].name == name]
        if single:
            return single
        return [(r, i) for r in results for i, t in enumerate(r.terms) if t.name == name]
    sig = _signature(loss)
    if sig is None:
        return []
    return [(r, None) for r in results if _signature(r.loss) == sig]


def _no_match_message(loss: str, origin: str, results: Sequence[LossResult]) -> str:
    evaluated = [r.loss for r in results]
    close = difflib.get_close_matches(loss, evaluated, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (f"{origin}: {loss!r} names no evaluated loss{hint} (evaluated: {', '.join(evaluated)}); "
            f"use the expression as given to --loss, or a bare loss name")


# ------------------------------------------------------------------------------- value checks


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.6g}"


def _non_finite(value: float) -> str | None:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return None


def _verdict(check: Check, inconclusive: str = "pass") -> Check:
    check.extra.setdefault("verdict", "pass" if check.passed else "fail")
    if check.extra["verdict"] == "inconclusive":
        check.passed = inconclusive == "pass"
    return check


def interval_check(kind: str, label: str, what: str, low: float | None, high: float | None, limit: float,
                   extra: dict[str, Any], inconclusive: str) -> Check:
    """The three-way test of an interval [low, high] against ``limit``: pass when high ≤ limit, fail
    when low > limit, else (or without an interval) inconclusive."""
    if low is None or high is None:
        verdict, message = "inconclusive", f"{label}: no interval for {what} (see its note), so the limit " \
                                           f"{_fmt(limit)} is neither met nor exceeded"
    elif high <= limit:
        verdict, message = "pass", f"{label}: {what} interval [{_fmt(low)}, {_fmt(high)}] is within {_fmt(limit)}"
    elif low > limit:
        verdict, message = "fail", f"{label}: {what} interval [{_fmt(low)}, {_fmt(high)}] lies above {_fmt(limit)}"
    else:
        verdict, message = "inconclusive", (f"{label}: {what} interval [{_fmt(low)}, {_fmt(high)}] contains the "
                                            f"limit {_fmt(limit)}: inconclusive (more samples would tell)")
    return _verdict(Check(kind, limit, verdict == "pass", message, {**extra, "verdict": verdict}), inconclusive)


def fail_above_check(label: str, value: float, limit: float, ci: Any = None, inconclusive: str = "pass") -> Check:
    """Passes when ``value <= limit``; a non-finite value never passes. With an interval ``ci``: see
    :func:`interval_check`."""
    if ci is not None and _non_finite(value) is None:
        return interval_check("fail_above", label, "the value's", ci.low, ci.high, limit, {"value": value}, inconclusive)
    bad = _non_finite(value)
    if bad is not None:
        passed = False
        message = f"{label} is {bad}, which never passes a gate (limit {_fmt(limit)})"
    elif value > limit:
        passed = False
        message = f"{label} = {_fmt(value)} is above the limit {_fmt(limit)}"
    else:
        passed = True
        message = f"{label} = {_fmt(value)} is within the limit {_fmt(limit)}"
    return _verdict(Check(kind="fail_above", limit=limit, passed=passed, message=message, extra={"value": value}))


def change_pct(old: float, new: float) -> float | None:
    """Percentage change relative to ``abs(old)``; 0 for 0 → 0; None (undefined) for 0 → nonzero."""
    if not (math.isfinite(old) and math.isfinite(new)):
        return None
    if old == 0:
        return 0.0 if new == 0 else None
    return 100.0 * (new - old) / abs(old)


def welch_interval(old: float, se_old: float, n_old: int | None, new: float, se_new: float, n_new: int | None,
                   level: float) -> tuple[float, float]:
    """Welch's interval for new − old from two independent estimates with standard errors."""
    from lossctl.intervals import normal_quantile, t_quantile

    se = math.sqrt(se_old ** 2 + se_new ** 2)
    q = normal_quantile(0.5 + level / 2)
    if se > 0 and n_old and n_new and n_old > 1 and n_new > 1:
        den = se_old ** 4 / (n_old - 1) + se_new ** 4 / (n_new - 1)
        if den > 0:
            q = t_quantile(0.5 + level / 2, se ** 4 / den)
    diff = new - old
    return diff - q * se, diff + q * se


def baseline_check(label: str, old: float, new: float, tolerance: Tolerance, diff_ci: Any = None,
                   inconclusive: str = "pass", kind: str = "baseline") -> Check:
    """Compare ``new`` with the baseline value ``old`` under ``tolerance`` (see the module rules);
    with ``diff_ci`` = (low, high) of new − old, the non-inferiority test of :func:`interval_check`."""
    change = new - old if math.isfinite(old) and math.isfinite(new) else math.nan
    extra: dict[str, Any] = {"baseline": old, "value": new, "change": change,
                             "change_pct": change_pct(old, new), "max_increase": tolerance.describe()}
    if diff_ci is not None and _non_finite(new) is None and _non_finite(old) is None:
        extra["diff_ci"] = list(diff_ci)
        check = interval_check(kind, label, "the increase's", diff_ci[0], diff_ci[1], tolerance.allowed(old),
                               extra, inconclusive)
        if check.extra["verdict"] == "fail":
            check.message = (f"{label} = {_fmt(new)} got worse than the baseline {_fmt(old)} by more than the allowed "
                             f"increase {tolerance.describe()}: {check.message.removeprefix(label + ': ')}")
        return check
    bad_new, bad_old = _non_finite(new), _non_finite(old)
    if bad_new is not None:
        return _verdict(Check(kind, None, False, f"{label} is {bad_new}, which never passes a gate "
                                                 f"(baseline {_fmt(old)})", extra))
    if bad_old is not None:
        return _verdict(Check(kind, None, True, f"{label} = {_fmt(new)}; the baseline value was {bad_old}, "
                                                f"so there is nothing to regress from", extra))
    allowed = tolerance.allowed(old)
    limit = old + allowed
    slack = ROUNDING * max(abs(old), abs(new))
    passed = change <= allowed + slack
    pct = extra["change_pct"]
    pct_text = f" ({pct:+.3g}%)" if pct is not None else ""
    if passed:
        message = (f"{label} = {_fmt(new)}, baseline {_fmt(old)}: change {change:+.6g}{pct_text} within "
                   f"the allowed increase {tolerance.describe()}")
    else:
        message = (f"{label} = {_fmt(new)} got worse than the baseline {_fmt(old)} by {change:+.6g}"
                   f"{pct_text}; allowed increase {tolerance.describe()}")
        if old == 0 and tolerance.relative is not None and not tolerance.absolute:
            message += (" (the baseline is 0, so a relative tolerance allows no increase; add an absolute "
                        "--max-increase to tolerate some)")
    return _verdict(Check(kind, limit, passed, message, extra))


# ------------------------------------------------------------------------------------ baseline


@dataclass
class BaselineEntry:
    loss: str
    value: float
    reduction: str | None = None
    samples: int | None = None
    se: float | None = None  # from a report written with --ci
    level: float | None = None


@dataclass
class Baseline:
    """The parts of an earlier ``--format json`` report that gates compare against."""

    path: str
    entries: list[BaselineEntry]
    input_digests: dict[str, str] = field(default_factory=dict)  # name -> "ALGO:HEX"


def _entry_value(res: Mapping[str, Any], where: str) -> float:
    value = res.get("value")
    if value is None:
        kind = res.get("non_finite", "nan")
        return {"inf": math.inf, "-inf": -math.inf}.get(str(kind), math.nan)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{where}: 'value' must be a number or null, got {value!r}")
    return float(value)


def _same_entry(a: BaselineEntry, b: BaselineEntry) -> bool:
    same_value = a.value == b.value or (math.isnan(a.value) and math.isnan(b.value))
    return same_value and a.reduction == b.reduction


def baseline_from_dict(doc: Any, path: str) -> Baseline:
    """Validate a parsed JSON report and keep what the gates need."""
    hint = f"make one with: lossctl evaluate ... --format json --output {path}"
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise UsageError(f"--baseline {path}: not a lossctl JSON report (no 'results' list); {hint}")
    version = doc.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= SUPPORTED_SCHEMA:
        raise UsageError(f"--baseline {path}: schema_version {version!r} is not supported by this lossctl "
                         f"(supports {SUPPORTED_SCHEMA}); regenerate the baseline or upgrade lossctl")
    entries: list[BaselineEntry] = []
    seen: dict[str, BaselineEntry] = {}
    for i, res in enumerate(doc["results"]):
        where = f"--baseline {path}: results[{i}]"
        if not isinstance(res, dict) or not isinstance(res.get("loss"), str) or not res["loss"].strip():
            raise UsageError(f"{where}: expected an object with a 'loss' expression and a 'value'")
        if "value" not in res:
            raise UsageError(f"{where} ({res['loss']}): no 'value'")
        reduction = res.get("reduction") if isinstance(res.get("reduction"), str) else None
        samples = res.get("samples") if isinstance(res.get("samples"), int) else None
        entry = BaselineEntry(res["loss"], _entry_value(res, where), reduction, samples)
        ci = res.get("ci")
        if isinstance(ci, dict) and isinstance(ci.get("se"), (int, float)) and not isinstance(ci.get("se"), bool) \
                and math.isfinite(ci["se"]) and ci["se"] >= 0:
            entry.se = float(ci["se"])
            entry.level = float(ci["level"]) if isinstance(ci.get("level"), (int, float)) else None
        first = seen.get(_norm(res["loss"]))
        if first is not None:  # "mse" and "MSE" are one loss (--loss mse --loss MSE writes both)
            if not _same_entry(first, entry):  # which value would be meant? refuse, not first-wins
                raise UsageError(f"{where}: loss {cut(res['loss'])!r} is also results entry "
                                 f"{cut(first.loss)!r} with a different value or reduction; keep one of them")
            continue
        seen[_norm(res["loss"])] = entry
        entries.append(entry)
    digests: dict[str, str] = {}
    prov = doc.get("provenance")
    if isinstance(prov, dict) and isinstance(prov.get("inputs"), dict):
        for name, info in prov["inputs"].items():
            if isinstance(info, dict) and isinstance(info.get("digest"), str):
                digests[str(name)] = info["digest"]
            elif isinstance(info, dict) and isinstance(info.get("sha256"), str):  # reports before "digest"
                digests[str(name)] = f"sha256:{info['sha256']}"
    return Baseline(path, entries, digests)


def load_baseline(path: str) -> Baseline:
    """Read an earlier ``lossctl evaluate --format json`` report; every problem is exit 2."""
    from lossctl.userfiles import read_text

    text = read_text(path, f"--baseline {path}", "a JSON report",
                     missing=f"--baseline {path}: no such file; make one with: lossctl evaluate ... "
                             f"--format json --output {path}")
    doc = parse_json(text, f"--baseline {path}")
    return baseline_from_dict(doc, path)


#: limits on a baseline report, checked before it is parsed (a report lossctl writes is far inside them)
MAX_JSON_CHARS = 50_000_000
MAX_JSON_DEPTH = 64
MAX_JSON_NUMBER_CHARS = 40


def _json_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` outside strings (iterative, so 100,000 levels cost nothing)."""
    import re

    depth = top = 0
    for m in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', text):
        tok = m.group()
        if tok in "[{":
            depth += 1
            top = max(top, depth)
        elif tok in "]}":
            depth -= 1
    return top


def parse_json(text: str, label: str) -> Any:
    """A JSON document from user text, refused (UsageError) when malformed, nested over
    MAX_JSON_DEPTH, holding a number over MAX_JSON_NUMBER_CHARS characters, or an object with a key
    twice (the first would silently win)."""
    if len(text) > MAX_JSON_CHARS:
        raise UsageError(f"{label}: too large for a lossctl report ({len(text)} characters)")
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise UsageError(f"{label}: not a lossctl report (values nested more than {MAX_JSON_DEPTH} deep)")

    def number(s: str) -> Any:
        if len(s) > MAX_JSON_NUMBER_CHARS:
            raise UsageError(f"{label}: a number over {MAX_JSON_NUMBER_CHARS} characters ({cut(s, 30)})")
        return int(s) if s.lstrip("-").isdigit() else float(s)

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise UsageError(f"{label}: key {cut(key)!r} appears twice in one object")
            out[key] = value
        return out

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_int=number, parse_float=number,
                          parse_constant=lambda c: float(c))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{label}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})") from None
    except RecursionError:  # pragma: no cover - the depth check comes first
        raise UsageError(f"{label}: not a lossctl report (nested too deep)") from None


def _find_entry(res: LossResult, entries: Sequence[BaselineEntry]) -> BaselineEntry | None:
    for e in entries:
        if _norm(e.loss) == _norm(res.loss):
            return e
    sig = _signature(res.loss)
    if sig is not None:
        for e in entries:
            if _signature(e.loss) == sig:
                return e
    return None


# ------------------------------------------------------------------------------------ applying


#: slices with fewer samples are reported but not gated (``--min-slice-size``)
DEFAULT_MIN_SLICE_SIZE = 30


def apply_slice_gates(report: Report, fail_above: Iterable[FailAbove] = (), min_size: int | None = None,
                      gate: bool = False, inconclusive: str = "pass") -> Report:
    """Mark each slice as gated or not (``min_size`` samples at least) and, with ``gate``
    (``--gate-slices``), check every gated slice against the ``--fail-above`` limits of its loss.
    A slice with an interval (``--ci``) is tested as the whole result is: pass / fail /
    inconclusive (:func:`interval_check`; an inconclusive slice warns, and fails only with
    ``inconclusive="fail"``)."""
    from lossctl.result import Interval

    min_size = DEFAULT_MIN_SLICE_SIZE if min_size is None else min_size
    for res in report.results:
        for sl in res.slices or ():
            sl.gated = sl.samples >= min_size
    if not gate:
        return report
    for g in fail_above:
        for res, term in match_loss(g.loss, report.results):
            if term is not None:  # a term's limit: the slices hold whole expressions' values
                continue
            for sl in res.slices or ():
                if sl.gated:
                    ci = None if sl.ci is None else Interval(**sl.ci)
                    check = fail_above_check(f"{res.loss} [slice {sl.key}]", sl.value, g.limit, ci, inconclusive)
                    check.extra["slice"] = sl.key
                    sl.checks.append(check)
                    if check.extra.get("verdict") == "inconclusive":
                        report.warnings.append(Warning_(message=check.message, code="inconclusive"))
    return report


def apply_gates(report: Report, fail_above: Iterable[FailAbove] = (), baseline: Baseline | None = None,
                tolerance: Tolerance | None = None, allow_missing: bool = False, inconclusive: str = "pass",
                against: bool = False) -> Report:
    """Append the checks for every gate to ``report`` (in place) and return it.

    ``against``: ``tolerance`` also bounds each result's paired ``comparison`` (``--against``).
    An inconclusive check adds a warning; it passes unless ``inconclusive="fail"``.

    A ``fail_above`` naming no evaluated loss is a UsageError (exit 2), as is a baseline entry whose
    reduction differs from this run's (the values are not comparable).
    """
    results = report.results
    for gate in fail_above:
        matches = match_loss(gate.loss, results)
        if not matches:
            raise UsageError(_no_match_message(gate.loss, f"{gate.origin} {gate.loss}={gate.limit:g}", results))
        for res, term in matches:
            if term is None:
                res.checks.append(fail_above_check(res.loss, res.value, gate.limit, res.ci, inconclusive))
            else:
                t = res.terms[term]
                check = fail_above_check(f"{res.loss} [term {t.name}]", t.value, gate.limit)
                check.extra["term"] = t.name
                res.checks.append(check)
    if against:
        for res in results:
            cmp = res.comparison
            if cmp is None:
                continue
            ci = cmp.diff_ci
            diff_ci = None if ci is None else (ci.low, ci.high)
            check = baseline_check(res.loss, cmp.baseline_value, res.value, tolerance or Tolerance(), diff_ci,
                                   inconclusive, kind="against")
            check.extra["against"] = cmp.against
            res.checks.append(check)
    if baseline is None:
        _warn_inconclusive(report)
        return report
    tolerance = tolerance or Tolerance()
    used: set[int] = set()
    for res in results:
        entry = _find_entry(res, baseline.entries)
        if entry is None:
            continue
        used.add(id(entry))
        if entry.reduction and entry.reduction != res.reduction:
            raise UsageError(f"--baseline {baseline.path}: {res.loss} was reduced with {entry.reduction} "
                             f"there but with {res.reduction} now; the values are not comparable "
                             f"(regenerate the baseline or use the same --reduction)")
        diff_ci = None
        if res.ci is not None and entry.se is not None:  # both reports carry intervals: Welch's
            se_new = res.ci.se if res.ci.se is not None else math.nan
            if math.isfinite(se_new):
                diff_ci = welch_interval(entry.value, entry.se, entry.samples, res.value, se_new, res.samples,
                                         res.ci.level)
            else:
                diff_ci = (None, None)
        check = baseline_check(res.loss, entry.value, res.value, tolerance, diff_ci, inconclusive)
        if diff_ci is not None:
            check.extra["paired"] = False
        if entry.loss != res.loss:
            check.extra["baseline_loss"] = entry.loss
        res.checks.append(check)
    for entry in baseline.entries:
        if id(entry) in used:
            continue
        extra = {"loss": entry.loss, "baseline": entry.value, "value": None, "missing": True}
        if allow_missing:
            report.checks.append(Check("baseline", None, True, f"{entry.loss} is in the baseline but was not "
                                                                f"evaluated in this run (allowed by --allow-missing)",
                                       {**extra, "skipped": True}))
        else:
            report.checks.append(Check("baseline", None, False, f"{entry.loss} is in the baseline but was not "
                                                                 f"evaluated in this run; evaluate it, or pass "
                                                                 f"--allow-missing", extra))
    current = report.provenance.get("inputs", {}) if report.provenance else {}
    for name in ("targets",):
        old = baseline.input_digests.get(name)
        new = (current.get(name) or {}).get("digest") if isinstance(current.get(name), dict) else None
        if old and new and _inputs_differ(old, new):
            report.warnings.append(Warning_(
                message=f"the {name} differ from the baseline's ({baseline.path}); the comparison is "
                        f"only meaningful on the same evaluation data",
                code="baseline_inputs_differ"))
    _warn_inconclusive(report)
    return report


def _warn_inconclusive(report: Report) -> None:
    for c in (c for r in report.results for c in r.checks):
        if c.extra.get("verdict") == "inconclusive":
            report.warnings.append(Warning_(message=c.message, code="inconclusive"))


def _inputs_differ(old: str, new: str) -> bool:
    """Whether two ``"ALGO:HEX"`` digests show different data: only digests of one algorithm can
    (an xxh3 digest and a sha256 one of the same file differ, and say nothing)."""
    from lossctl.provenance import split_digest

    (old_algo, old_hex), (new_algo, new_hex) = split_digest(old), split_digest(new)
    return old_algo == new_algo and old_hex != new_hex
