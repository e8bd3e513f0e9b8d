"""Build the optional C kernels (lossctl/csrc/); everything else is in pyproject.toml.

``optional=True``: without a C compiler the install still succeeds and lossctl uses its NumPy fast
paths (each loss's fused path, on lossctl/fast.py, picks whichever is there).
"""

from glob import glob

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "lossctl._kernels",
            sorted(glob("lossctl/csrc/*.c")),
            depends=["lossctl/csrc/kernels.h"],
            optional=True,
            # no fused multiply-add (values as NumPy forms them); no FP traps, so min/max and
            # compare-and-select loops vectorise (nothing here reads the FP exception flags)
            extra_compile_args=["-O3", "-ffp-contract=off", "-fno-trapping-math"],
        )
    ]
)
