"""Registry-wide invariance tests of ``LossState`` (SPEC §8), in the spirit of scikit-learn's common
metric tests: every built-in loss, through one generator table, must give the same value however its
samples are ordered, shaped ((N,) vs (N,1)), typed (float32 vs float64), chunked, merged, pickled,
and whether the fused fast paths or the generic kernels compute it.

The loss list comes from ``lossctl.registry.all_specs()``: a built-in loss without an entry in
``CASES`` gets a parametrization that fails, so a new loss cannot slip through untested.
"""

from __future__ import annotations

import itertools
import math
import pickle
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import lossctl
import lossctl.engine
import lossctl.fast
import lossctl.losses  # noqa: F401  (registers the built-in losses)
from lossctl import LossState
from lossctl.registry import all_specs, get_spec

Inputs = dict[str, np.ndarray]
Gen = Callable[[np.random.Generator, int], Inputs]

MERGE_RTOL = 1e-12  # any split, merged in any tree, vs one-shot (SPEC §8)
STD_RTOL = 1e-9
F64_RTOL = 1e-10  # fused vs generic kernels, float64 inputs (SPEC §4 numerics)
F32_RTOL = 1e-5  # float32 inputs


# ------------------------------------------------------------------------------------ generators
# Each takes (rng, n) and returns realistic, valid inputs for n samples, by lossctl input name.


def _normal(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return rng.standard_normal(shape) * scale


def _softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def regression(*cols: int, preds: Callable[..., np.ndarray] | None = None,
               targets: Callable[..., np.ndarray] | None = None) -> Gen:
    """Same-shape real preds/targets, shape (n, *cols); custom draws for restricted domains."""
    def make(rng: np.random.Generator, n: int) -> Inputs:
        t = targets(rng, n, *cols) if targets else _normal(rng, n, *cols, scale=2.0)
        p = preds(rng, n, *cols) if preds else t + _normal(rng, n, *cols, scale=1.5)
        return {"preds": p, "targets": t}
    return make


def _positive(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.lognormal(0.0, 1.0, shape)


def _away_from_zero(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 3.0, shape)


def _counts(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.poisson(3.0, shape).astype(np.float64)


def gaussian_nll_inputs(var_cols: tuple[int, ...] = (2,)) -> Gen:
    def make(rng: np.random.Generator, n: int) -> Inputs:
        return {"preds": _normal(rng, n, 2), "targets": _normal(rng, n, 2),
                "var": rng.uniform(0.1, 3.0, (n, *var_cols))}
    return make


def binary(*cols: int, preds: str = "logits", soft: bool = False, pm1: bool = False) -> Gen:
    """Binary targets ({0,1}, soft in [0,1], or ±1) with logits, probabilities or scores."""
    def make(rng: np.random.Generator, n: int) -> Inputs:
        shape = (n, *cols)
        t = rng.uniform(0, 1, shape) if soft else rng.integers(0, 2, shape).astype(np.float64)
        if pm1:
            t = 2 * t - 1
        x = _normal(rng, *shape, scale=2.0)
        if preds == "probs":
            x = 1 / (1 + np.exp(-x))
            x.flat[:2] = [0.0, 1.0][: x.size]  # probabilities at exactly 0 and 1 (log clamped at -100)
        return {"preds": x, "targets": t}
    return make


def classes(c: int = 5, *spatial: int, preds: str = "logits", targets: str = "index",
            ignore: int | None = None) -> Gen:
    """(n, C, *spatial) logits (or log-probabilities, or probabilities); class-index targets
    (n, *spatial), or probability targets of the preds' shape."""
    def make(rng: np.random.Generator, n: int) -> Inputs:
        x = _normal(rng, n, c, *spatial, scale=2.0)
        if preds == "log_probs":
            x = _log_softmax(x)
        elif preds == "probs":
            x = _softmax(x)
        if targets == "probs":
            t = _softmax(_normal(rng, n, c, *spatial, scale=2.0))
        else:
            t = rng.integers(0, c, (n, *spatial))
            if ignore is not None:
                t[rng.uniform(size=t.shape) < 0.2] = ignore
        return {"preds": x, "targets": t}
    return make


def distributions(c: int = 6, *rest: int, q: str = "probs", p: str = "probs", one: bool = False) -> Gen:
    """Q (preds) and P (targets) over axis 1 (a single (C,) distribution with one=True); P has a
    few exact zeros (terms that are 0 whatever Q is)."""
    def make(rng: np.random.Generator, n: int) -> Inputs:
        axis = 0 if one else 1
        shape = (c,) if one else (n, c, *rest)
        logits_q = _normal(rng, *shape)
        pp = np.moveaxis(rng.dirichlet(np.ones(c), size=shape[:axis] + shape[axis + 1:]), -1, axis)
        pp.flat[::7] = 0.0
        pp = pp / pp.sum(axis=axis, keepdims=True)
        qq = {"probs": _softmax(logits_q, axis), "log": _log_softmax(logits_q, axis), "logits": logits_q}[q]
        with np.errstate(divide="ignore"):
            tt = np.log(pp) if p == "log" else pp
        return {"preds": qq, "targets": tt}
    return make


def gaussian_kl_inputs(rng: np.random.Generator, n: int) -> Inputs:
    return {"mu": _normal(rng, n, 4), "logvar": _normal(rng, n, 4, scale=0.7)}


def triplets(rng: np.random.Generator, n: int) -> Inputs:
    a = _normal(rng, n, 6)
    return {"anchor": a, "positive": a + _normal(rng, n, 6, scale=0.5), "negative": _normal(rng, n, 6)}


def pairs(labels: str) -> Gen:
    """x1, x2 (n, D) with targets 0/1 (contrastive) or ±1 (cosine_embedding)."""
    def make(rng: np.random.Generator, n: int) -> Inputs:
        x1 = _normal(rng, n, 5)
        y = rng.integers(0, 2, n).astype(np.float64)
        x2 = np.where(y[:, None] == 0, x1 + _normal(rng, n, 5, scale=0.3), _normal(rng, n, 5))
        return {"x1": x1, "x2": x2, "targets": y if labels == "01" else 1 - 2 * y}
    return make


def embeddings(rng: np.random.Generator, n: int) -> Inputs:
    y = rng.integers(0, 4, n)
    return {"embeddings": np.eye(4, 6)[y] * 2 + _normal(rng, n, 6, scale=0.8), "targets": y}


def views(rng: np.random.Generator, n: int) -> Inputs:
    """Two views x1, x2 (n, D) of the same points (info_nce: row i of x2 is the positive of row i)."""
    x = _normal(rng, n, 6)
    return {"x1": x + _normal(rng, n, 6, scale=0.4), "x2": x + _normal(rng, n, 6, scale=0.4)}


def survival(rng: np.random.Generator, n: int) -> Inputs:
    """Risk scores, times with ties (rounded) and ~70 % observed events."""
    eta = _normal(rng, n)
    return {"preds": eta, "targets": np.round(rng.exponential(1.0, n) / np.exp(eta), 1),
            "event": (rng.uniform(size=n) < 0.7).astype(np.float64)}


def overlap(c: int = 1, hw: int = 6, targets: str = "mask", soft: bool = False, logits: bool = False) -> Gen:
    """(n, C, H, W) probabilities (or logits) with a 0/1 mask of the same shape, a soft mask, or
    class indices (n, H, W)."""
    def make(rng: np.random.Generator, n: int) -> Inputs:
        x = _normal(rng, n, c, hw, hw, scale=2.0)
        if targets == "index":
            t = rng.integers(0, c, (n, hw, hw))
        else:
            t = rng.uniform(0, 1, x.shape) if soft else (rng.uniform(size=x.shape) < 0.3).astype(np.float64)
            x = x + 1.5 * (2 * t - 1)  # a model that is mostly right
        return {"preds": x if logits else 1 / (1 + np.exp(-x)), "targets": t}
    return make


def ctc_inputs(big_t: int = 14, c: int = 5, s: int = 4, blank: int = 0) -> Gen:
    """Padded (n, S) targets of labels != blank, lengths that admit an alignment."""
    def make(rng: np.random.Generator, n: int) -> Inputs:
        labels = np.array([k for k in range(c) if k != blank])
        tl = rng.integers(1, s + 1, n)
        il = rng.integers(2 * s + 1, big_t + 1, n)  # >= 2S+1: feasible even with repeats
        return {"log_probs": _log_softmax(_normal(rng, big_t, n, c, scale=2.0), axis=2),
                "targets": rng.choice(labels, (n, s)), "input_lengths": il, "target_lengths": tl}
    return make


# ------------------------------------------------------------------------------------ the table


@dataclass(frozen=True)
class Case:
    loss: str  # the registry name this case covers
    expr: str
    make: Gen
    n: int = 40
    grid: int = 0  # n = this many fast-path sub-chunks + a few rows: splits cut the sub-chunk grid
    #                (33 sub-chunks: the fast path also splits a one-shot update into several tasks)
    mining: bool = False  # whole-batch (mining, info_nce, cox_ph): the value depends on the batching (no split invariance)
    unbatched: bool = False  # one sample (a single distribution): nothing to split

    @property
    def id(self) -> str:
        return self.expr.replace(" ", "") + ("-grid" if self.grid else "")

    def inputs(self, seed: int = 0) -> Inputs:
        n = self.n
        if self.grid:
            n = self.grid * sub_rows(self.make(np.random.default_rng(0), 2)) + 23
        return self.make(np.random.default_rng(seed), n)


def _c(loss: str, *variants: tuple[str, Gen] | Case) -> list[Case]:
    return [v if isinstance(v, Case) else Case(loss, v[0], v[1]) for v in variants]


REG = regression()
CASES: dict[str, list[Case]] = {
    "mse": _c("mse", ("mse", REG), Case("mse", "mse", regression(16), grid=33),
              ("mse(reduction=sum)", regression(3))),
    "mae": _c("mae", ("mae", REG), ("mae + 0.5*mse", regression(2, 3))),
    "huber": _c("huber", ("huber", REG), ("huber(delta=0.5) + 0.1*mae", REG),
                Case("huber", "huber(delta=0.3)", regression(8), grid=1)),
    "smooth_l1": _c("smooth_l1", ("smooth_l1", REG), ("smooth_l1(beta=0)", REG), ("smooth_l1(beta=3)", regression(3))),
    "log_cosh": _c("log_cosh", ("log_cosh", REG)),
    "quantile": _c("quantile", ("quantile", REG), ("quantile(q=0.9)", regression(2))),
    "msle": _c("msle", ("msle", regression(preds=_positive, targets=_positive))),
    "mape": _c("mape", ("mape", regression(targets=_away_from_zero))),
    "poisson_nll": _c("poisson_nll", ("poisson_nll", regression(targets=_counts)),
                      ("poisson_nll(log_input=false, full=true)", regression(preds=_positive, targets=_counts))),
    "gaussian_nll": _c("gaussian_nll", ("gaussian_nll", gaussian_nll_inputs()),
                       ("gaussian_nll(full=true)", gaussian_nll_inputs((1,)))),
    "bce": _c("bce", ("bce", binary(preds="probs")), ("bce(weight=[1, 2, 0.5])", binary(3, preds="probs", soft=True))),
    "bce_with_logits": _c("bce_with_logits", ("bce_with_logits", binary()),
                          ("bce_with_logits(pos_weight=[1, 2.5, 0.5], weight=[2, 1, 0.25])", binary(3)),
                          Case("bce_with_logits", "bce_with_logits", binary(4, soft=True), grid=1)),
    "cross_entropy": _c("cross_entropy", ("cross_entropy", classes()),
                        ("cross_entropy(weight=[0.5, 2, 1, 3, 1])", classes(ignore=-100)),
                        ("cross_entropy(label_smoothing=0.1)", classes()),
                        ("cross_entropy(ignore_index=2, reduction=sum)", classes()),
                        ("cross_entropy(label_smoothing=0.05)", classes(4, targets="probs")),
                        ("cross_entropy(weight=[1, 0.2, 3], label_smoothing=0.1)", classes(3, 3, 4)),
                        ("cross_entropy + 0.5*dice(from_logits=true)", classes(4)),
                        Case("cross_entropy", "cross_entropy", classes(8), grid=1)),
    "nll": _c("nll", ("nll", classes(preds="log_probs")),
              ("nll(weight=[0.3, 0.9, 0.5, 1, 2], ignore_index=-1)", classes(preds="log_probs", ignore=-1))),
    "focal": _c("focal", ("focal", binary()), ("focal(alpha=0.5, gamma=1.5)", binary(3)),
                ("focal(gamma=1)", classes(4)), ("focal(alpha=[0.5, 2, 1, 3], gamma=1)", classes(4))),
    "hinge": _c("hinge", ("hinge", binary(pm1=True)), ("hinge(squared=true)", binary()),
                ("hinge(margin=2, squared=true)", classes(4))),
    "multi_margin": _c("multi_margin", ("multi_margin", classes(6)), ("multi_margin(p=2, margin=1.5)", classes(6)),
                       ("multi_margin(weight=[0.1, 0.4, 1, 0.6, 0.8, 0.2])", classes(6))),
    "kl_div": _c("kl_div", ("kl_div", distributions()), ("kl_div(log_input=true)", distributions(q="log")),
                 ("kl_div(log_input=true, log_target=true)", distributions(q="log", p="log")),
                 ("kl_div(from_logits=true)", distributions(4, 3, q="logits")),
                 Case("kl_div", "kl_div(reduction=sum)", distributions(7, one=True), unbatched=True)),
    "js_div": _c("js_div", ("js_div", distributions()), ("js_div(from_logits=true)", distributions(q="logits"))),
    "gaussian_kl": _c("gaussian_kl", ("gaussian_kl", gaussian_kl_inputs)),
    "triplet": _c("triplet", ("triplet", triplets), ("triplet(p=1, swap=true)", triplets),
                  ("triplet(p=3, eps=0, margin=2)", triplets),
                  Case("triplet", "triplet(mining=batch_hard)", embeddings, mining=True),
                  Case("triplet", "triplet(mining=all_pairs, p=1, margin=2)", embeddings, mining=True)),
    "contrastive": _c("contrastive", ("contrastive", pairs("01")), ("contrastive(margin=2.5)", pairs("01")),
                      Case("contrastive", "contrastive(mining=all_pairs)", embeddings, mining=True)),
    "info_nce": _c("info_nce", Case("info_nce", "info_nce", views, mining=True),
                   Case("info_nce", "info_nce(symmetric=true, temperature=0.5)", views, mining=True),
                   Case("info_nce", "info_nce(similarity=dot, temperature=2)", views, mining=True)),
    "cox_ph": _c("cox_ph", Case("cox_ph", "cox_ph", survival, mining=True),
                 Case("cox_ph", "cox_ph(reduction=sum)", survival, mining=True)),
    "cosine_embedding": _c("cosine_embedding", ("cosine_embedding", pairs("pm1")),
                           ("cosine_embedding(margin=0.3)", pairs("pm1"))),
    "dice": _c("dice", ("dice", overlap()), ("dice(per_sample=true)", overlap()),
               ("dice(from_logits=true, per_class=true)", overlap(3, logits=True)),
               ("dice(from_logits=true)", overlap(4, targets="index", logits=True)),
               ("dice(smooth=0, reduction=sum)", overlap(soft=True)),
               Case("dice", "dice", overlap(1, 8), grid=1)),
    "iou": _c("iou", ("iou", overlap()), ("iou(per_sample=true, per_class=true)", overlap(3)),
              ("iou(from_logits=true)", overlap(3, targets="index", logits=True))),
    "tversky": _c("tversky", ("tversky(alpha=0.3, beta=0.7)", overlap()),
                  ("tversky(per_sample=true, alpha=0.7, beta=0.3)", overlap(soft=True)),
                  ("tversky(from_logits=true, alpha=0.3, beta=0.7)", overlap(3, targets="index", logits=True))),
    "ctc": _c("ctc", Case("ctc", "ctc", ctc_inputs(), n=24), Case("ctc", "ctc(reduction=sum)", ctc_inputs(), n=24),
              Case("ctc", "ctc(blank=4, zero_infinity=true)", ctc_inputs(blank=4), n=24)),
}


def builtin_losses() -> list[str]:
    return [s.name for s in all_specs() if s.family != "custom"]


def _params() -> list:
    out = []
    for name in builtin_losses():
        cases = CASES.get(name)
        if not cases:  # fails in every test below: add a generator to CASES
            out.append(pytest.param(None, id=f"{name}-NO-GENERATOR"))
            continue
        out.extend(pytest.param(c, id=c.id) for c in cases)
    return out


ALL = _params()
SPLITTABLE = [p for p in ALL if p.values[0] is None or not (p.values[0].mining or p.values[0].unbatched)]


def _need(case: Case | None) -> Case:
    if case is None:
        pytest.fail("a registered built-in loss has no input generator in CASES")
    return case


# ------------------------------------------------------------------------------------ helpers


def sample_axis(loss: str, name: str) -> int:
    return get_spec(loss).sample_axis(name)


def n_samples(case: Case, inputs: Inputs) -> int:
    name, arr = next(iter(inputs.items()))
    return arr.shape[sample_axis(case.loss, name)]


def elements_per_row(inputs: Inputs) -> int:
    return max(a.size // a.shape[0] for a in inputs.values())


def sub_rows(inputs: Inputs) -> int:
    """Rows of one fast-path sub-chunk for these inputs (the grid the fused sums are cut on)."""
    return max(1, lossctl.fast.SUB_ELEMENTS // elements_per_row(inputs))


def take(case: Case, inputs: Inputs, index: np.ndarray | slice) -> Inputs:
    """The samples ``index`` of every input (along each input's sample axis)."""
    out = {}
    for name, arr in inputs.items():
        axis = sample_axis(case.loss, name)
        sl = [slice(None)] * arr.ndim
        sl[axis] = index
        out[name] = np.ascontiguousarray(arr[tuple(sl)])
    return out


def one_shot(case: Case, inputs: Inputs, worst: int = 0, **kw) -> LossState:
    return LossState(case.expr, worst=worst, **kw).update(**inputs)


def roundtrip(state: LossState) -> LossState:
    return pickle.loads(pickle.dumps(state))


def random_cuts(rng: np.random.Generator, n: int, grid: int) -> list[int]:
    """2–6 chunks: random cut points, plus one sample before and after a multiple of the grid."""
    cuts = set(rng.choice(np.arange(1, n), size=min(n - 1, rng.integers(1, 4)), replace=False).tolist())
    multiples = [m for m in range(grid, n, grid)]
    if multiples:
        m = int(rng.choice(multiples))
        cuts |= {c for c in (m - 1, m + 1) if 0 < c < n}
    return [0, *sorted(cuts)[:5], n]


def split_merge(case: Case, inputs: Inputs, rng: np.random.Generator, worst: int) -> LossState:
    """Split the samples at random cut points, update one state per chunk (in a random order),
    pickle each, and merge them in a random tree."""
    n = n_samples(case, inputs)
    cuts = random_cuts(rng, n, sub_rows(inputs))
    chunks = list(itertools.pairwise(cuts))
    states = []
    for i in rng.permutation(len(chunks)):
        a, b = chunks[i]
        states.append(roundtrip(LossState(case.expr, worst=worst).update(start=a, **take(case, inputs, slice(a, b)))))
    while len(states) > 1:
        i, j = sorted(rng.choice(len(states), 2, replace=False))
        b, a = states.pop(j), states.pop(i)
        states.append(a.merge(b) if rng.uniform() < 0.5 else b.merge(a))
    return states[0]


def close(actual: float, expected: float, rtol: float, what: str = "") -> None:
    """Relative closeness; NaN equals NaN, infinities must match."""
    if math.isnan(expected) or math.isinf(expected):
        assert (math.isnan(actual) and math.isnan(expected)) or actual == expected, f"{what}: {actual} != {expected}"
        return
    assert abs(actual - expected) <= rtol * abs(expected), \
        f"{what}: {actual!r} vs {expected!r} (rel {abs(actual - expected) / max(abs(expected), 1e-300):.3g} > {rtol})"


def same_result(r, ref, rtol: float = MERGE_RTOL, summary: bool = False) -> None:
    close(r.value, ref.value, rtol, "value")
    assert len(r.terms) == len(ref.terms)
    for t, u in zip(r.terms, ref.terms):
        close(t.value, u.value, rtol, f"term {t.name}")
    assert r.samples == ref.samples
    if summary:
        s, e = r.summary, ref.summary
        assert s.count == e.count
        for field in ("mean", "min", "max", "p50", "p95"):
            close(getattr(s, field), getattr(e, field), rtol, f"summary.{field}")
        close(s.std, e.std, STD_RTOL, "summary.std")
        assert len(s.worst) == len(e.worst)
        for (i, v), (j, w) in zip(s.worst, e.worst):
            close(v, w, rtol, "worst value")
            # which of several samples tied at the K-th value are kept: test_sample_stats_worst_ties
            if w != e.worst[-1][1]:
                assert i == j, f"worst indices: {s.worst} vs {e.worst}"
        assert s.approx == e.approx


def float_rtol(inputs: Inputs) -> float:
    return F32_RTOL if any(a.dtype == np.float32 for a in inputs.values()) else F64_RTOL


def as_float32(inputs: Inputs) -> Inputs:
    return {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in inputs.items()}


@pytest.fixture
def generic(monkeypatch):
    """Force the generic kernels (no fused fast paths)."""
    monkeypatch.setattr(lossctl.engine, "FAST_PATHS", False)


# ------------------------------------------------------------------------------------ the tests


def test_every_builtin_loss_has_a_generator():
    missing = sorted(set(builtin_losses()) - set(CASES))
    assert not missing, f"built-in losses without an input generator in CASES: {missing}"
    unknown = sorted(set(CASES) - set(builtin_losses()))
    assert not unknown, f"CASES names losses the registry does not have: {unknown}"


@pytest.mark.parametrize("case", ALL)
def test_permutation_invariance(case):
    case = _need(case)
    inputs = case.inputs()
    perm = np.random.default_rng(1).permutation(n_samples(case, inputs))
    ref = one_shot(case, inputs).result()
    # mining: the permuted set is still one batch, so its value must not change either
    same_result(one_shot(case, take(case, inputs, perm)).result(), ref, rtol=1e-10)


def _one_d_elementwise(case: Case | None) -> bool:
    return case is None or (get_spec(case.loss).elementwise
                            and all(a.ndim == 1 for a in case.make(np.random.default_rng(0), 2).values()))


@pytest.mark.parametrize("case", [p for p in ALL if _one_d_elementwise(p.values[0])])
def test_n_vs_n1_shapes(case):
    case = _need(case)
    inputs = case.inputs()
    ref = one_shot(case, inputs).result()
    p, t = inputs["preds"], inputs["targets"]
    for variant in ({"preds": p[:, None], "targets": t}, {"preds": p, "targets": t[:, None]},
                    {"preds": p[:, None], "targets": t[:, None]}):
        same_result(one_shot(case, variant).result(), ref, rtol=0.0)  # the same numbers


@pytest.mark.parametrize("case", ALL)
def test_float32_matches_float64(case):
    case = _need(case)
    x32 = as_float32(case.inputs())
    x64 = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in x32.items()}
    same_result(one_shot(case, x32).result(), one_shot(case, x64).result(), rtol=F32_RTOL)


@pytest.mark.parametrize(("fast", "dtype"), [(True, "float64"), (False, "float64"), (True, "float32")],
                         ids=["fast", "generic", "fast-float32"])
@pytest.mark.parametrize("case", SPLITTABLE)
def test_split_merge_equals_one_shot(case, fast, dtype, monkeypatch):
    case = _need(case)
    monkeypatch.setattr(lossctl.engine, "FAST_PATHS", fast)
    inputs = case.inputs()
    if dtype == "float32":  # float32 values, still summed in float64: the split must not show
        inputs = as_float32(inputs)
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    # worst=0: the fused sums (where the loss has them); worst=3: per-sample values and summary
    for worst in (0, 3):
        ref = one_shot(case, inputs, worst=worst).result()
        for _ in range(2):
            same_result(split_merge(case, inputs, rng, worst).result(), ref, summary=worst > 0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", ALL)
def test_fast_paths_match_generic_kernels(case, dtype, monkeypatch):
    case = _need(case)
    inputs = case.inputs()
    if dtype == "float32":
        inputs = as_float32(inputs)
    fast = one_shot(case, inputs).result()
    monkeypatch.setattr(lossctl.engine, "FAST_PATHS", False)
    same_result(fast, one_shot(case, inputs).result(), rtol=float_rtol(inputs))


def _evaluate(case: Case, inputs: Inputs, chunk_size: int):
    rest = {k: v for k, v in inputs.items() if k not in ("preds", "targets")}
    report = lossctl.evaluate(inputs.get("preds"), inputs.get("targets"), loss=case.expr, inputs=rest,
                              chunk_size=chunk_size, provenance=False)
    return report.results[0]


@pytest.mark.parametrize("case", ALL)
def test_evaluate_chunk_sizes(case):
    case = _need(case)
    inputs = case.inputs()
    ref = one_shot(case, inputs).result()
    n, grid = n_samples(case, inputs), sub_rows(inputs)
    sizes = [grid - 1, grid + 1, 7] if case.grid else [1, 7, n // 2 + 1]
    for k in sizes:
        same_result(_evaluate(case, inputs, k), ref)


@pytest.mark.parametrize("case", ALL)
def test_merge_commutes_and_leaves_operands_alone(case):
    case = _need(case)
    inputs = case.inputs()
    n = n_samples(case, inputs)
    cut = n // 3 if not case.unbatched else None
    if cut is None:  # one sample: merge two states of it
        a, b = one_shot(case, inputs, worst=3), one_shot(case, inputs, worst=3)
    else:
        a = one_shot(case, take(case, inputs, slice(0, cut)), worst=3)
        b = LossState(case.expr, worst=3).update(start=cut, **take(case, inputs, slice(cut, n)))
    before = pickle.dumps((a.result(), b.result()))
    ab, ba = a.merge(b), b.merge(a)
    assert pickle.dumps((a.result(), b.result())) == before, "merge mutated an operand"
    same_result(ab.result(), ba.result(), summary=True)
    same_result(roundtrip(ab).result(), ab.result(), rtol=0.0, summary=True)
    assert ab.result().samples == a.result().samples + b.result().samples
    with pytest.raises(Exception, match="merge"):
        a.merge(LossState("mse" if not case.expr.startswith("mse") else "mae", worst=3))


# ------------------------------------------------------------------------------------ accumulators


def test_compensated_sum_matches_fsum():
    from lossctl.accumulators import CompensatedSum

    rng = np.random.default_rng(7)
    small = rng.standard_normal(98_000) * 10.0 ** rng.uniform(-6, 6, 98_000)
    big = rng.standard_normal(1_000) * 10.0 ** rng.uniform(10, 12, 1_000)  # cancel in the total, not per part
    terms = rng.permutation(np.concatenate([small, big, -big]))
    exact = math.fsum(terms)
    whole, parts = CompensatedSum(), [CompensatedSum() for _ in range(100)]
    for i, x in enumerate(terms.tolist()):
        whole.add(x)
        parts[i % 100].add(x)
    close(float(whole.value), exact, 2e-15, "add")
    while len(parts) > 1:  # the same terms in 100 sums, merged in a random tree
        i, j = sorted(rng.choice(len(parts), 2, replace=False))
        b, a = parts.pop(j), parts.pop(i)
        parts.append(a.merge(b))
    close(float(parts[0].value), exact, 2e-15, "merge")


def _stats(values: np.ndarray, chunks: int = 1, k: int = 5):
    from lossctl.accumulators import SampleStats

    states = []
    for idx in np.array_split(np.arange(values.size), chunks):
        s = SampleStats(k=k)
        s.update(values[idx], idx)
        states.append(s)
    out = states[0]
    for s in states[1:]:
        out = out.merge(s)
    return out


@pytest.mark.parametrize("n", [1000, 100_000], ids=["exact", "sketch"])
def test_sample_stats_quantiles(n):
    from lossctl.accumulators import SampleStats

    values = np.random.default_rng(3).lognormal(0.0, 2.0, n)
    stats = _stats(values, chunks=7)
    summary = stats.summary()
    assert summary.approx == (n > SampleStats.EXACT_LIMIT)
    for q in (0.01, 0.25, 0.5, 0.9, 0.95, 0.99):
        expected = np.percentile(values, 100 * q)
        close(stats.quantile(q), expected, 0.01 if summary.approx else 1e-15, f"q={q}")


def test_sample_stats_merge_equals_one_shot():
    values = np.random.default_rng(5).lognormal(0.0, 1.0, 20_000)
    values[[17, 4000, 19_999]] = [50.0, 50.0, 80.0]  # ties in the worst: the lower index first
    one, merged = _stats(values).summary(), _stats(values, chunks=13).summary()
    assert merged.count == one.count and merged.approx == one.approx
    for field in ("mean", "min", "max", "p50", "p95"):
        close(getattr(merged, field), getattr(one, field), MERGE_RTOL, field)
    close(merged.std, one.std, STD_RTOL, "std")
    assert merged.worst == one.worst
    assert [i for i, _ in one.worst[:3]] == [19_999, 17, 4000]


def test_sample_stats_worst_ties():
    values = np.zeros(40)
    values[[5, 18]] = [2.0, 1.0]  # 38 samples tied at 0: the third worst is sample 0
    expected = [(5, 2.0), (18, 1.0), (0, 0.0)]
    assert _stats(values, k=3).summary().worst == expected
    assert _stats(values, chunks=2, k=3).summary().worst == expected
