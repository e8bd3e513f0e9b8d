"""Registry completeness: no loss without docs, a reference (golden) test and a chunking test."""

from __future__ import annotations

import pytest
from golden_support import load_all_cases

import lossctl.losses  # noqa: F401  (registers the built-in losses)
from lossctl.expr import bind
from lossctl.registry import Param, all_specs, get_spec, register_loss

BUILTINS = [s for s in all_specs() if s.family != "custom"]


def _golden_losses() -> set[str]:
    names = set()
    for _, case in load_all_cases():
        for term in bind(case["loss"]):
            names.add(term.spec.name)
    return names


GOLDEN = _golden_losses()


@pytest.mark.parametrize("spec", BUILTINS, ids=[s.name for s in BUILTINS])
def test_every_loss_is_documented(spec):
    assert spec.formula and spec.summary and spec.use_when and spec.reference
    assert spec.kernel.__doc__, f"{spec.name}: the kernel needs a docstring with the formula and an example"
    # the example is a doctest (pytest --doctest-modules runs it) through the public per-loss function
    assert f">>> from lossctl.functional import {spec.name}" in spec.kernel.__doc__, \
        f"{spec.name}: the kernel's example should be a doctest: '>>> from lossctl.functional import {spec.name}'"
    for p in spec.params:
        assert p.doc, f"{spec.name}.{p.name} needs a doc string"


@pytest.mark.parametrize("spec", BUILTINS, ids=[s.name for s in BUILTINS])
def test_every_loss_has_golden_reference_cases(spec):
    # test_golden.py runs each golden case against its reference and chunked == one-shot.
    assert spec.name in GOLDEN, f"{spec.name} has no golden case in tests/golden/*.json"


def test_aliases_from_the_spec():
    for alias, name in {"l2": "mse", "l1": "mae", "ce": "cross_entropy", "categorical_cross_entropy": "cross_entropy",
                        "bce_logits": "bce_with_logits", "logcosh": "log_cosh"}.items():
        assert get_spec(alias).name == name
        assert get_spec(alias.upper()).name == name


def test_names_and_aliases_are_unique():
    seen = {}
    for spec in all_specs():
        for key in (spec.name, *spec.aliases):
            assert key not in seen, f"{key} used by {spec.name} and {seen[key]}"
            seen[key] = spec.name


def test_registering_a_duplicate_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_loss("mse", formula="x", summary="x", use_when="x", reference="x")(lambda preds, targets: preds)


def test_param_coercion():
    p = Param("delta", "float", 1.0, "d", gt=0)
    assert p.coerce(2, "huber") == 2.0 and isinstance(p.coerce(2, "huber"), float)
