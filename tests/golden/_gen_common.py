"""Helpers shared by the family generators (gen_distribution.py, gen_extras.py, ...)."""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from golden_support import encode_array, write_cases  # noqa: E402


def make_case(cid: str, loss: str, inputs: dict[str, Any], expected: Any, source: str,
              reduction: str | None = None, expected_none: Any = None) -> dict[str, Any]:
    case: dict[str, Any] = {"id": cid, "loss": loss,
                            "inputs": {k: encode_array(v) for k, v in inputs.items()},
                            "expected": float(expected), "source": source}
    if reduction:
        case["reduction"] = reduction
    if expected_none is not None:
        case["expected_none"] = np.asarray(expected_none, dtype=np.float64).reshape(-1).tolist()
    return case


def torch_version() -> str:
    import torch

    return f"torch {torch.__version__.split('+')[0]}"


__all__ = ["encode_array", "write_cases", "make_case", "torch_version"]
