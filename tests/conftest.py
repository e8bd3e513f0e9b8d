from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

# --doctest-modules (pyproject.toml) imports every .py under the test paths. The golden generators are
# scripts, not tests: they need torch/scikit-learn/mpmath (not installed for the suite) and rewrite
# tests/golden/*.json when run.
collect_ignore_glob = ["golden/gen_*.py", "golden/_gen_common.py"]


@pytest.fixture
def runner():
    from typer.testing import CliRunner

    return CliRunner()


@pytest.fixture(params=["c", "pandas"])
def csv_parser(request, monkeypatch):
    """Run a CSV test through the C parser (in tiny blocks, so many blocks and lines cut across
    them) and through pandas (what every file the C parser refuses gets)."""
    from lossctl import ckernels
    from lossctl.readers import csv

    if request.param == "c":
        if ckernels.kernels is None:
            pytest.skip("C kernels not built")
        monkeypatch.setattr(csv, "CSV_BLOCK_BYTES", 64)
    else:
        monkeypatch.setattr(ckernels, "kernels", None)
    return request.param
