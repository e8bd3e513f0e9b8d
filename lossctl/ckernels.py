"""The optional C kernels (lossctl/csrc/), or None where they were not built.

``pip install`` builds them when a C compiler is there (setup.py); without one lossctl uses its
NumPy code for the same sums. Callers read ``ckernels.kernels`` at call time, so tests can switch
the C kernels off in one place.
"""

from __future__ import annotations

import importlib
from types import ModuleType

kernels: ModuleType | None
try:
    # by name: the extension imports nothing of lossctl, but a `from lossctl import _kernels` reads
    # to the import graph (Python sources only) as an import of the package root, i.e. of everything
    kernels = importlib.import_module("lossctl._kernels")
except ImportError:  # pragma: no cover - depends on the install
    kernels = None
