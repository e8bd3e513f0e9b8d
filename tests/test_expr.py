"""The loss-expression parser, formatter and binder (SPEC §3)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lossctl.errors import ExprError
from lossctl.expr import Call, Expr, Term, bind, format_expr, parse


def test_parses_params_of_every_value_kind():
    e = parse("cross_entropy(weight=[1,2,5], label_smoothing=0.1, ignore_index=-1, reduction=sum)")
    assert e == Expr((Term(1.0, Call("cross_entropy", (("weight", [1, 2, 5]), ("label_smoothing", 0.1),
                                                         ("ignore_index", -1), ("reduction", "sum")))),))
    assert parse("dice(from_logits=TRUE, smooth=1e-6)").terms[0].call.args == (("from_logits", True), ("smooth", 1e-6))
    assert parse("f(a=none, b='x y', c=\"q\", d=.5, e=-1e-3)").terms[0].call.args == (
        ("a", None), ("b", "x y"), ("c", "q"), ("d", 0.5), ("e", -0.001))


def test_weights_signs_and_combinations():
    e = parse("mse + 2*mae - huber(delta=0.5)*0.25")
    assert [t.weight for t in e.terms] == [1.0, 2.0, -0.25]
    assert [t.call.name for t in e.terms] == ["mse", "mae", "huber"]
    assert parse("-1*mse").terms[0].weight == -1.0
    assert parse("MSE").terms[0].call.name == "mse"  # names are case-insensitive


@pytest.mark.parametrize("text", ["mse + 2*mae", "huber(delta=0.5)", "cross_entropy(weight=[1.0, 2.0])",
                                  "mse - 0.5*mae", "dice(from_logits=true, smooth=1)", "-2*mse + mae"])
def test_format_round_trips(text):
    e = parse(text)
    assert parse(format_expr(e)) == e


_names = st.sampled_from(["mse", "mae", "huber", "focal", "dice"])
_values = st.one_of(st.integers(-5, 5), st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
                    st.booleans(), st.none(), st.sampled_from(["sum", "batch_hard"]),
                    st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=3))
_calls = st.builds(lambda n, kv: Call(n, tuple(kv.items())), _names,
                   st.dictionaries(st.sampled_from(["a", "b", "delta"]), _values, max_size=2))
_exprs = st.builds(lambda ts: Expr(tuple(ts)),
                   st.lists(st.builds(Term, st.floats(-100, 100, allow_nan=False).filter(lambda w: w != 0), _calls),
                            min_size=1, max_size=3))


@settings(max_examples=200, deadline=None)
@given(_exprs)
def test_parse_format_round_trip_property(e):
    assert parse(format_expr(e)) == e


@pytest.mark.parametrize("text, column, fragment", [
    ("", 1, "empty"),
    ("mse +", 6, "expected a loss name"),
    ("huber(delta=)", 13, "expected a value"),
    ("huber(delta=1", 14, "expected ')'"),
    ("mse $ mae", 5, "unexpected character"),
    ("2*", 3, "expected a loss name"),
    ("huber(delta=1, delta=2)", 16, "given twice"),
    ("mse mae", 5, "expected '+'"),
])
def test_syntax_errors_point_at_the_column(text, column, fragment):
    with pytest.raises(ExprError) as info:
        parse(text)
    assert info.value.column == column
    assert fragment in str(info.value)


def test_never_evaluates_code():
    for hostile in ["__import__('os').system('true')", "mse; import os", "mse(delta=__import__)",
                    "exec('1')", "mse(a=lambda: 1)"]:
        with pytest.raises(ExprError):
            bind(hostile)


def test_bind_resolves_aliases_and_defaults():
    [t] = bind("l2")
    assert t.spec.name == "mse" and t.params == {}
    [t] = bind("huber")
    assert t.params == {"delta": 1.0}
    [a, b] = bind("ce + 0.5*bce_logits(pos_weight=3)")
    assert (a.spec.name, b.spec.name, b.weight) == ("cross_entropy", "bce_with_logits", 0.5)
    assert b.params == {"pos_weight": 3.0, "weight": None}
    [t] = bind("mse(reduction=none)")
    assert t.reduction == "none"


@pytest.mark.parametrize("text, fragment", [
    ("hubr", "did you mean 'huber'"),
    ("huber(delt=1)", "did you mean 'delta'"),
    ("huber(delta=-1)", "must be > 0"),
    ("huber(delta=0)", "must be > 0"),
    ("huber(delta=true)", "must be a number"),
    ("smooth_l1(beta=-0.1)", "must be >= 0"),
    ("quantile(q=1.5)", "must be >= 0 and <= 1"),
    ("mse(reduction=avg)", "reduction must be one of"),
    ("cross_entropy(weight=3)", "list of numbers"),
    ("cross_entropy(ignore_index=1.5)", "integer"),
    ("hinge(squared=1)", "true or false"),
])
def test_bind_errors_suggest_and_name_the_parameter(text, fragment):
    with pytest.raises(ExprError) as info:
        bind(text)
    assert fragment in str(info.value)
