"""CLI helpers shared by the test modules: run `lossctl evaluate` on arrays, check usage errors."""

from __future__ import annotations

import numpy as np

from lossctl.cli import app


def evaluate_arrays(runner, tmp_path, preds, targets, *args):
    """Save preds/targets as .npy files and run `lossctl evaluate` on them through CliRunner."""
    p, t = tmp_path / "preds.npy", tmp_path / "targets.npy"
    np.save(p, np.asarray(preds))
    np.save(t, np.asarray(targets))
    return runner.invoke(app, ["evaluate", str(p), str(t), *args])


def assert_usage_error(result, *needles):
    """Exit 2, nothing on stdout, exactly one `error:` line on stderr containing each needle."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
