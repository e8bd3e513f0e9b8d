"""The optional C kernels (lossctl/csrc/), or None where they were not built.

``pip install`` builds them when a C compiler is there (setup.py); without one lossctl uses its
NumPy code for the same sums. Callers read ``ckernels.kernels`` at call time, so tests can switch
the C kernels off in one place.
"""

from __future__ import annotations

from types import ModuleType

kernels: ModuleType | None
try:
    from lossctl import _kernels as kernels
except ImportError:  # pragma: no cover - depends on the install
    kernels = None
