"""What ``lossctl explain NAME`` teaches beyond the registry: properties, when not to use a loss,
pitfalls, PyTorch/Keras equivalents, and the shape of the loss and its gradient.

Curves are computed here with small NumPy formulas (one per loss, keyed by the canonical name),
independently of the evaluation kernels, over the natural 1-D argument of each loss: the residual
p - t for regression losses, the logit (or probability) of the true class for classification
losses, a distance or similarity for embedding losses, a predicted probability for overlap
losses. Gradients are central differences on a fine grid, so kinks show up as steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Curve:
    x_label: str
    lo: float
    hi: float
    series: tuple[tuple[str, Callable[..., np.ndarray]], ...]  # (label, f(x, **params))
    note: str = ""


@dataclass(frozen=True)
class Knowledge:
    properties: tuple[str, ...]
    avoid_when: tuple[str, ...]
    pitfalls: tuple[str, ...]
    pytorch: str
    keras: str
    curve: Curve | None = None
    see_also: tuple[str, ...] = field(default_factory=tuple)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))


def _huber(r, delta=1.0, **_):
    a = np.abs(r)
    q = np.minimum(a, delta)
    return 0.5 * q**2 + delta * (a - q)


def _smooth_l1(r, beta=1.0, **_):
    a = np.abs(r)
    if beta == 0:
        return a
    return np.where(a < beta, 0.5 * r**2 / beta, a - 0.5 * beta)


def _log_cosh(r, **_):
    a = np.abs(r)
    return a + np.log1p(np.exp(-2 * a)) - np.log(2.0)  # stable: no overflow for large |r|


def _pinball(r, q=0.9, **_):
    # r = p - t: under-prediction (r < 0) costs q per unit, over-prediction (1 - q)
    return np.maximum(-q * r, (1 - q) * r)


def _focal_pos(z, alpha=0.25, gamma=2.0, **_):
    a = 1.0 if alpha is None else alpha
    p = _sigmoid(z)
    return a * (1 - p) ** gamma * _softplus(-z)


def _focal_neg(z, alpha=0.25, gamma=2.0, **_):
    a = 1.0 if alpha is None else 1 - alpha
    p = _sigmoid(z)
    return a * p**gamma * _softplus(z)


def _hinge(s, margin=1.0, squared=False, **_):
    h = np.maximum(0.0, margin - s)
    return h**2 if squared else h


def _kl_binary(q, **_):
    p = np.array([0.7, 0.3])
    q2 = np.stack([q, 1 - q])
    return np.sum(p[:, None] * (np.log(p[:, None]) - np.log(q2)), axis=0)


def _js_binary(q, **_):
    p = np.array([0.7, 0.3])[:, None]
    q2 = np.stack([q, 1 - q])
    m = 0.5 * (p + q2)
    kl = lambda a, b: np.sum(np.where(a > 0, a * (np.log(np.where(a > 0, a, 1)) - np.log(b)), 0), axis=0)
    return 0.5 * kl(p, m) + 0.5 * kl(q2, m)


N_FG = 100.0  # foreground pixels in the overlap curves (all predicted with the same probability)


def _dice(p, smooth=1.0, **_):
    tp = p * N_FG
    return 1 - (2 * tp + smooth) / (tp + N_FG + smooth)


def _iou(p, smooth=1.0, **_):
    tp = p * N_FG
    return 1 - (tp + smooth) / (N_FG + smooth)


def _tversky(p, alpha=0.5, beta=0.5, smooth=1.0, **_):
    tp = p * N_FG
    fn = (1 - p) * N_FG
    return 1 - (tp + smooth) / (tp + beta * fn + smooth)


def _poisson(x, **_):
    t = 3.0
    return np.exp(x) - t * x


def _contrastive_sim(d, **_):
    return d**2


def _contrastive_dis(d, margin=1.0, **_):
    return np.maximum(0.0, margin - d) ** 2


def _cos_pos(c, **_):
    return 1 - c


def _cos_neg(c, margin=0.0, **_):
    return np.maximum(0.0, c - margin)


_RES = "residual p - t"
_LOGIT = "logit z"

KNOWLEDGE: dict[str, Knowledge] = {
    "mse": Knowledge(
        properties=("estimates the conditional mean (strictly consistent for it)",
                    "Gaussian maximum likelihood with fixed variance",
                    "smooth, convex; gradient grows linearly with the residual",
                    "constant second derivative (fine for Newton / GBDT)"),
        avoid_when=("outliers or heavy-tailed noise (a few residuals dominate)",
                    "the metric is MAE / a quantile (different functional)",
                    "targets are class labels (use cross-entropy)"),
        pitfalls=("in target units: standardise the target so the loss scale and LR are sane",
                  "on softmax/sigmoid outputs for classification it learns slowly when confidently wrong"),
        pytorch="torch.nn.MSELoss()", keras="keras.losses.MeanSquaredError()",
        curve=Curve(_RES, -3, 3, (("mse", lambda r, **_: r**2),))),
    "mae": Knowledge(
        properties=("estimates the conditional median", "robust: every residual pulls with the same force",
                    "convex, not differentiable at 0; zero second derivative"),
        avoid_when=("the mean is needed", "second-order optimisers (zero Hessian)"),
        pitfalls=("constant-magnitude gradients oscillate near the optimum: decay the learning rate",
                  "GBDT: use the library's L1 objective, not a custom one"),
        pytorch="torch.nn.L1Loss()", keras="keras.losses.MeanAbsoluteError()",
        curve=Curve(_RES, -3, 3, (("mae", lambda r, **_: np.abs(r)),))),
    "huber": Knowledge(
        properties=("quadratic for |r| <= delta, linear beyond: bounded outlier influence",
                    "convex and once differentiable; gradient clipped at +-delta",
                    "estimates something between the mean and the median"),
        avoid_when=("second-order optimisers (the second derivative jumps at delta)",
                    "the exact mean is the target and there are no outliers (use MSE)"),
        pitfalls=("delta is in target units: standardise the target or tune delta",
                  "torch HuberLoss(delta) = delta * SmoothL1Loss(beta=delta)"),
        pytorch="torch.nn.HuberLoss(delta=1.0)", keras="keras.losses.Huber(delta=1.0)",
        curve=Curve(_RES, -3, 3, (("huber", _huber),))),
    "smooth_l1": Knowledge(
        properties=("Huber divided by beta: quadratic below beta, L1 above",
                    "the classic box-regression loss (Fast R-CNN)", "beta = 0 is exactly L1"),
        avoid_when=("second-order optimisers", "IoU-based metrics matter most (use GIoU/DIoU losses)"),
        pitfalls=("beta conventions differ between detection code bases (1.0 vs 1/9)",),
        pytorch="torch.nn.SmoothL1Loss(beta=1.0)", keras="keras.losses.Huber(delta=1.0)  # = beta * smooth L1",
        curve=Curve(_RES, -3, 3, (("smooth_l1", _smooth_l1),))),
    "log_cosh": Knowledge(
        properties=("about r^2/2 near zero and |r| - log 2 in the tails",
                    "twice differentiable with a positive second derivative (1 - tanh^2)",
                    "robust like Huber without a threshold to tune"),
        avoid_when=("the exact mean is required", "very large residuals dominate training time (gradient saturates at 1)"),
        pitfalls=("naive log(cosh(x)) overflows for |x| > ~710: use |x| + log1p(exp(-2|x|)) - log 2",),
        pytorch="(e + torch.nn.functional.softplus(-2 * e) - math.log(2)).mean()  # e = pred - y",
        keras="keras.losses.LogCosh()",
        curve=Curve(_RES, -3, 3, (("log_cosh", _log_cosh),))),
    "quantile": Knowledge(
        properties=("estimates the q-quantile (pinball loss)", "q = 0.5 is half the absolute error",
                    "asymmetric: under-prediction costs q, over-prediction 1 - q"),
        avoid_when=("the mean is needed", "second-order optimisers (zero Hessian)"),
        pitfalls=("separately trained quantiles can cross: use a joint head and sort",
                  "quantile intervals are not calibrated: use conformal prediction (CQR)"),
        pytorch="torch.maximum(q * (y - pred), (q - 1) * (y - pred)).mean()",
        keras="keras.ops.mean(keras.ops.maximum(q * e, (q - 1) * e))  # e = y - pred",
        curve=Curve(_RES, -3, 3, (("quantile", _pinball),), note="drawn with q=0.9")),
    "msle": Knowledge(
        properties=("squared error of log(1 + y): penalises relative, not absolute, error",
                    "under-prediction costs more than the same over-prediction",
                    "estimates the geometric-type mean exp(E[log(1 + y)]) - 1, not the mean"),
        avoid_when=("targets can be <= -1", "the absolute error in target units is what matters (use mse/mae)"),
        pitfalls=("predictions <= -1 are undefined: end the head in softplus/exp or clip",
                  "equivalent to mse on log1p-transformed targets: transforming the target is often simpler"),
        pytorch="torch.nn.functional.mse_loss(torch.log1p(pred), torch.log1p(y))",
        keras="keras.losses.MeanSquaredLogarithmicError()",
        curve=Curve("prediction p (target t = 1)", 0.0, 5.0,
                    (("msle", lambda p, **_: (np.log1p(p) - np.log1p(1.0)) ** 2),))),
    "mape": Knowledge(
        properties=("absolute error relative to |target| (scikit-learn's fraction; Keras reports x100)",
                    "scale-free: comparable across series of different size"),
        avoid_when=("targets at or near zero (the ratio explodes)",
                    "training: it favours under-prediction (errors above are unbounded, below capped at 1)"),
        pitfalls=("a single near-zero target can dominate the mean",
                  "as a training loss, prefer mae on log targets or a weighted mae"),
        pytorch="((pred - y).abs() / y.abs().clamp_min(2.2e-16)).mean()",
        keras="keras.losses.MeanAbsolutePercentageError()  # in percent",
        curve=Curve("prediction p (target t = 1)", 0.0, 3.0,
                    (("mape", lambda p, **_: np.abs(p - 1.0)),))),
    "bce": Knowledge(
        properties=("Bernoulli negative log-likelihood on probabilities", "strictly proper scoring rule"),
        avoid_when=("the model outputs logits (use bce_with_logits: stabler)",),
        pitfalls=("log(0) is clamped at -100 by torch: saturated sigmoids give huge, flat losses",
                  "never apply a sigmoid twice"),
        pytorch="torch.nn.BCELoss()", keras="keras.losses.BinaryCrossentropy(from_logits=False)",
        curve=Curve("predicted probability p of the target class", 0.005, 0.995,
                    (("target 1", lambda p, **_: -np.log(p)), ("target 0", lambda p, **_: -np.log1p(-p))))),
    "bce_with_logits": Knowledge(
        properties=("sigmoid + BCE fused: log-sum-exp stable for any logit",
                    "strictly proper; gradient is sigmoid(z) - y (bounded)",
                    "pos_weight scales the positive term (pos_weight = n_neg / n_pos)"),
        avoid_when=("the model already ends in a sigmoid", "labels are mutually exclusive classes (use cross_entropy)"),
        pitfalls=("Keras losses default to from_logits=False", "pos_weight shifts the predicted probabilities"),
        pytorch="torch.nn.BCEWithLogitsLoss()", keras="keras.losses.BinaryCrossentropy(from_logits=True)",
        curve=Curve(_LOGIT, -6, 6, (("target 1", lambda z, **_: _softplus(-z)),
                                    ("target 0", lambda z, **_: _softplus(z))))),
    "cross_entropy": Knowledge(
        properties=("multinomial negative log-likelihood on raw logits (log_softmax + NLL)",
                    "strictly proper; gradient softmax(z) - onehot(y)",
                    "accepts class indices or class probabilities as targets"),
        avoid_when=("multi-label targets (labels are not exclusive: use bce_with_logits)",
                    "ordinal labels (order ignored)", "the model already ends in a softmax"),
        pitfalls=("no softmax before torch CrossEntropyLoss", "index vs one-hot targets: Keras Sparse vs Categorical",
                  "class weights change the mean's denominator and shift probabilities"),
        pytorch="torch.nn.CrossEntropyLoss()", keras="keras.losses.SparseCategoricalCrossentropy(from_logits=True)",
        curve=Curve("logit margin z_y - z_other (2 classes)", -6, 6,
                    (("cross_entropy", lambda z, **_: _softplus(-z)),))),
    "nll": Knowledge(
        properties=("negative log-likelihood of the true class given log-probabilities",
                    "cross_entropy = log_softmax + nll"),
        avoid_when=("the model outputs raw logits (use cross_entropy)", "the model outputs probabilities (take the log first)"),
        pitfalls=("feeding probabilities or logits instead of log-probabilities gives a wrong loss silently",),
        pytorch="torch.nn.NLLLoss()", keras="keras.losses.SparseCategoricalCrossentropy(from_logits=True)  # on log-probs",
        curve=Curve("log-probability of the true class", -6, 0, (("nll", lambda lp, **_: -lp),))),
    "focal": Knowledge(
        properties=("cross-entropy scaled by (1 - p_t)^gamma: easy examples contribute little",
                    "alpha balances positives vs negatives (0.25 for positives in RetinaNet)",
                    "gamma = 0 and alpha = none is plain BCE / CE"),
        avoid_when=("calibrated probabilities are needed without recalibration",
                    "the data is balanced and clean (plain CE is simpler)"),
        pitfalls=("initialise the output bias to -log((1 - pi)/pi), pi = 0.01, or training can diverge",
                  "alpha=0.25 down-weights positives: it pairs with gamma=2, not alone"),
        pytorch="torchvision.ops.sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0, reduction='mean')",
        keras="keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.25, gamma=2.0, from_logits=True)",
        curve=Curve(_LOGIT, -6, 6, (("target 1", _focal_pos), ("target 0", _focal_neg)))),
    "hinge": Knowledge(
        properties=("max(0, margin - y*s): the SVM loss; zero once the margin is met",
                    "multiclass: Crammer-Singer", "squared=true is smooth at the margin"),
        avoid_when=("probabilities are needed (add Platt scaling)",),
        pitfalls=("labels must be -1/+1 (0/1 is mapped)", "outputs are scores, not probabilities"),
        pytorch="torch.clamp(1 - y * s, min=0).mean()  # multiclass: torch.nn.MultiMarginLoss()",
        keras="keras.losses.Hinge()  # CategoricalHinge for multiclass",
        curve=Curve("score s of a positive sample (y = +1)", -3, 3, (("hinge", _hinge),))),
    "multi_margin": Knowledge(
        properties=("Weston-Watkins multiclass hinge: every wrong class within the margin costs",
                    "divided by the number of classes (torch)"),
        avoid_when=("probabilities are needed",),
        pitfalls=("p=2 squares each term; weight is per class",),
        pytorch="torch.nn.MultiMarginLoss(p=1, margin=1.0)", keras="keras.losses.CategoricalHinge()",
        curve=Curve("score margin s_y - s_other (2 classes)", -3, 3,
                    (("multi_margin", lambda m, margin=1.0, **_: np.maximum(0, margin - m) / 2),))),
    "triplet": Knowledge(
        properties=("max(0, margin + d(a, p) - d(a, n)): positives closer than negatives by a margin",
                    "relative constraint: no absolute distance targets"),
        avoid_when=("no mining is possible (most random triplets are already satisfied)",),
        pitfalls=("without semi-hard / batch-hard mining training stalls or collapses",
                  "margin conventions: torch 1.0, FaceNet 0.2 on L2-normalised embeddings"),
        pytorch="torch.nn.TripletMarginLoss(margin=1.0)", keras="tfa.losses.TripletSemiHardLoss(margin=1.0)",
        curve=Curve("d(a, p) - d(a, n)", -2, 2, (("triplet", lambda x, margin=1.0, **_: np.maximum(0, x + margin)),))),
    "contrastive": Knowledge(
        properties=("pulls similar pairs together (d^2), pushes dissimilar pairs beyond a margin",),
        avoid_when=("only class labels and no pairs (mine pairs, or use a margin-softmax loss)",),
        pitfalls=("the margin is in distance units: L2-normalise the embeddings",
                  "label convention here: 0 = similar, 1 = dissimilar"),
        pytorch="pytorch_metric_learning.losses.ContrastiveLoss(pos_margin=0, neg_margin=1)",
        keras="# no built-in; implement (1 - y) * d**2 + y * relu(margin - d)**2",
        curve=Curve("distance d between the pair", 0, 2, (("similar", _contrastive_sim), ("dissimilar", _contrastive_dis)))),
    "cosine_embedding": Knowledge(
        properties=("1 - cos for similar pairs, max(0, cos - margin) for dissimilar",
                    "scale-invariant: only the angle matters"),
        avoid_when=("the embedding norm carries information",),
        pitfalls=("targets are +1 / -1, not 1 / 0",),
        pytorch="torch.nn.CosineEmbeddingLoss(margin=0.0)", keras="keras.losses.CosineSimilarity()  # similar pairs only",
        curve=Curve("cosine similarity", -1, 1, (("y = +1", _cos_pos), ("y = -1", _cos_neg)))),
    "kl_div": Knowledge(
        properties=("KL(P || Q): extra nats to code P with Q", "differs from soft-target CE by the entropy of P",
                    "asymmetric; infinite where P > 0 and Q = 0"),
        avoid_when=("Q can be exactly zero where P is not (use js_div, or smooth Q)",),
        pitfalls=("torch KLDivLoss takes log Q as input, and needs reduction='batchmean' for the true KL",
                  "distillation at temperature T: multiply by T^2"),
        pytorch="torch.nn.KLDivLoss(reduction='batchmean')(q_logits.log_softmax(1), p)", keras="keras.losses.KLDivergence()",
        curve=Curve("Q(class 0) for P = (0.7, 0.3)", 0.01, 0.99, (("kl_div", _kl_binary),))),
    "js_div": Knowledge(
        properties=("symmetric, bounded by log 2", "finite even where one distribution is zero"),
        avoid_when=("you need the maximum-likelihood gradient of KL/CE",),
        pitfalls=("gradients vanish when the distributions barely overlap",),
        pytorch="0.5 * (kl(p, m) + kl(q, m)), m = (p + q) / 2", keras="# implement from two KLDivergence terms",
        curve=Curve("Q(class 0) for P = (0.7, 0.3)", 0.01, 0.99, (("js_div", _js_binary),))),
    "dice": Knowledge(
        properties=("1 - soft Dice coefficient: insensitive to the amount of background",
                    "global (batch) statistic: not a mean of per-pixel losses"),
        avoid_when=("used alone from scratch on tiny structures (unstable; add cross-entropy)",),
        pitfalls=("empty masks need the smoothing term", "from_logits=true applies sigmoid/softmax first"),
        pytorch="segmentation_models_pytorch.losses.DiceLoss('multiclass', from_logits=True)",
        keras="keras.losses.Dice()",
        curve=Curve("predicted probability on 100 foreground pixels", 0, 1, (("dice", _dice),))),
    "iou": Knowledge(
        properties=("1 - soft Jaccard index", "Jaccard = Dice / (2 - Dice): same ranking, different weighting"),
        avoid_when=("used alone from scratch (combine with cross-entropy)",),
        pitfalls=("empty masks need the smoothing term",),
        pytorch="segmentation_models_pytorch.losses.JaccardLoss('multiclass', from_logits=True)",
        keras="# keras_cv / custom: 1 - (tp + s) / (sum_p + sum_t - tp + s)",
        curve=Curve("predicted probability on 100 foreground pixels", 0, 1, (("iou", _iou),))),
    "tversky": Knowledge(
        properties=("Dice with separate weights for false positives (alpha) and false negatives (beta)",
                    "alpha = beta = 0.5 is Dice"),
        avoid_when=("precision matters as much as recall (use Dice)",),
        pitfalls=("alpha/beta meanings differ between libraries: here alpha weighs FP, beta FN (as Keras)",),
        pytorch="segmentation_models_pytorch.losses.TverskyLoss('multiclass', alpha=0.3, beta=0.7)",
        keras="keras.losses.Tversky(alpha=0.3, beta=0.7)",
        curve=Curve("predicted probability on 100 foreground pixels", 0, 1, (("tversky", _tversky),))),
    "gaussian_kl": Knowledge(
        properties=("closed-form KL(N(mu, sigma^2) || N(0, 1)) of a VAE posterior",
                    "summed over latent dimensions, mean over the batch"),
        avoid_when=("the prior is not a standard normal",),
        pitfalls=("reduce reconstruction and KL the same way, or beta changes silently",
                  "posterior collapse: KL annealing or free bits"),
        pytorch="-0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp(), dim=1).mean()",
        keras="-0.5 * keras.ops.sum(1 + logvar - mu**2 - keras.ops.exp(logvar), axis=1)",
        curve=Curve("mu (with logvar = 0)", -3, 3, (("gaussian_kl", lambda m, **_: 0.5 * m**2),))),
    "ctc": Knowledge(
        properties=("marginalises over every monotonic alignment of the target to the input frames",
                    "needs a blank symbol; mean reduction divides by target length"),
        avoid_when=("the alignment is known per step (use per-step cross-entropy)",
                    "outputs can be non-monotonic w.r.t. the input (use attention seq2seq)"),
        pitfalls=("input_length must be >= target_length + repeats, else the loss is inf (zero_infinity=True)",
                  "feed log_softmax over (T, N, C)"),
        pytorch="torch.nn.CTCLoss(blank=0, zero_infinity=True)", keras="keras.losses.CTC()",
        curve=None),
    "poisson_nll": Knowledge(
        properties=("Poisson deviance with a log link: predicts a rate", "keeps predictions positive"),
        avoid_when=("counts are over-dispersed (variance >> mean: negative binomial)",),
        pitfalls=("log_input=true expects the log-rate", "exp overflow for large log-rates: clamp"),
        pytorch="torch.nn.PoissonNLLLoss(log_input=True)", keras="keras.losses.Poisson()  # on rates",
        curve=Curve("log-rate prediction (target count 3)", -2, 3, (("poisson_nll", _poisson),))),
    "gaussian_nll": Knowledge(
        properties=("negative log-likelihood of a predicted mean and variance",
                    "a proper score for the predictive distribution"),
        avoid_when=("only point predictions are needed",),
        pitfalls=("variance can collapse or the mean under-fit (beta-NLL helps)",
                  "predict log-variance or use softplus; eps clamps the variance"),
        pytorch="torch.nn.GaussianNLLLoss(eps=1e-6)", keras="-tfp.distributions.Normal(mu, sigma).log_prob(y)",
        curve=Curve(_RES + " (variance 1)", -3, 3, (("gaussian_nll", lambda r, **_: 0.5 * r**2),))),
}


def curve_data(name: str, params: dict[str, Any] | None = None, points: int = 401) -> dict[str, Any] | None:
    """x, loss and gradient arrays for each series of ``name``'s curve (None if it has none)."""
    k = KNOWLEDGE.get(name)
    if k is None or k.curve is None:
        return None
    c = k.curve
    params = {key: v for key, v in (params or {}).items()}
    if name == "quantile":
        params["q"] = 0.9
    x = np.linspace(c.lo, c.hi, points)
    series = []
    with np.errstate(all="ignore"):
        for label, f in c.series:
            y = np.asarray(f(x, **params), dtype=np.float64)
            g = np.gradient(y, x)
            series.append({"label": label, "loss": y, "grad": g})
    return {"x_label": c.x_label, "x": x, "series": series, "note": c.note}
