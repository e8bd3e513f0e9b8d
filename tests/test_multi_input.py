"""Named inputs (SPEC §5) and combined losses across families: each term resolves its own inputs
(--input NAME, then the PREDS .npz key NAME, then the positional slot) and is reported."""

from __future__ import annotations

import json

import numpy as np
import pytest
from family_support import run_cli, save_npz

import lossctl
from lossctl.functional import compute


def _segmentation(rng, dtype=np.float64):
    logits = rng.normal(0, 3, (4, 3, 5, 5)).astype(dtype)
    labels = rng.integers(0, 3, (4, 5, 5))
    return logits, labels


def test_cross_entropy_plus_dice_on_segmentation_logits(tmp_path, runner):
    rng = np.random.default_rng(0)
    logits, labels = _segmentation(rng)
    np.save(tmp_path / "x.npy", logits); np.save(tmp_path / "y.npy", labels)
    ce = compute("cross_entropy", logits, labels)
    dice = compute("dice", logits, labels, from_logits=True)
    expr = "cross_entropy + 0.5*dice(from_logits=true)"
    code, out, err = run_cli(runner, ["evaluate", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"),
                                      "--loss", expr, "--format", "json", "--chunk-size", "3"])
    assert code == 0, err
    res = json.loads(out)["results"][0]
    assert res["loss"] == expr
    assert res["value"] == pytest.approx(ce + 0.5 * dice, rel=1e-12)
    terms = {t["name"]: t for t in res["terms"]}
    assert terms["cross_entropy"]["value"] == pytest.approx(ce, rel=1e-12)
    assert terms["dice"]["weight"] == 0.5 and terms["dice"]["value"] == pytest.approx(dice, rel=1e-12)
    assert terms["dice"]["params"] == {"smooth": 1.0, "from_logits": True, "per_sample": False, "per_class": False}


def test_vae_bce_plus_gaussian_kl_from_one_npz(tmp_path, runner):
    rng = np.random.default_rng(1)
    recon = rng.uniform(0.01, 0.99, (6, 10)); x = (rng.random((6, 10)) > 0.5).astype(float)
    mu = rng.normal(0, 1, (6, 3)); logvar = rng.normal(0, 0.3, (6, 3))
    npz = save_npz(tmp_path / "vae.npz", preds=recon, targets=x, mu=mu, logvar=logvar)
    code, out, err = run_cli(runner, ["evaluate", npz, "--loss", "bce + gaussian_kl", "--format", "json"])
    assert code == 0, err
    doc = json.loads(out)
    res = doc["results"][0]
    bce = compute("bce", recon, x)
    kl = float(np.mean(0.5 * np.sum(mu ** 2 + np.exp(logvar) - 1 - logvar, axis=1)))
    assert res["value"] == pytest.approx(bce + kl, rel=1e-12)
    assert [t["name"] for t in res["terms"]] == ["bce", "gaussian_kl"]
    assert set(doc["inputs"]) >= {"preds", "targets", "mu", "logvar"}


def test_named_input_overrides_npz_key(tmp_path, runner):
    rng = np.random.default_rng(2)
    mu = rng.normal(0, 1, (5, 2)); lv = np.zeros((5, 2)); other = np.zeros((5, 2))
    npz = save_npz(tmp_path / "z.npz", mu=mu, logvar=lv)
    np.save(tmp_path / "mu0.npy", other)
    code, out, err = run_cli(runner, ["evaluate", npz, "--input", f"mu={tmp_path / 'mu0.npy'}",
                                      "--loss", "gaussian_kl", "--format", "json"])
    assert code == 0, err
    assert json.loads(out)["results"][0]["value"] == 0.0


def test_gaussian_kl_positional_slots(tmp_path, runner):
    mu = np.array([[1.0, 2.0]]); lv = np.array([[0.5, -0.5]])
    np.save(tmp_path / "mu.npy", mu); np.save(tmp_path / "lv.npy", lv)
    code, out, err = run_cli(runner, ["evaluate", str(tmp_path / "mu.npy"), str(tmp_path / "lv.npy"),
                                      "--loss", "gaussian_kl", "--format", "json"])
    assert code == 0, err
    expected = 0.5 * float(np.sum(mu ** 2 + np.exp(lv) - 1 - lv))
    assert json.loads(out)["results"][0]["value"] == pytest.approx(expected, rel=1e-12)


def test_targets_optional_for_named_input_losses(tmp_path, runner):
    rng = np.random.default_rng(3)
    npz = save_npz(tmp_path / "t.npz", anchor=rng.normal(size=(4, 3)), positive=rng.normal(size=(4, 3)),
                   negative=rng.normal(size=(4, 3)))
    code, out, err = run_cli(runner, ["evaluate", npz, "--loss", "triplet", "--format", "json"])
    assert code == 0, err
    assert json.loads(out)["results"][0]["value"] is not None


def test_all_inputs_by_input_flags(tmp_path, runner):
    rng = np.random.default_rng(4)
    args = ["evaluate"]
    arrays = {"x1": rng.normal(size=(5, 2)), "x2": rng.normal(size=(5, 2)), "targets": np.array([0, 1, 0, 1, 1])}
    for k, v in arrays.items():
        np.save(tmp_path / f"{k}.npy", v)
        args += ["--input", f"{k}={tmp_path / (k + '.npy')}"]
    code, out, err = run_cli(runner, [*args, "--loss", "contrastive", "--format", "json"])
    assert code == 0, err
    assert json.loads(out)["results"][0]["value"] == pytest.approx(compute("contrastive", **arrays), rel=1e-12)


def test_missing_named_input_lists_found_keys(tmp_path, runner):
    npz = save_npz(tmp_path / "vae.npz", preds=np.full((2, 2), 0.5), targets=np.ones((2, 2)), mu=np.zeros((2, 2)))
    code, out, err = run_cli(runner, ["evaluate", npz, "--loss", "bce + gaussian_kl"])
    assert code == 2 and out == ""
    assert err.startswith("error:") and "'logvar'" in err and "preds, targets, mu" in err
    assert len(err.strip().splitlines()) == 1


def test_terms_with_different_sample_counts(tmp_path):
    """Each term streams over its own inputs: reconstruction over 8 samples, latents over 8 too but
    a different width; values equal the one-shot per-term values at any chunk size."""
    rng = np.random.default_rng(5)
    data = {"preds": rng.uniform(0.1, 0.9, (8, 7)), "targets": rng.random((8, 7)), "mu": rng.normal(size=(8, 2)),
            "logvar": rng.normal(size=(8, 2))}
    expected = compute("bce", data["preds"], data["targets"]) + 0.1 * compute("gaussian_kl", data["mu"], data["logvar"])
    for chunk in (None, 1, 3):
        v = lossctl.evaluate(inputs=data, loss="bce + 0.1*gaussian_kl", chunk_size=chunk, provenance=False)
        assert v.results[0].value == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_segmentation_combo_with_extreme_logits(dtype):
    rng = np.random.default_rng(6)
    logits = rng.choice([-1e4, 1e4], size=(2, 3, 4, 4)).astype(dtype)
    labels = rng.integers(0, 3, (2, 4, 4))
    with np.errstate(over="raise", invalid="raise"):
        report = lossctl.evaluate(logits, labels, "cross_entropy + 0.5*dice(from_logits=true) + iou(from_logits=true)",
                                  provenance=False)
    assert np.isfinite(report.results[0].value)


def _family_commands():
    import pathlib

    text = (pathlib.Path(__file__).resolve().parents[1] / "sample_data" / "FAMILIES.md").read_text()
    return [line for line in text.splitlines() if line.startswith("lossctl evaluate ")]


@pytest.mark.parametrize("line", _family_commands())
def test_family_sample_commands_run(line, runner, monkeypatch):
    """Every command in sample_data/FAMILIES.md runs on the committed sample files, finite values."""
    import pathlib
    import shlex

    from lossctl import plugins, registry

    monkeypatch.chdir(pathlib.Path(__file__).resolve().parents[1])
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))
    monkeypatch.setattr(plugins, "_loaded", set(plugins._loaded))
    args = shlex.split(line)[1:] + ["--format", "json"]
    code, out, err = run_cli(runner, args)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["results"] and all(r["value"] is not None for r in doc["results"])
