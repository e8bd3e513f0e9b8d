"""Sequence losses: CTC (connectionist temporal classification).

The forward algorithm runs in log space over the blank-extended label sequence ``l'`` (length
2S+1), vectorised over the samples of a chunk, one time step at a time, so memory is
O(batch × S) and long sequences (T in the thousands) stay finite: a log-sum-exp of at most three
terms per state never under- or overflows. An alignment that cannot exist (too many labels for
the frames) has probability 0 and gives +inf, or 0 with ``zero_infinity=true``, as in torch.

Inputs: ``log_probs`` (T, N, C) (samples on axis 1) or (T, C) for one sequence; ``targets`` padded
(N, S) or 1-D concatenated (torch's two layouts); ``input_lengths`` (N,); ``target_lengths`` (N,).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lossctl import ckernels
from lossctl.arrays import LazyArray, MemoryArray, reshaped
from lossctl.errors import InputError
from lossctl.knowledge import Knowledge
from lossctl.losses._common import domain_error, plural, shape_error, shown
from lossctl.registry import Param, Part, register_loss

_NAMES = ("log_probs", "targets", "input_lengths", "target_lengths")


def _vector(arr: LazyArray, n: int, arrays: dict[str, LazyArray], what: str) -> LazyArray:
    if arr.shape in ((n,), (n, 1)) or (n == 1 and arr.shape == ()):
        return reshaped(arr, (n,)) if arr.shape != () else MemoryArray(
            arr.path, (1,), arr.dtype, arr.key, arr.name, data=arr.read_all().reshape(1))
    hint = "" if arrays["log_probs"].ndim == 3 else (" (2-D log_probs (T, C) is one unbatched sequence; "
                                                     "use (T, N, C) for a batch)")
    raise shape_error("ctc", arrays, f"{arr.name} must have shape ({n},): {what}{hint}")


def _check_ctc(arrays: dict[str, LazyArray], params: dict[str, Any]) -> dict[str, LazyArray]:
    lp = arrays["log_probs"]
    out = dict(arrays)
    if lp.ndim == 2:  # one unbatched sequence (T, C): small, held in memory
        data = lp.read_all().reshape(lp.shape[0], 1, lp.shape[1])
        out["log_probs"] = lp = MemoryArray(lp.path, data.shape, lp.dtype, lp.key, lp.name, data=data)
        t = arrays["targets"]
        if t.ndim == 1:
            out["targets"] = MemoryArray(t.path, (1,) + t.shape, t.dtype, t.key, t.name,
                                         data=t.read_all().reshape((1,) + t.shape))
    elif lp.ndim != 3:
        raise shape_error("ctc", arrays, "log_probs must have shape (T, N, C) (time, batch, classes) or (T, C)")
    n, n_classes = lp.shape[1], lp.shape[2]
    if not 0 <= params["blank"] < n_classes:
        raise InputError(f"ctc: blank={params['blank']} is not a class of log_probs {lp.shape} "
                         f"({n_classes} classes on axis 2); give 0 <= blank < {n_classes}")
    out["input_lengths"] = _vector(arrays["input_lengths"], n, arrays, "one input length per sequence")
    out["target_lengths"] = _vector(arrays["target_lengths"], n, arrays, "one target length per sequence")
    t = out["targets"]
    if t.ndim == 2 and t.shape[0] != n:
        raise shape_error("ctc", arrays, f"padded targets must have shape ({n}, S) (one row per sequence), "
                                         f"or be 1-D (all targets concatenated)")
    if t.ndim not in (1, 2):
        raise shape_error("ctc", arrays, f"targets must be padded ({n}, S) or 1-D concatenated")
    return out


def _integers(arr: LazyArray, data: np.ndarray) -> np.ndarray:
    if data.dtype.kind == "f":
        ok = np.isfinite(data) & (data == np.round(data))
        if not ok.all():
            raise InputError(f"ctc: {arr.label} must hold integers, found {float(data[~ok].flat[0]):g}")
    return data.astype(np.int64)


def _prepare_ctc(arrays: dict[str, LazyArray], params: dict[str, Any]) -> dict[str, LazyArray]:
    """Check the lengths against T and S, and turn 1-D concatenated targets into padded (N, S)."""
    lp, t = arrays["log_probs"], arrays["targets"]
    il_arr, tl_arr = arrays["input_lengths"], arrays["target_lengths"]
    il, tl = _integers(il_arr, il_arr.read_all()), _integers(tl_arr, tl_arr.read_all())
    big_t = lp.shape[0]
    for arr, vals, high, what in ((il_arr, il, big_t, f"the {big_t} time steps of log_probs {lp.shape}"),
                                  (tl_arr, tl, None, "")):
        bad = vals < 0
        if high is not None:
            bad |= vals > high
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            limit = f"[0, {high}] ({what})" if high is not None else ">= 0"
            raise InputError(f"ctc: {arr.label} has {int(bad.sum())} value(s) outside {limit}, "
                             f"e.g. {int(vals[i])} at sequence {i}; fix the lengths")
    out = dict(arrays)
    if t.ndim == 1:
        total = int(tl.sum())
        if total != t.shape[0]:
            raise InputError(f"ctc: 1-D (concatenated) {t.label} has {t.shape[0]} labels but the "
                             f"target_lengths sum to {total}; they must match (or give padded targets "
                             f"of shape (N, S))")
        flat = _integers(t, t.read_all())
        width = int(tl.max()) if tl.size else 0
        padded = np.zeros((len(tl), width), dtype=np.int64)
        ends = np.cumsum(tl)
        for i, (end, length) in enumerate(zip(ends, tl)):
            padded[i, :length] = flat[end - length:end]
        out["targets"] = MemoryArray(t.path, padded.shape, padded.dtype, t.key, t.name, data=padded)
    else:
        too_long = tl > t.shape[1]
        if too_long.any():
            i = int(np.flatnonzero(too_long)[0])
            raise InputError(f"ctc: {tl_arr.label} has {int(tl[i])} at sequence {i} but the padded "
                             f"{t.label} has only {t.shape[1]} columns; fix the lengths or the padding")
    return out


_GATHER_ELEMENTS = 1 << 20


def ctc_forward(log_probs: np.ndarray, targets: np.ndarray, input_lengths: np.ndarray,
                target_lengths: np.ndarray, blank: int) -> np.ndarray:
    """Negative log-likelihood per sequence: log_probs (T, B, C) float64, targets (B, S) int.

    alpha_t(s) = logaddexp(alpha_{t-1}(s), alpha_{t-1}(s-1), [alpha_{t-1}(s-2) if l'(s) may skip])
    + log y_t(l'(s)), on a buffer with two leading -inf columns so the shifts are views; each
    sequence's log-likelihood is read at its own last frame.
    """
    big_t, batch, _ = log_probs.shape
    width = int(target_lengths.max()) if batch else 0
    s_ext = 2 * width + 1
    labels = np.full((batch, s_ext), blank, dtype=np.int64)
    labels[:, 1::2] = targets[:, :width]
    valid = np.arange(s_ext)[None, :] <= 2 * target_lengths[:, None]  # states beyond 2L are unreachable
    invalid_add = np.where(valid, 0.0, -np.inf)
    skip = np.zeros((batch, s_ext), dtype=bool)  # l'(s-2) -> l'(s): a label differing from l'(s-2)
    skip[:, 2:] = (labels[:, 2:] != blank) & (labels[:, 2:] != labels[:, :-2])
    skip_add = np.where(skip, 0.0, -np.inf)
    rows = np.arange(batch)[:, None]
    last = 2 * target_lengths
    loglik = np.where(target_lengths == 0, 0.0, -np.inf)  # what input_length 0 gives
    ends: dict[int, np.ndarray] = {}
    for b, length in enumerate(input_lengths):
        if length > 0:
            ends.setdefault(int(length) - 1, []).append(b)  # type: ignore[arg-type]
    buf = np.full((batch, s_ext + 2), -np.inf)
    alpha = buf[:, 2:]
    steps = int(input_lengths.max()) if batch else 0
    block = max(1, _GATHER_ELEMENTS // max(1, batch * s_ext))
    emis = np.empty(0)
    x = np.empty((batch, s_ext))
    y = np.empty((batch, s_ext))
    m = np.empty((batch, s_ext))
    acc = np.empty((batch, s_ext))
    with np.errstate(invalid="ignore", divide="ignore", under="ignore"):
        for t in range(steps):
            if t % block == 0:  # gather log y_t(l'(s)) for the next block of frames
                emis = log_probs[t:t + block][:, rows, labels] + invalid_add
            e = emis[t % block]
            if t == 0:
                alpha[:, 0] = e[:, 0]
                if s_ext > 1:
                    alpha[:, 1] = e[:, 1]
            else:
                # log-sum-exp of (stay, advance, skip), shifted by the max; the floor keeps an
                # all -inf column at -inf (exp(-inf) = 0, log 0 = -inf) without NaN. Only states
                # s <= 2t + 1 are reachable at frame t: the rest stay -inf.
                h = min(s_ext, 2 * t + 2)
                a, a1, a2 = alpha[:, :h], buf[:, 1:h + 1], buf[:, :h]
                xv, yv, mv, av = x[:, :h], y[:, :h], m[:, :h], acc[:, :h]
                np.add(a2, skip_add[:, :h], out=yv)
                np.maximum(a, a1, out=mv)
                np.maximum(mv, yv, out=mv)
                np.maximum(mv, -1e300, out=mv)
                np.subtract(a, mv, out=xv)
                np.exp(xv, out=av)
                np.subtract(a1, mv, out=xv)
                av += np.exp(xv, out=xv)
                np.subtract(yv, mv, out=xv)
                av += np.exp(xv, out=xv)
                np.log(av, out=av)
                av += mv
                np.add(av, e[:, :h], out=a)
            for b in ends.get(t, ()):
                end_label = alpha[b, last[b] - 1] if last[b] > 0 else -np.inf
                loglik[b] = np.logaddexp(alpha[b, last[b]], end_label)
    return -loglik


def _bad_labels(tg: np.ndarray, tl: np.ndarray, n_classes: int, blank: int) -> np.ndarray:
    """Labels that are no class of log_probs other than the blank (within each target length), and
    non-integers anywhere; the shape of ``tg`` (N, S)."""
    bad = np.zeros(tg.shape, dtype=bool)
    if tg.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad |= ~(np.isfinite(tg) & (tg == np.round(tg)))
    width = min(int(tl.max()) if tl.size else 0, tg.shape[1] if tg.ndim == 2 else 0)
    labels = tg[:, :width]
    used = np.arange(width)[None, :] < tl[:, None]
    with np.errstate(invalid="ignore"):
        bad[:, :width] |= used & ((labels < 0) | (labels >= n_classes) | (labels == blank))
    return bad


@register_loss(
    "ctc", aliases=("ctc_loss",), family="sequence", inputs=_NAMES, positional=("log_probs", "targets"),
    sample_axes={"log_probs": 1}, check_shapes=_check_ctc, prepare=_prepare_ctc,
    params=[
        Param("blank", "int", 0, "index of the blank class", ge=0),
        Param("zero_infinity", "bool", False, "report impossible alignments (inf) as 0"),
    ],
    formula="-log sum over alignments pi of prod_t y[t, pi_t]; mean = mean over sequences of loss / max(L, 1)",
    summary="Connectionist temporal classification: sequence labelling without a known alignment.",
    use_when="speech/handwriting recognition and other sequence tasks where input and target lengths "
             "differ and the alignment is unknown",
    reference="torch.nn.functional.ctc_loss; Graves et al. (2006), ICML",
    knowledge=Knowledge(
        properties=("marginalises over every monotonic alignment of the target to the input frames",
                    "needs a blank symbol; mean reduction divides by target length"),
        avoid_when=("the alignment is known per step (use per-step cross-entropy)",
                    "outputs can be non-monotonic w.r.t. the input (use attention seq2seq)"),
        pitfalls=("input_length must be >= target_length + repeats, else the loss is inf (zero_infinity=True)",
                  "feed log_softmax over (T, N, C)"),
        pytorch="torch.nn.CTCLoss(blank=0, zero_infinity=True)", keras="keras.losses.CTC()",
        curve=None),
)
def ctc(log_probs: np.ndarray, targets: np.ndarray, input_lengths: np.ndarray, target_lengths: np.ndarray, *,
        blank: int = 0, zero_infinity: bool = False) -> Part:
    """Connectionist temporal classification, as torch: log_probs are (T, N, C);
    the mean divides each sequence's loss by its target length, then averages.

    T=1, N=1, C=2, blank 0: the one alignment of target [1] emits class 1 at the one step.

    >>> import math
    >>> from lossctl.functional import ctc
    >>> lp = [[[math.log(0.4), math.log(0.6)]]]
    >>> round(ctc(lp, [1], input_lengths=[1], target_lengths=[1]), 6)  # -log 0.6 = 0.510826
    0.510826
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    il = np.asarray(input_lengths).astype(np.int64)
    tl = np.asarray(target_lengths).astype(np.int64)
    tg = np.asarray(targets)
    n_classes = lp.shape[2]
    if _bad_labels(tg, tl, n_classes, blank).any():
        def describe(count: int, first: int, value: Any) -> str:
            v = float(value)
            which = ("not an integer" if not (np.isfinite(v) and v == np.round(v)) else
                     "the blank" if v == blank else f"outside [0, {n_classes - 1}]")
            return (f"has {plural(count, 'bad label')} (the first at sequence {first}: {shown(value)}, which is "
                    f"{which}); labels must be integer classes of log_probs other than blank={blank}")

        raise domain_error("targets", {"targets": tg, "target_lengths": tl},
                           lambda chunk: _bad_labels(np.asarray(chunk["targets"]),
                                                     np.asarray(chunk["target_lengths"]).astype(np.int64),
                                                     n_classes, blank), describe)
    tg = tg.astype(np.int64)
    width = int(tl.max()) if tl.size else 0
    used = np.arange(width)[None, :] < tl[:, None]
    labels = tg[:, :width]
    padded = np.where(used, labels, blank)
    kernels = ckernels.kernels
    if kernels is None:
        loss = ctc_forward(lp, padded, il, tl, blank)
    else:
        loglik = np.empty(lp.shape[1])
        lp = np.ascontiguousarray(lp)
        with np.errstate(over="ignore", invalid="ignore"):
            probs = np.exp(lp)  # vectorised here; the kernel takes over where this under/overflows
        kernels.ctc_loglik(lp, probs, np.ascontiguousarray(padded, dtype=np.int64), il, tl, blank, loglik)
        loss = -loglik
        redo = np.flatnonzero(np.isnan(loglik))  # NaN or values above 700 in log_probs
        if redo.size:
            loss[redo] = ctc_forward(lp[:, redo], padded[redo], il[redo], tl[redo], blank)
    if zero_infinity:
        loss = np.where(np.isinf(loss), 0.0, loss)
    return Part(values=loss, mean_values=loss / np.maximum(tl, 1))


# The NumPy forward algorithm loops over time steps in Python: chunks of many sequences amortise
# each step (about 4M log-probabilities, 32 MB in float64, per chunk; read by
# engine._default_rows). The C recursion has no per-step cost, so its chunks are small enough to
# spread a batch over the worker threads.
ctc.chunk_elements = (1 << 22) if ckernels.kernels is None else (1 << 18)  # type: ignore[attr-defined]
