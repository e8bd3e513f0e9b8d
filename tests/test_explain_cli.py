"""`lossctl explain NAME`: the registry's formula and knowledge, curves, --plot, errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import lossctl.losses  # noqa: F401  (registers the built-ins)
from lossctl.advisor.plot import panel, text_plot
from lossctl.cli import app
from lossctl.knowledge import curve_data
from lossctl.registry import all_specs, get_spec

SPEC_LOSSES = ["mse", "mae", "huber", "smooth_l1", "log_cosh", "quantile", "bce", "bce_with_logits",
               "cross_entropy", "nll", "focal", "hinge", "multi_margin", "triplet", "contrastive",
               "kl_div", "js_div", "dice", "iou", "tversky", "gaussian_kl", "ctc", "poisson_nll",
               "gaussian_nll", "cosine_embedding"]


def _curve(name, **kw):
    return curve_data(get_spec(name).knowledge, {}, **kw)


def test_knowledge_covers_the_registry():
    builtin = [s for s in all_specs() if s.family != "custom"]
    assert set(SPEC_LOSSES) <= {s.name for s in builtin}
    missing = [s.name for s in builtin if s.knowledge is None]
    assert not missing, f"explain has no knowledge for {missing}"
    for s in builtin:
        k = s.knowledge
        assert k.properties and k.avoid_when and k.pitfalls and k.pytorch and k.keras, s.name


# Curves against independent closed forms (value and analytic gradient)
@pytest.mark.parametrize("name,x,loss,grad", [
    ("mse", 1.5, 2.25, 3.0),
    ("mae", -2.0, 2.0, -1.0),
    ("huber", 0.5, 0.125, 0.5),
    ("huber", 2.0, 1.5, 1.0),
    ("smooth_l1", -2.0, 1.5, -1.0),
    ("log_cosh", 1.0, np.log(np.cosh(1.0)), np.tanh(1.0)),
    ("quantile", -1.0, 0.9, -0.9),
    ("bce_with_logits", 0.0, np.log(2), -0.5),
    ("hinge", 0.0, 1.0, -1.0),
    ("gaussian_kl", 2.0, 2.0, 2.0),
    ("poisson_nll", 0.0, 1.0, -2.0),
])
def test_curve_values(name, x, loss, grad):
    c = _curve(name, points=1201)
    xs = c["x"]
    s = c["series"][0]
    assert np.interp(x, xs, s["loss"]) == pytest.approx(loss, abs=2e-3)
    assert np.interp(x, xs, s["grad"]) == pytest.approx(grad, abs=2e-2)


def test_curves_are_finite_and_have_no_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for spec in all_specs():
            c = curve_data(spec.knowledge, {})
            if c is None:
                continue
            for s in c["series"]:
                assert np.all(np.isfinite(s["loss"])), spec.name
                assert np.all(np.isfinite(s["grad"])), spec.name


def test_log_cosh_curve_is_stable_far_out():
    from lossctl.losses.regression import _curve_log_cosh

    assert _curve_log_cosh(np.array([1e4]))[0] == pytest.approx(1e4 - np.log(2))


def test_panel_shape():
    x = np.linspace(-1, 1, 50)
    lines = panel(x, [x**2], "t", width=20, height=5)
    assert len(lines) == 1 + 5 + 2 and all(len(line) <= 40 for line in lines)
    assert "*" in "".join(lines)
    lines = text_plot(_curve("contrastive"))
    assert any("o dissimilar" in line for line in lines)


def test_explain_table(runner):
    r = runner.invoke(app, ["explain", "huber"])
    assert r.exit_code == 0 and r.stderr == ""
    out = r.stdout
    for needle in ("Formula", "delta = 1.0", "Properties", "Use when", "Avoid when", "Pitfalls",
                   "torch.nn.HuberLoss(delta=1.0)", "keras.losses.Huber(delta=1.0)", "gradient",
                   "x: residual p - t", "R02"):
        assert needle in out, needle
    assert "\x1b[" not in out


def test_explain_alias_and_case(runner):
    r = runner.invoke(app, ["explain", "L2", "--format", "json"])
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert doc["name"] == "mse" and doc["evaluable"] is True
    assert doc["curve"]["series"][0]["label"] == "mse"
    assert len(doc["curve"]["x"]) == len(doc["curve"]["series"][0]["loss"]) == 41


def test_explain_catalogue_only_loss(runner):
    r = runner.invoke(app, ["explain", "tweedie", "--format", "json"])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["evaluable"] is False and "lightgbm" in doc["code"] and doc["use_when"]


def test_explain_unknown(runner):
    r = runner.invoke(app, ["explain", "hubber"])
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith("error: ") and "did you mean 'huber'" in r.stderr


def test_explain_bad_format(runner):
    r = runner.invoke(app, ["explain", "mse", "--format", "yaml"])
    assert r.exit_code == 2 and "--format" in r.stderr


def test_plot_without_matplotlib(runner, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    out = tmp_path / "huber.png"
    r = runner.invoke(app, ["explain", "huber", "--plot", str(out)])
    assert r.exit_code == 2 and r.stdout == "" and "lossctl[plot]" in r.stderr
    assert not out.exists()


def test_plot_with_matplotlib(runner, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "focal.png"
    r = runner.invoke(app, ["explain", "focal", "--plot", str(out)])
    assert r.exit_code == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_help_loads_no_heavy_modules():
    import subprocess

    code = ("import sys; from lossctl.cli import app\n"
            "from typer.testing import CliRunner\n"
            "CliRunner().invoke(app, ['--help'])\n"
            "CliRunner().invoke(app, ['recommend', '--help'])\n"
            "CliRunner().invoke(app, ['explain', '--help'])\n"
            "print(sorted(m for m in ('numpy', 'yaml', 'pandas', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _registry_names():
    from lossctl.registry import all_specs

    return [s.name for s in all_specs() if s.family != "custom"]


@pytest.mark.parametrize("name", _registry_names())
def test_explain_every_registered_loss(runner, name):
    r = runner.invoke(app, ["explain", name, "--format", "json"])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["name"] == name and doc["formula"] and doc["pitfalls"]
    assert doc["curve"] is not None or name == "ctc"
    r = runner.invoke(app, ["explain", name])
    assert r.exit_code == 0 and r.stderr == ""
