"""The CLI contract (SPEC §2, §6): streams, exit codes, JSON shape, errors without tracebacks."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from lossctl.cli import app


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(0)
    p, t = rng.normal(size=50), rng.normal(size=50)
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "t.npy", t)
    return str(tmp_path / "p.npy"), str(tmp_path / "t.npy"), p, t


def _one_error_line(result):
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


def test_version(runner):
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("lossctl 0.")


def test_json_report_shape(runner, pair):
    p, t, pv, tv = pair
    result = runner.invoke(app, ["evaluate", p, t, "--loss", "huber(delta=0.5)", "--loss", "mse + 2*mae",
                                 "--format", "json"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == 1 and doc["passed"] is True
    assert doc["inputs"]["preds"] == {"path": p, "shape": [50], "dtype": "float64"}
    first, second = doc["results"]
    assert first["loss"] == "huber(delta=0.5)" and first["reduction"] == "mean"
    assert first["terms"] == [{"name": "huber", "weight": 1.0, "params": {"delta": 0.5}, "value": first["value"]}]
    assert first["checks"] == []
    d = np.abs(pv - tv)
    expected = np.mean(np.where(d < 0.5, 0.5 * d * d, 0.5 * (d - 0.25)))
    assert first["value"] == pytest.approx(expected, rel=1e-12)
    assert second["value"] == pytest.approx(np.mean((pv - tv) ** 2) + 2 * np.mean(d), rel=1e-12)
    assert [t["weight"] for t in second["terms"]] == [1.0, 2.0]
    prov = doc["provenance"]
    assert {"python", "numpy", "lossctl", "time"} <= set(prov)
    assert re.fullmatch(r"xxh3_128:[0-9a-f]{32}", prov["inputs"]["preds"]["digest"])


def test_table_and_csv_go_to_stdout(runner, pair):
    p, t, *_ = pair
    table = runner.invoke(app, ["evaluate", p, t, "--loss", "mae"])
    assert table.exit_code == 0 and "mae" in table.stdout and table.stderr == ""
    csv = runner.invoke(app, ["evaluate", p, t, "--loss", "mae", "--format", "csv"])
    assert csv.stdout.splitlines()[0] == "loss,term,weight,value,reduction,passed"


@pytest.mark.parametrize("args, fragment", [
    (["--loss", "hubr"], "did you mean 'huber'"),
    (["--loss", "huber(delta=-1)"], "must be > 0"),
    (["--loss", "mse", "--reduction", "avg"], "--reduction must be one of"),
    (["--loss", "mse", "--nan-policy", "drop"], "--nan-policy must be one of"),
    (["--loss", "mse", "--format", "xml"], "--format must be one of"),
    (["--loss", "mse", "--bogus"], "No such option"),
    ([], "no loss given"),
])
def test_usage_errors_are_one_line_exit_2(runner, pair, args, fragment):
    p, t, *_ = pair
    result = runner.invoke(app, ["evaluate", p, t, *args])
    assert result.exit_code == 2
    assert fragment in _one_error_line(result)
    assert result.stdout == ""


def test_missing_file_and_shape_mismatch(runner, pair, tmp_path):
    p, t, *_ = pair
    result = runner.invoke(app, ["evaluate", p, str(tmp_path / "nope.npy"), "--loss", "mse"])
    assert result.exit_code == 2 and "no such file" in _one_error_line(result)
    np.save(tmp_path / "short.npy", np.zeros(7))
    result = runner.invoke(app, ["evaluate", p, str(tmp_path / "short.npy"), "--loss", "mse"])
    line = _one_error_line(result)
    assert result.exit_code == 2 and "(50,)" in line and "(7,)" in line


def test_n_and_n1_shapes_are_the_same(runner, tmp_path):
    np.save(tmp_path / "a.npy", np.arange(4.0))
    np.save(tmp_path / "b.npy", np.zeros((4, 1)))
    result = runner.invoke(app, ["evaluate", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--loss", "mse",
                                 "--format", "json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["results"][0]["value"] == pytest.approx(14 / 4)


def test_nan_policies(runner, tmp_path):
    p = np.array([1.0, np.nan, 3.0, np.nan])
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "t.npy", np.zeros(4))
    base = ["evaluate", str(tmp_path / "p.npy"), str(tmp_path / "t.npy"), "--loss", "mse", "--format", "json"]
    raised = runner.invoke(app, base)
    line = _one_error_line(raised)
    assert raised.exit_code == 2 and "2 NaN values" in line and "first at sample 1" in line
    omitted = runner.invoke(app, [*base, "--nan-policy", "omit"])
    doc = json.loads(omitted.stdout)["results"][0]
    assert doc["value"] == pytest.approx(5.0) and doc["omitted"] == 2
    propagated = json.loads(runner.invoke(app, [*base, "--nan-policy", "propagate"]).stdout)["results"][0]
    assert propagated["value"] is None and propagated["non_finite"] == "nan"


def test_all_nan_after_omit_is_an_error(runner, tmp_path):
    np.save(tmp_path / "p.npy", np.full(3, np.nan))
    np.save(tmp_path / "t.npy", np.zeros(3))
    result = runner.invoke(app, ["evaluate", str(tmp_path / "p.npy"), str(tmp_path / "t.npy"), "--loss", "mae",
                                 "--nan-policy", "omit"])
    assert result.exit_code == 2 and "no valid samples" in _one_error_line(result)


def test_empty_input_is_an_error(runner, tmp_path):
    np.save(tmp_path / "e.npy", np.zeros(0))
    result = runner.invoke(app, ["evaluate", str(tmp_path / "e.npy"), str(tmp_path / "e.npy"), "--loss", "mse"])
    assert result.exit_code == 2 and "no samples" in _one_error_line(result)


def test_non_finite_value_is_null_in_json_with_a_warning(runner, tmp_path):
    np.save(tmp_path / "logits.npy", np.zeros((3, 2)))
    np.save(tmp_path / "y.npy", np.full(3, -100))
    result = runner.invoke(app, ["evaluate", str(tmp_path / "logits.npy"), str(tmp_path / "y.npy"),
                                 "--loss", "cross_entropy", "--format", "json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["results"][0]["value"] is None and doc["results"][0]["non_finite"] == "nan"
    assert "warning:" in result.stderr and doc["warnings"]


def test_per_sample_file_streamed_and_summary(runner, pair, tmp_path):
    p, t, pv, tv = pair
    out = tmp_path / "ps.npy"
    result = runner.invoke(app, ["evaluate", p, t, "--loss", "mae", "--reduction", "none", "--per-sample", str(out),
                                 "--worst", "3", "--chunk-size", "7", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    values = np.load(out)
    np.testing.assert_allclose(values, np.abs(pv - tv), rtol=1e-15)
    res = json.loads(result.stdout)["results"][0]
    assert res["reduction"] == "none" and res["per_sample"] == str(out)
    worst = np.argsort(-np.abs(pv - tv))[:3]
    assert [w["index"] for w in res["summary"]["worst"]] == worst.tolist()
    assert res["summary"]["p50"] == pytest.approx(np.percentile(np.abs(pv - tv), 50))
    csv_out = tmp_path / "ps.csv"
    runner.invoke(app, ["evaluate", p, t, "--loss", "mae", "--reduction", "none", "--per-sample", str(csv_out)])
    rows = csv_out.read_text().splitlines()
    assert rows[0] == "index,value" and len(rows) == 51


def test_failed_run_leaves_no_per_sample_file(runner, tmp_path):
    np.save(tmp_path / "p.npy", np.array([1.0, 2.0, np.nan]))
    np.save(tmp_path / "t.npy", np.zeros(3))
    out = tmp_path / "ps.npy"
    result = runner.invoke(app, ["evaluate", str(tmp_path / "p.npy"), str(tmp_path / "t.npy"), "--loss", "mse",
                                 "--reduction", "none", "--per-sample", str(out), "--chunk-size", "1"])
    assert result.exit_code == 2
    assert not out.exists() and not list(tmp_path.glob("*.lossctl-tmp"))


def test_output_file_matches_stdout(runner, pair, tmp_path):
    p, t, *_ = pair
    out = tmp_path / "r.json"
    result = runner.invoke(app, ["evaluate", p, t, "--loss", "mse", "--format", "json", "--output", str(out)])
    assert json.loads(out.read_text()) == json.loads(result.stdout)


def test_internal_error_is_exit_4_without_traceback_unless_debug(runner, pair, monkeypatch):
    p, t, *_ = pair
    from lossctl.commands import _evaluate_impl

    def broken_render(report, fmt, **options):  # a bug in lossctl itself
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(_evaluate_impl, "render", broken_render)
    args = ["evaluate", p, t, "--loss", "mse"]
    result = runner.invoke(app, args)
    assert result.exit_code == 4
    line = _one_error_line(result)
    assert "internal error" in line and "ZeroDivisionError" in line and "please report it" in line
    debug = runner.invoke(app, [*args, "--debug"])
    assert debug.exit_code == 4 and "Traceback" in debug.stderr


def test_exception_in_a_plugin_loss_is_exit_2_naming_plugin_and_loss(runner, pair, tmp_path):
    """SPEC §2: the user's plugin failing is their error (exit 2), not lossctl's bug (exit 4)."""
    p, t, *_ = pair
    plugin = tmp_path / "my_losses.py"
    plugin.write_text(
        "from lossctl.registry import register_loss\n"
        "@register_loss('broken_loss', formula='x', summary='x', use_when='x', reference='x', replace=True)\n"
        "def broken_loss(preds, targets):\n"
        "    return preds[[10**9]]\n")
    args = ["evaluate", p, t, "--loss", "mse + broken_loss", "--plugin", str(plugin)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.stderr
    line = _one_error_line(result)
    assert line.startswith("error: plugin my_losses.py: loss 'broken_loss' raised IndexError: index 1000000000"), line
    assert "internal error" not in line and result.stdout == ""
    debug = runner.invoke(app, [*args, "--debug"])  # the traceback reaches into the plugin's own line
    assert debug.exit_code == 2 and "Traceback" in debug.stderr and "my_losses.py" in debug.stderr
    # the Python API raises the same LossctlError
    from lossctl import api
    from lossctl.errors import LossctlError

    with pytest.raises(LossctlError, match=r"plugin my_losses.py: loss 'broken_loss' raised IndexError"):
        api.evaluate(p, t, ["broken_loss"])


@pytest.mark.parametrize("hook", ["check_shapes", "prepare", "finalize"])
def test_exception_in_a_plugin_hook_is_exit_2_too(runner, pair, tmp_path, hook):
    """Not only the kernel: a plugin's shape check, prepare and finalize are the plugin's code too."""
    p, t, *_ = pair
    plugin = tmp_path / "hooked.py"
    body = {"finalize": "def hook(stats, reduction, params):\n    raise KeyError('nope')\n",
            "check_shapes": "def hook(arrays, params):\n    raise KeyError('nope')\n",
            "prepare": "def hook(arrays, params):\n    raise KeyError('nope')\n"}[hook]
    plugin.write_text(
        "from lossctl.registry import Part, register_loss\n" + body +
        f"@register_loss('hooked_loss', formula='x', summary='x', use_when='x', reference='x', {hook}=hook)\n"
        "def hooked_loss(preds, targets):\n"
        "    return Part(values=preds - targets, stats={'s': 1.0})\n")
    result = runner.invoke(app, ["evaluate", p, t, "--loss", "hooked_loss", "--plugin", str(plugin)])
    assert result.exit_code == 2, result.stderr
    assert _one_error_line(result).startswith("error: plugin hooked.py: loss 'hooked_loss' raised KeyError")


def test_help_imports_no_numpy_pandas_or_yaml():
    code = ("import sys\nfrom lossctl.cli import app\n"
            "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('numpy', 'pandas', 'yaml') if m in sys.modules]\n"
            "sys.stderr.write(repr(heavy))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stderr.strip().endswith("[]"), proc.stderr


def test_python_dash_m_and_console_script_agree(pair):
    p, t, *_ = pair
    proc = subprocess.run([sys.executable, "-m", "lossctl", "evaluate", p, t, "--loss", "mse", "--format", "json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"][0]["loss"] == "mse"
    bad = subprocess.run([sys.executable, "-m", "lossctl", "evaluate", p, t, "--loss", "nope"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and bad.stdout == ""


def test_losses_lists_the_registry(runner):
    result = runner.invoke(app, ["losses", "--format", "json"])
    assert result.exit_code == 0
    names = {entry["name"] for entry in json.loads(result.stdout)}
    assert {"mse", "huber", "cross_entropy", "focal", "multi_margin"} <= names


def test_unbatched_inputs_from_npy_files(runner, tmp_path):
    # one distribution (1-D) for kl_div, and unbatched (C,) logits with a 0-d class index for cross_entropy
    np.save(tmp_path / "q.npy", np.array([0.2, 0.3, 0.5]))
    np.save(tmp_path / "p.npy", np.array([0.0, 0.5, 0.5]))
    np.save(tmp_path / "logits.npy", np.array([1.0, 2.0, 0.5]))
    np.save(tmp_path / "y.npy", np.array(1))
    kl = runner.invoke(app, ["evaluate", str(tmp_path / "q.npy"), str(tmp_path / "p.npy"), "--loss", "kl_div",
                             "--format", "json"])
    assert kl.exit_code == 0, kl.stderr
    # 0·log 0 = 0, then 0.5 log(0.5/0.3) + 0.5 log(0.5/0.5)
    assert json.loads(kl.stdout)["results"][0]["value"] == pytest.approx(0.5 * np.log(0.5 / 0.3), rel=1e-12)
    ce = runner.invoke(app, ["evaluate", str(tmp_path / "logits.npy"), str(tmp_path / "y.npy"), "--loss", "ce",
                             "--format", "json"])
    assert ce.exit_code == 0, ce.stderr
    lse = np.log(np.exp([1.0, 2.0, 0.5]).sum())
    assert json.loads(ce.stdout)["results"][0]["value"] == pytest.approx(lse - 2.0, rel=1e-12)


def test_ctrl_c_is_exit_130_with_one_line_and_no_partial_file(tmp_path):
    import os
    import signal
    import time

    n = 40_000_000
    for name in ("a.npy", "b.npy"):
        big = np.lib.format.open_memmap(tmp_path / name, mode="w+", dtype=np.float32, shape=(n,))
        big[:] = 0.5
        del big
    out = tmp_path / "ps.npy"
    proc = subprocess.Popen([sys.executable, "-m", "lossctl", "evaluate", str(tmp_path / "a.npy"),
                             str(tmp_path / "b.npy"), "--loss", "log_cosh", "--reduction", "none",
                             "--per-sample", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    def writing() -> bool:  # (an empty one is the check that the directory is writable, made first)
        return any(os.path.exists(f) and os.path.getsize(f) > 0 for f in tmp_path.glob("*ps.npy*"))

    while not writing() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)  # wait until it is writing per-sample values
    if proc.poll() is not None:
        pytest.skip("the evaluation finished before it could be interrupted")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert (proc.returncode, stderr.strip(), stdout) == (130, "error: interrupted", "")
    assert not list(tmp_path.glob("*ps.npy*"))  # nothing half-written (nor its temporary file) is left behind
