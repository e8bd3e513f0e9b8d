"""The optional C kernels (lossctl/csrc/), or None where they were not built.

``pip install`` builds them when a C compiler is there (setup.py); without one lossctl uses its
NumPy code for the same sums. Callers read ``ckernels.kernels`` at call time, so tests can switch
the C kernels off in one place.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# The kinds of residual the C kernels ``residual_sum`` / ``residual_stats`` sum, f(d) for d = p - t:
# copies of ``enum { KIND_SQUARE, ... }`` in lossctl/csrc/sums.c (C has no header Python can read;
# tests/test_c_kernels.py compares the two). The regression losses name theirs in ``Fused.c_kind``.
KIND_SQUARE = 0  # d²
KIND_ABS = 1  # |d|
KIND_HUBER = 2  # Huber with delta = knee (smooth_l1 divides by beta)

kernels: ModuleType | None
try:
    # by name: the extension imports nothing of lossctl, but a `from lossctl import _kernels` reads
    # to the import graph (Python sources only) as an import of the package root, i.e. of everything
    kernels = importlib.import_module("lossctl._kernels")
except ImportError:  # pragma: no cover - depends on the install
    kernels = None
