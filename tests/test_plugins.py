"""Custom losses: the example plugin via --plugin, and the lossctl.losses entry point group."""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import pytest
from family_support import run_cli

import lossctl
import lossctl.functional
from lossctl import plugins, registry

PLUGIN = pathlib.Path(__file__).resolve().parents[1] / "sample_data" / "plugins" / "my_losses.py"


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch):
    """Each test starts from the built-ins only, and leaves no custom loss behind."""
    import lossctl.losses  # noqa: F401

    monkeypatch.setattr(registry, "_REGISTRY", {k: v for k, v in registry._REGISTRY.items() if v.family != "custom"})
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))
    monkeypatch.setattr(plugins, "_loaded", set())
    for name in [m for m in sys.modules if m.startswith("lossctl_plugin_")]:
        monkeypatch.delitem(sys.modules, name)


def test_plugin_loss_in_an_expression(tmp_path, runner):
    p = np.array([1.0, 3.0, 2.0]); t = np.array([2.0, 2.0, 2.0])
    np.save(tmp_path / "p.npy", p); np.save(tmp_path / "t.npy", t)
    code, out, err = run_cli(runner, ["evaluate", str(tmp_path / "p.npy"), str(tmp_path / "t.npy"),
                                      "--plugin", str(PLUGIN), "--loss", "mse + 0.5*asymmetric_mse(under=3)",
                                      "--format", "json"])
    assert code == 0, err
    res = json.loads(out)["results"][0]
    mse = (1 + 1 + 0) / 3
    asym = (3 * 1 + 1 + 0) / 3
    assert res["value"] == pytest.approx(mse + 0.5 * asym, rel=1e-12)
    assert [t["name"] for t in res["terms"]] == ["mse", "asymmetric_mse"]
    assert res["terms"][1]["params"] == {"under": 3.0}
    assert res["terms"][1]["value"] == pytest.approx(asym, rel=1e-12)


def test_plugin_loss_with_a_named_input_and_chunks(tmp_path, runner):
    np.savez(tmp_path / "d.npz", preds=np.zeros(5), targets=np.arange(5.0), sample_weight=np.array([1, 0, 2, 0, 1.0]))
    code, out, err = run_cli(runner, ["evaluate", str(tmp_path / "d.npz"), "--plugin", str(PLUGIN),
                                      "--loss", "weighted_mae", "--format", "json", "--chunk-size", "2"])
    assert code == 0, err
    assert json.loads(out)["results"][0]["value"] == pytest.approx((0 + 4 + 4) / 4)


def test_plugin_listed_by_losses_command(runner):
    code, out, err = run_cli(runner, ["losses", "--plugin", str(PLUGIN), "--format", "json"])
    assert code == 0, err
    listed = {d["name"]: d for d in json.loads(out)}
    assert listed["asymmetric_mse"]["family"] == "custom"
    assert listed["asymmetric_mse"]["params"][0]["name"] == "under"
    assert listed["weighted_mae"]["inputs"] == ["preds", "targets", "sample_weight"]


def test_plugin_param_errors_are_exit_2(tmp_path, runner):
    np.save(tmp_path / "p.npy", np.zeros(3))
    code, out, err = run_cli(runner, ["evaluate", str(tmp_path / "p.npy"), str(tmp_path / "p.npy"),
                                      "--plugin", str(PLUGIN), "--loss", "asymmetric_mse(under=-1)"])
    assert code == 2 and err.startswith("error:") and "under" in err


def test_missing_plugin_file_is_exit_2(tmp_path, runner):
    code, out, err = run_cli(runner, ["evaluate", "x.npy", "--plugin", str(tmp_path / "nope.py"), "--loss", "mse"])
    assert code == 2 and "nope.py" in err


def test_unknown_loss_without_the_plugin(tmp_path, runner):
    np.save(tmp_path / "p.npy", np.zeros(3))
    code, out, err = run_cli(runner, ["evaluate", str(tmp_path / "p.npy"), str(tmp_path / "p.npy"),
                                      "--loss", "asymmetric_mse"])
    assert code == 2 and "unknown loss" in err


def test_plugin_replacing_a_builtin_gives_its_own_values(tmp_path, runner):
    """A replaced mse keeps nothing of the built-in, its fused fast path included (registry.fused):
    large float32 inputs that the built-in would sum in one fused pass give the plugin's value."""
    plugin = tmp_path / "my_mse.py"
    plugin.write_text("""
import numpy as np
from lossctl.registry import register_loss

@register_loss("mse", formula="|p - t|^3", summary="not the built-in", use_when="testing replace=True",
               reference="tests/test_plugins.py", elementwise=True, replace=True)
def mse(preds, targets):
    return np.abs(preds - targets) ** 3
""")
    rng = np.random.default_rng(0)
    p = rng.normal(size=300_000).astype(np.float32); t = rng.normal(size=300_000).astype(np.float32)
    np.save(tmp_path / "p.npy", p); np.save(tmp_path / "t.npy", t)
    args = ["evaluate", str(tmp_path / "p.npy"), str(tmp_path / "t.npy"), "--loss", "mse", "--format", "json"]
    code, out, err = run_cli(runner, [*args, "--plugin", str(plugin)])
    assert code == 0, err
    cubed = float(np.mean(np.abs(p.astype(np.float64) - t) ** 3))
    assert json.loads(out)["results"][0]["value"] == pytest.approx(cubed, rel=1e-5)
    assert registry.get_spec("mse").fused is None


def _installed_plugin(root, module_name, code, entry):
    """A distribution as pip leaves it: a module plus a .dist-info with an entry_points.txt."""
    (root / f"{module_name}.py").write_text(code)
    info = root / f"{module_name.replace('_', '-')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module_name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[lossctl.losses]\n{entry}\n")


def _fresh_entry_points(monkeypatch, path):
    monkeypatch.syspath_prepend(str(path))
    monkeypatch.setattr(plugins, "_loaded", set())  # entry points are read once per process


def test_entry_point_plugin(monkeypatch, tmp_path, runner):
    """A package declaring [project.entry-points."lossctl.losses"] is loaded without --plugin."""
    _installed_plugin(tmp_path, "fake_lossctl_pkg", """
import numpy as np
from lossctl.registry import register_loss

@register_loss("cube_error", formula="|p - t|^3", summary="Cubed absolute error.",
               use_when="testing entry points", reference="tests/test_plugins.py", elementwise=True)
def cube_error(preds, targets):
    \"\"\"|p - t|^3. Example: p=[2], t=[0] -> 8.\"\"\"
    return np.abs(preds - targets) ** 3
""", "cube = fake_lossctl_pkg:cube_error")
    _fresh_entry_points(monkeypatch, tmp_path)
    np.save(tmp_path / "p.npy", np.array([2.0, 1.0])); np.save(tmp_path / "t.npy", np.zeros(2))
    try:
        code, out, err = run_cli(runner, ["evaluate", str(tmp_path / "p.npy"), str(tmp_path / "t.npy"),
                                          "--loss", "cube_error + mse", "--format", "json"])
        assert code == 0, err
        assert json.loads(out)["results"][0]["value"] == pytest.approx((8 + 1) / 2 + (4 + 1) / 2)
        code, out, err = run_cli(runner, ["losses", "--format", "json"])
        assert "cube_error" in {d["name"] for d in json.loads(out)}
    finally:
        registry._REGISTRY.pop("cube_error", None)
        sys.modules.pop("fake_lossctl_pkg", None)


def test_broken_entry_point_is_exit_2(monkeypatch, tmp_path, runner):
    _installed_plugin(tmp_path, "broken_lossctl_pkg", "import missing_pkg\n", "bad = broken_lossctl_pkg:thing")
    _fresh_entry_points(monkeypatch, tmp_path)
    code, out, err = run_cli(runner, ["losses"])
    assert code == 2 and "bad" in err and "missing_pkg" in err


def test_no_entry_points_means_no_importlib_metadata(monkeypatch, tmp_path):
    """The pre-scan finds nothing here, so the (slow to import) importlib.metadata is not needed."""
    _fresh_entry_points(monkeypatch, tmp_path)
    calls = []
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: calls.append(kw) or [])
    plugins.load_plugins([])
    assert calls == []


def test_python_api_after_loading():
    plugins.load_plugins([str(PLUGIN)])
    assert lossctl.functional.asymmetric_mse(np.array([1.0, 3.0]), np.array([2.0, 2.0]), under=2) == pytest.approx(1.5)


def test_a_plugin_picks_its_pitfall_checks_by_category_and_explains_without_knowledge():
    from lossctl.advisor.explain import lookup

    @registry.register_loss("squared_gap", categories=("regression",), formula="(p - t)^2",
                            summary="A plugin's squared error.", use_when="tests", reference="-")
    def squared_gap(preds, targets):
        return (preds - targets) ** 2

    report = lossctl.evaluate(inputs=dict(preds=np.linspace(0, 1, 40), targets=np.arange(40) % 3 * 1.0),
                              loss="squared_gap", provenance=False)
    assert [w.code for w in report.warnings] == ["regression_on_class_labels"]
    info = lookup("squared_gap")  # no knowledge= given: explain shows the registry's part only
    assert info["formula"] == "(p - t)^2" and info["properties"] == [] and info["_curve"] is None


def test_an_unknown_category_is_refused_at_registration():
    with pytest.raises(ValueError, match="unknown categories \\['logit'\\]"):
        registry.register_loss("typo_loss", categories=("logit",), formula="-", summary="-", use_when="-",
                               reference="-")(lambda preds, targets: preds)
