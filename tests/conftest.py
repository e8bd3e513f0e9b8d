from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))


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
