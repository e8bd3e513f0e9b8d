"""Golden values for triplet, contrastive (explicit tuples and mined) and info_nce (writes tests/golden/embedding.json).

References:
* triplet: torch.nn.functional.triplet_margin_loss in float64 (float32 cases: float64 maths on the
  float32 values); inputs as PyTorch's TripletMarginLoss tests (common_nn / test_nn: randn(5, 10)
  anchor/positive/negative; margin, p, swap variants).
* contrastive: direct float64 formula mean((1-y)·d² + y·max(0, margin-d)²), d = |x1-x2|₂
  (Hadsell et al. 2006 without the ½ factors; y = 0 similar, 1 dissimilar).
* mining, by brute force over explicit index loops (no blocks, no Gram trick):
  all_pairs: mean over all unordered pairs i<j of the contrastive term with y = [label_i != label_j];
  batch_hard: for each anchor, max d over same-label j≠i and min d over other-label k (torch
  pairwise_distance with eps), loss max(0, margin + d_ap - d_an); mean over anchors having both.
  all_pairs / batch_all (triplet): every valid triplet (a, p, n), mean (or sum) over them.
* info_nce: torch F.cross_entropy(logits, arange(N)) with logits = F.normalize(x1) @ F.normalize(x2).T / τ
  (dot: no normalize); symmetric: (ce(logits) + ce(logits.T)) / 2, per sample for reduction=none.
Run: python tests/golden/gen_embedding.py
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from _gen_common import make_case, torch_version, write_cases

rng = np.random.default_rng(5)
torch.manual_seed(3)
cases = []


def t64(x):
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def contrastive_ref(x1, x2, y, margin=1.0):
    x1, x2, y = (np.asarray(v, dtype=np.float64) for v in (x1, x2, y))
    d = np.sqrt(((x1 - x2) ** 2).sum(-1))
    return (1 - y) * d ** 2 + y * np.maximum(0.0, margin - d) ** 2


def all_pairs_ref(emb, labels, margin=1.0):
    emb = np.asarray(emb, dtype=np.float64)
    n = len(emb)
    share = np.zeros(n)
    total, count = 0.0, 0
    for i, j in itertools.combinations(range(n), 2):
        d = float(np.sqrt(((emb[i] - emb[j]) ** 2).sum()))
        y = float(labels[i] != labels[j])
        loss = (1 - y) * d * d + y * max(0.0, margin - d) ** 2
        total += loss
        count += 1
        share[i] += loss / 2
        share[j] += loss / 2
    return total / count, total, share


def all_triplets_ref(emb, labels, margin=1.0, p=2.0, eps=1e-6):
    emb = t64(emb)
    n = len(emb)
    per = np.zeros(n)
    count = 0
    for i in range(n):
        d = F.pairwise_distance(emb[i].expand(n, -1), emb, p=p, eps=eps).numpy()
        for j in range(n):
            if j == i or labels[j] != labels[i]:
                continue
            for k in range(n):
                if labels[k] != labels[i]:
                    per[i] += max(0.0, margin + d[j] - d[k])
                    count += 1
    return per.sum() / count, per.sum(), per


def batch_hard_ref(emb, labels, margin=1.0, p=2.0, eps=1e-6):
    emb = t64(emb)
    n = len(emb)
    per = np.zeros(n)
    valid = []
    for i in range(n):
        d = F.pairwise_distance(emb[i].expand(n, -1), emb, p=p, eps=eps).numpy()
        pos = [j for j in range(n) if labels[j] == labels[i] and j != i]
        neg = [k for k in range(n) if labels[k] != labels[i]]
        if pos and neg:
            per[i] = max(0.0, margin + max(d[j] for j in pos) - min(d[k] for k in neg))
            valid.append(i)
    return float(per[valid].mean()), per


def info_nce_ref(x1, x2, temperature=0.07, similarity="cosine", symmetric=False):
    """torch F.cross_entropy(logits, arange(N), reduction='none'), logits = normalize(x1) @ normalize(x2).T / τ;
    symmetric: the mean of the row (x1→x2) and column (x2→x1) terms of each sample."""
    a, b = t64(x1), t64(x2)
    if similarity == "cosine":
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    logits = a @ b.T / temperature
    target = torch.arange(len(a))
    per = F.cross_entropy(logits, target, reduction="none")
    if symmetric:
        per = (per + F.cross_entropy(logits.T, target, reduction="none")) / 2
    return per.numpy()


for dt in ("float64", "float32"):
    a, p_, n_ = (torch.randn(5, 10, dtype=torch.float64).numpy().astype(dt) for _ in range(3))
    trip = {"anchor": a, "positive": p_, "negative": n_}
    for loss, kw in [("triplet", {}), ("triplet(margin=2.0)", {"margin": 2.0}), ("triplet(p=1)", {"p": 1.0}),
                     ("triplet(swap=true)", {"swap": True}), ("triplet(p=3, eps=0)", {"p": 3.0, "eps": 0.0}),
                     ("triplet(margin=0.5, p=1, swap=true)", {"margin": 0.5, "p": 1.0, "swap": True})]:
        ref = lambda r: F.triplet_margin_loss(t64(a), t64(p_), t64(n_), reduction=r, **kw).numpy()  # noqa: E731
        name = loss.replace("(", "_").replace(")", "").replace("=", "").replace(", ", "_")
        cases.append(make_case(f"{name}_torch_randn_5x10_{dt}", loss, trip, ref("mean"),
                               f"torch triplet_margin_loss(**{kw}); inputs as torch's TripletMarginLoss tests",
                               expected_none=ref("none")))
    cases.append(make_case(f"triplet_sum_{dt}", "triplet", trip,
                           F.triplet_margin_loss(t64(a), t64(p_), t64(n_), reduction="sum").numpy(),
                           "torch triplet_margin_loss(reduction='sum')", reduction="sum"))
    z = np.zeros((3, 4), dtype=dt)
    cases.append(make_case(f"triplet_zero_vectors_{dt}", "triplet", {"anchor": z, "positive": z, "negative": z},
                           F.triplet_margin_loss(t64(z), t64(z), t64(z)).numpy(),
                           "torch triplet_margin_loss on zero vectors (= margin)"))
    ua, up, un = (rng.normal(0, 1, 6).astype(dt) for _ in range(3))
    cases.append(make_case(f"triplet_unbatched_{dt}", "triplet(swap=true)", {"anchor": ua, "positive": up, "negative": un},
                           F.triplet_margin_loss(t64(ua), t64(up), t64(un), swap=True).numpy(),
                           "torch triplet_margin_loss on one unbatched (D,) triplet"))

    # contrastive (explicit pairs)
    x1 = rng.normal(0, 0.6, (9, 5)).astype(dt)
    x2 = rng.normal(0, 0.6, (9, 5)).astype(dt)
    y = (rng.random(9) > 0.5).astype(dt)
    per = contrastive_ref(x1, x2, y)
    cases.append(make_case(f"contrastive_{dt}", "contrastive", {"x1": x1, "x2": x2, "targets": y}, per.mean(),
                           "float64 formula mean((1-y) d^2 + y max(0, 1-d)^2)", expected_none=per))
    per = contrastive_ref(x1, x2, y, margin=2.5)
    cases.append(make_case(f"contrastive_margin2.5_{dt}", "contrastive(margin=2.5)",
                           {"x1": x1, "x2": x2, "targets": y}, per.mean(), "float64 formula, margin 2.5"))
    cases.append(make_case(f"contrastive_sum_{dt}", "contrastive", {"x1": x1, "x2": x2, "targets": y},
                           contrastive_ref(x1, x2, y).sum(), "float64 formula, summed", reduction="sum"))
    zz = np.zeros((2, 3), dtype=dt)
    per = contrastive_ref(zz, zz, np.array([0.0, 1.0]))
    cases.append(make_case(f"contrastive_zero_vectors_{dt}", "contrastive",
                           {"x1": zz, "x2": zz, "targets": np.array([0, 1], dtype=np.int64)}, per.mean(),
                           "float64 formula on zero vectors: (0 + margin^2)/2"))

    # mining
    emb = rng.normal(0, 1, (14, 6)).astype(dt)
    labels = rng.integers(0, 3, 14)
    labels[13] = 7  # a class with one member: no positive for that anchor
    mean, total, share = all_pairs_ref(emb, labels)
    cases.append(make_case(f"contrastive_all_pairs_{dt}", "contrastive(mining=all_pairs)",
                           {"embeddings": emb, "targets": labels}, mean,
                           "brute force over all unordered pairs (see docstring)", expected_none=share))
    cases.append(make_case(f"contrastive_all_pairs_sum_{dt}", "contrastive(mining=all_pairs)",
                           {"embeddings": emb, "targets": labels}, total, "brute force, sum over pairs",
                           reduction="sum"))
    mean, _, _ = all_pairs_ref(emb, labels, margin=3.0)
    cases.append(make_case(f"contrastive_all_pairs_margin3_{dt}", "contrastive(mining=all_pairs, margin=3)",
                           {"embeddings": emb, "targets": labels}, mean, "brute force, margin 3"))
    mean, per = batch_hard_ref(emb, labels)
    cases.append(make_case(f"triplet_batch_hard_{dt}", "triplet(mining=batch_hard)",
                           {"embeddings": emb, "targets": labels}, mean,
                           "brute force batch-hard with torch pairwise_distance", expected_none=per))
    mean, total, per = all_triplets_ref(emb, labels)
    cases.append(make_case(f"triplet_all_pairs_{dt}", "triplet(mining=all_pairs)",
                           {"embeddings": emb, "targets": labels}, mean,
                           "brute force over every valid triplet (a, p, n) with torch pairwise_distance",
                           expected_none=per))
    cases.append(make_case(f"triplet_batch_all_sum_p1_{dt}", "triplet(mining=batch_all, p=1, margin=2)",
                           {"embeddings": emb, "targets": labels}, all_triplets_ref(emb, labels, 2.0, 1.0)[1],
                           "brute force over every valid triplet, p=1, summed", reduction="sum"))
    mean, per = batch_hard_ref(emb, labels, margin=0.3, p=1.0, eps=0.0)
    cases.append(make_case(f"triplet_batch_hard_p1_{dt}", "triplet(mining=batch_hard, margin=0.3, p=1, eps=0)",
                           {"embeddings": emb, "targets": labels}, mean, "brute force batch-hard, p=1"))
    dup = np.repeat(rng.normal(0, 1, (4, 3)), 2, axis=0).astype(dt) * 100  # exact duplicates, large norms
    dup_labels = np.array([0, 0, 1, 1, 0, 1, 2, 2])
    mean, per = batch_hard_ref(dup, dup_labels)
    cases.append(make_case(f"triplet_batch_hard_duplicates_{dt}", "triplet(mining=batch_hard)",
                           {"embeddings": dup, "targets": dup_labels}, mean,
                           "brute force batch-hard on duplicated points with norms ~100"))
    mean, _, _ = all_pairs_ref(dup, dup_labels, margin=1.0)
    cases.append(make_case(f"contrastive_all_pairs_duplicates_{dt}", "contrastive(mining=all_pairs)",
                           {"embeddings": dup, "targets": dup_labels}, mean,
                           "brute force all pairs on duplicated points with norms ~100"))

# info_nce after the others, from its own generator (the cases above keep their inputs)
rng_nce = np.random.default_rng(13)
for dt in ("float64", "float32"):
    # info_nce: torch cross_entropy over the in-batch similarity matrix (CLIP / SimCLR-style)
    q = rng_nce.normal(0, 1, (11, 8)).astype(dt)
    k = (q.astype(np.float64) + rng_nce.normal(0, 0.8, (11, 8))).astype(dt)
    for loss, kw in [("info_nce", {}), ("info_nce(temperature=0.5)", {"temperature": 0.5}),
                     ("info_nce(similarity=dot, temperature=1)", {"similarity": "dot", "temperature": 1.0}),
                     ("info_nce(symmetric=true)", {"symmetric": True}),
                     ("nt_xent(symmetric=true, similarity=dot, temperature=2)",
                      {"symmetric": True, "similarity": "dot", "temperature": 2.0})]:
        per = info_nce_ref(q, k, **kw)
        name = loss.replace("(", "_").replace(")", "").replace("=", "").replace(", ", "_")
        cases.append(make_case(f"{name}_{dt}", loss, {"x1": q, "x2": k}, per.mean(),
                               f"torch cross_entropy(logits, arange(N)) with {kw}", expected_none=per))
    cases.append(make_case(f"info_nce_sum_{dt}", "info_nce", {"x1": q, "x2": k}, info_nce_ref(q, k).sum(),
                           "torch cross_entropy(logits, arange(N), reduction='sum')", reduction="sum"))
    big = (rng_nce.normal(0, 1, (6, 4)) * 100).astype(dt)
    per = info_nce_ref(big, big[::-1].copy(), similarity="dot", temperature=0.07)
    cases.append(make_case(f"info_nce_dot_huge_logits_{dt}", "info_nce(similarity=dot)",
                           {"x1": big, "x2": big[::-1].copy()}, per.mean(),
                           "torch cross_entropy on logits ~1e5 (stable log-sum-exp)", expected_none=per))
    one = rng_nce.normal(0, 1, (1, 5)).astype(dt)
    cases.append(make_case(f"info_nce_one_pair_{dt}", "info_nce", {"x1": one, "x2": one * 2},
                           info_nce_ref(one, one * 2).mean(), "torch cross_entropy of a 1x1 logit matrix (= 0)"))

write_cases("embedding", "tests/golden/gen_embedding.py", torch_version(), cases)
print(f"wrote {len(cases)} cases")
