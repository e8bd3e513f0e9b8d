"""Write small, seeded example inputs for the multi-input loss families into sample_data/.

Each .npz holds the loss's named inputs as keys, so one command evaluates it (see FAMILIES.md):

* embeddings.npz           anchor, positive, negative, x1, x2 (64, 16) and targets (64,) pair labels
                           (0 similar, 1 dissimilar) → triplet, contrastive
* embeddings_labelled.npz  embeddings (200, 16) and targets (200,) class labels → mining
* cosine_pairs.npz         x1, x2 (64, 16), targets in {1, -1} → cosine_embedding
* segmentation.npz         preds logits (8, 3, 32, 32), targets class indices (8, 32, 32) → cross_entropy + dice
* segmentation_binary.npz  preds probabilities (8, 1, 32, 32), targets mask (8, 1, 32, 32) (some empty) → dice, iou, tversky
* ctc.npz                  log_probs (120, 6, 12), targets padded (6, 20), input_lengths, target_lengths → ctc
* vae.npz                  preds (64, 64) reconstruction probabilities, targets (64, 64) binary pixels,
                           mu, logvar (64, 8) → bce + gaussian_kl
* distillation.npz         preds student logits (128, 10), targets teacher probabilities → kl_div, js_div
* counts.npz               preds log-rates, targets counts (500,) → poisson_nll
* uncertainty.npz          preds means, targets, var (500,) → gaussian_nll

Run: python sample_data/make_family_samples.py   (the same files every time: fixed seed)
"""

from __future__ import annotations

import pathlib

import numpy as np

OUT = pathlib.Path(__file__).resolve().parent
rng = np.random.default_rng(2026)


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def save(name: str, **arrays: np.ndarray) -> None:
    np.savez_compressed(OUT / name, **arrays)
    print(f"wrote sample_data/{name}: " + ", ".join(f"{k} {v.shape} {v.dtype}" for k, v in arrays.items()))


def embeddings() -> None:
    centres = rng.normal(0, 1, (8, 16))
    cls = rng.integers(0, 8, 64)
    anchor = centres[cls] + rng.normal(0, 0.7, (64, 16))
    positive = centres[cls] + rng.normal(0, 0.7, (64, 16))
    negative = centres[(cls + rng.integers(1, 8, 64)) % 8] + rng.normal(0, 0.7, (64, 16))
    pair_labels = (rng.random(64) < 0.5).astype(np.int64)
    x2 = np.where(pair_labels[:, None] == 1, negative, positive)
    save("embeddings.npz", anchor=anchor.astype(np.float32), positive=positive.astype(np.float32),
         negative=negative.astype(np.float32), x1=anchor.astype(np.float32), x2=x2.astype(np.float32),
         targets=pair_labels)
    labels = rng.integers(0, 10, 200)
    centres = rng.normal(0, 1, (10, 16))
    emb = centres[labels] + rng.normal(0, 0.4, (200, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    save("embeddings_labelled.npz", embeddings=emb.astype(np.float32), targets=labels)
    cos_labels = np.where(pair_labels == 1, -1, 1)
    save("cosine_pairs.npz", x1=anchor.astype(np.float32), x2=x2.astype(np.float32), targets=cos_labels)


def segmentation() -> None:
    n, c, h, w = 8, 3, 32, 32
    yy, xx = np.mgrid[:h, :w]
    labels = np.zeros((n, h, w), dtype=np.int64)
    for i in range(n):
        cy, cx, r = rng.integers(8, 24), rng.integers(8, 24), rng.integers(4, 9)
        labels[i][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
        labels[i][(np.abs(yy - cx) < 3) & (xx > cy)] = 2
    onehot = np.eye(c)[labels].transpose(0, 3, 1, 2)
    logits = 4.0 * onehot + rng.normal(0, 1.5, (n, c, h, w))
    save("segmentation.npz", preds=logits.astype(np.float32), targets=labels)
    mask = (labels == 1).astype(np.float32)[:, None]
    mask[-2:] = 0.0  # two images without foreground: the smooth term keeps dice finite
    probs = np.clip(0.85 * mask + rng.normal(0.1, 0.1, mask.shape), 0.0, 1.0)
    save("segmentation_binary.npz", preds=probs.astype(np.float32), targets=mask)


def ctc() -> None:
    t_max, n, c, s_max = 120, 6, 12, 20
    target_lengths = rng.integers(5, s_max + 1, n)
    input_lengths = rng.integers(80, t_max + 1, n)
    targets = np.zeros((n, s_max), dtype=np.int64)
    logits = rng.normal(0, 1, (t_max, n, c))
    logits[:, :, 0] += 4.0  # blank is the most likely class between labels
    for i in range(n):
        seq = rng.integers(1, c, target_lengths[i])
        targets[i, :target_lengths[i]] = seq
        frames = np.linspace(0, input_lengths[i], target_lengths[i] + 1).astype(int)
        for k, label in enumerate(seq):  # a plausible alignment: each label peaks in its segment
            logits[frames[k]:frames[k] + 2, i, label] += 6.0
    log_probs = np.log(softmax(logits, axis=2))
    save("ctc.npz", log_probs=log_probs.astype(np.float32), targets=targets, input_lengths=input_lengths,
         target_lengths=target_lengths)


def vae() -> None:
    x = (rng.random((64, 64)) < 0.3).astype(np.float32)
    recon = np.clip(0.7 * x + 0.15 + rng.normal(0, 0.05, x.shape), 0.01, 0.99)
    mu = rng.normal(0, 0.8, (64, 8))
    logvar = rng.normal(-0.5, 0.3, (64, 8))
    save("vae.npz", preds=recon.astype(np.float32), targets=x, mu=mu.astype(np.float32),
         logvar=logvar.astype(np.float32))


def distillation() -> None:
    teacher_logits = rng.normal(0, 2, (128, 10))
    student_logits = teacher_logits + rng.normal(0, 0.7, (128, 10))
    save("distillation.npz", preds=student_logits.astype(np.float32),
         targets=softmax(teacher_logits / 2.0, axis=1).astype(np.float32))


def regression_likelihoods() -> None:
    log_rate = rng.normal(1.0, 0.5, 500)
    counts = rng.poisson(np.exp(log_rate + rng.normal(0, 0.2, 500))).astype(np.float64)
    save("counts.npz", preds=log_rate, targets=counts)
    mean = rng.normal(0, 1, 500)
    var = rng.uniform(0.2, 2.0, 500)
    save("uncertainty.npz", preds=mean, targets=mean + rng.normal(0, np.sqrt(var)), var=var)


if __name__ == "__main__":
    embeddings()
    segmentation()
    ctc()
    vae()
    distillation()
    regression_likelihoods()
