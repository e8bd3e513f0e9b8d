"""Reading and writing golden cases (see tests/golden/README.md)."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

GOLDEN_DIR = pathlib.Path(__file__).parent / "golden"


def encode_array(arr: Any) -> dict[str, Any]:
    arr = np.asarray(arr)
    return {"dtype": str(arr.dtype), "shape": list(arr.shape), "data": arr.reshape(-1).tolist()}


def decode_array(obj: dict[str, Any]) -> np.ndarray:
    return np.asarray(obj["data"], dtype=obj["dtype"]).reshape(obj["shape"])


def write_cases(name: str, generator: str, reference: str, cases: list[dict[str, Any]]) -> pathlib.Path:
    path = GOLDEN_DIR / f"{name}.json"
    doc = {"generator": generator, "reference": reference, "cases": cases}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def load_all_cases() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(GOLDEN_DIR.glob("*.json")):
        doc = json.loads(path.read_text())
        for case in doc["cases"]:
            out.append((f"{path.stem}:{case['id']}", case))
    return out


def tolerance(case: dict[str, Any]) -> float:
    dtypes = {v["dtype"] for v in case["inputs"].values()}
    return 1e-5 if "float32" in dtypes or "float16" in dtypes else 1e-10
