"""The loss registry: one place that knows every loss's name, aliases, inputs, parameters and docs.

A loss is one kernel function plus one ``@register_loss`` call next to it. The kernel takes the
loss's named inputs for one chunk of samples (NumPy arrays) and its parameters as keywords, and
returns either the element-wise loss values (mean = over all elements) or a :class:`Part`, which
carries the additive sufficient statistics the engine sums over chunks.

User plugins use the same decorator (see README, "Custom losses").

The registry knows only what has been registered: it imports no loss. The built-in losses are
registered by importing :mod:`lossctl.losses`, which whoever looks losses up by name does first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lossctl.errors import ExprError
from lossctl.words import did_you_mean

if TYPE_CHECKING:
    from lossctl.knowledge import Knowledge

REDUCTIONS = ("mean", "sum", "none")

# What a loss expects of its inputs, as data: the pitfall checks (lossctl.pitfalls) pick their
# checks by category, so a new loss, or a plugin, gets them by saying what it is, not by being
# added to a list elsewhere. A loss may be in several categories, or in none.
CATEGORIES = {
    "logits": "preds are raw scores; the loss applies the sigmoid/softmax itself",
    "probabilities": "preds are probabilities in [0, 1]",
    "log_probabilities": "preds are log-probabilities (<= 0)",
    "overlap": "an overlap (Dice-like) loss: probabilities, or logits with from_logits=true",
    "regression": "a point loss of the residual p - t (class labels as targets are a misuse)",
    "divergence": "preds and targets are distributions over the class axis (rows sum to 1)",
}


class _Required:
    def __repr__(self) -> str:
        return "required"


REQUIRED = _Required()


@dataclass(frozen=True)
class Param:
    """A typed loss parameter.

    ``type`` is one of ``float``, ``int``, ``bool``, ``str``, ``floats`` (a list of floats) or
    ``float_or_floats`` (a scalar or a list). ``nullable`` admits ``none``. Ranges are checked
    element-wise for lists.
    """

    name: str
    type: str
    default: Any
    doc: str = ""
    nullable: bool = False
    choices: tuple[str, ...] | None = None
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def describe_range(self) -> str:
        parts = []
        if self.gt is not None:
            parts.append(f"> {self.gt:g}")
        if self.ge is not None:
            parts.append(f">= {self.ge:g}")
        if self.lt is not None:
            parts.append(f"< {self.lt:g}")
        if self.le is not None:
            parts.append(f"<= {self.le:g}")
        if self.choices:
            parts.append("one of " + ", ".join(self.choices))
        return " and ".join(parts)

    def coerce(self, value: Any, loss: str) -> Any:
        """Check a parsed value against this parameter's type and range; return the typed value."""
        where = f"parameter {self.name!r} of {loss}"
        if value is None:
            if self.nullable:
                return None
            if self.type == "str":
                value = "none"  # a bare `none` is the string "none" for string parameters
            else:
                raise ExprError(f"{where} cannot be none; expected {self._type_words()}")
        t = self.type
        if t == "bool":
            if not isinstance(value, bool):
                raise ExprError(f"{where} must be true or false, got {value!r}")
            return value
        if t == "str":
            if not isinstance(value, str):
                raise ExprError(f"{where} must be a word, got {value!r}")
            value = value.lower()
            if self.choices and value not in self.choices:
                hint = did_you_mean(value, self.choices)
                raise ExprError(f"{where} must be one of {', '.join(self.choices)}, got {value!r}{hint}")
            return value
        if t == "int":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ExprError(f"{where} must be an integer, got {value!r}")
            if isinstance(value, float):
                if not value.is_integer():
                    raise ExprError(f"{where} must be an integer, got {value!r}")
                value = int(value)
            self._check_range(value, where)
            return value
        if t == "float":
            return self._float(value, where)
        if t == "floats":
            if not isinstance(value, list):
                raise ExprError(f"{where} must be a list of numbers like [1, 2.5], got {value!r}")
            return [self._float(v, where) for v in value]
        if t == "float_or_floats":
            if isinstance(value, list):
                return [self._float(v, where) for v in value]
            return self._float(value, where)
        raise AssertionError(f"unknown parameter type {t}")  # pragma: no cover

    def _type_words(self) -> str:
        return {"float": "a number", "int": "an integer", "bool": "true or false", "str": "a word",
                "floats": "a list of numbers", "float_or_floats": "a number or a list of numbers"}[self.type]

    def _float(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ExprError(f"{where} must be a number, got {value!r}")
        value = float(value)
        if math.isnan(value):
            raise ExprError(f"{where} must not be NaN")
        self._check_range(value, where)
        return value

    def _check_range(self, value: float, where: str) -> None:
        ok = ((self.gt is None or value > self.gt) and (self.ge is None or value >= self.ge)
              and (self.lt is None or value < self.lt) and (self.le is None or value <= self.le))
        if not ok:
            raise ExprError(f"{where} must be {self.describe_range()}, got {value!r}")


@dataclass
class Part:
    """What a kernel returns for one chunk: additive statistics plus torch's ``reduction='none'`` values.

    * ``values``: the values torch returns with ``reduction='none'`` for this chunk (their sum is the
      ``sum`` reduction).
    * ``weight``: the denominator of the ``mean`` reduction contributed by this chunk (an array to
      be summed, or a number); ``None`` means the number of elements of ``values``.
    * ``mean_values``: numerators of the mean when they differ from ``values`` (CTC divides each
      sample by its target length before averaging).
    * ``stats``: extra additive sums for losses whose value is not a ratio of sums (global Dice);
      the spec's ``finalize`` turns them into the value.
    """

    values: Any
    weight: Any = None
    mean_values: Any = None
    stats: dict[str, Any] | None = None


@dataclass(frozen=True)
class LossSpec:
    name: str
    kernel: Callable[..., Any]
    inputs: tuple[str, ...]
    params: tuple[Param, ...]
    formula: str
    summary: str
    use_when: str
    reference: str
    family: str
    aliases: tuple[str, ...] = ()
    positional: tuple[str, ...] = ("preds", "targets")
    optional_inputs: tuple[str, ...] = ()
    sample_axes: Mapping[str, int] = field(default_factory=dict)
    elementwise: bool = False
    # check(shapes: {input: shape}, params) -> None; raises InputError naming the shapes.
    check_shapes: Callable[..., None] | None = None
    # prepare(arrays: {input: LazyArray}, params) -> {input: LazyArray}; runs once before chunking.
    prepare: Callable[..., Any] | None = None
    # finalize(stats, reduction, params) -> float | None (None: use the ratio of sums).
    finalize: Callable[..., Any] | None = None
    plugin: str | None = None
    categories: tuple[str, ...] = ()  # keys of CATEGORIES
    knowledge: Knowledge | None = None  # what `lossctl explain` teaches beyond the formula
    # a lossctl.fast.Fused: optional one-pass sums for mean/sum. Typed loosely on purpose: the
    # registry imports nothing from the layers above it (lossctl.fast is one), not even for types.
    fused: Any = None

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def sample_axis(self, input_name: str) -> int:
        return self.sample_axes.get(input_name, 0)

    def all_inputs(self) -> tuple[str, ...]:
        return self.inputs + tuple(i for i in self.optional_inputs if i not in self.inputs)

    def bind_params(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Effective parameters: defaults overlaid with ``given``, each type- and range-checked."""
        out: dict[str, Any] = {}
        known = {p.name: p for p in self.params}
        for key in given:
            if key not in known and key != "reduction":
                hint = did_you_mean(key, [*known, "reduction"])
                allowed = ", ".join([*known, "reduction"])
                raise ExprError(f"unknown parameter {key!r} for {self.name}{hint} (allowed: {allowed})")
        for p in self.params:
            if p.name in given:
                out[p.name] = p.coerce(given[p.name], self.name)
            elif p.default is REQUIRED:
                raise ExprError(f"{self.name} needs parameter {p.name!r} ({p.doc})")
            else:
                out[p.name] = p.default
        return out


_REGISTRY: dict[str, LossSpec] = {}
_ALIASES: dict[str, str] = {}


def register_loss(
    name: str,
    *,
    inputs: Sequence[str] = ("preds", "targets"),
    params: Sequence[Param] = (),
    formula: str,
    summary: str,
    use_when: str,
    reference: str,
    family: str = "custom",
    aliases: Sequence[str] = (),
    positional: Sequence[str] | None = None,
    optional_inputs: Sequence[str] = (),
    sample_axes: Mapping[str, int] | None = None,
    elementwise: bool = False,
    check_shapes: Callable[..., None] | None = None,
    prepare: Callable[..., Any] | None = None,
    finalize: Callable[..., Any] | None = None,
    categories: Sequence[str] = (),
    knowledge: Knowledge | None = None,
    fused: Any = None,
    replace: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``kernel`` as loss ``name``; returns the kernel unchanged.

    ``elementwise=True`` declares a loss of two same-shape inputs whose kernel returns one value per
    element (the NaN policy then drops single elements, and (N,) == (N,1) applies).
    ``categories`` (keys of :data:`CATEGORIES`) say what the loss expects, for the pitfall checks;
    ``knowledge`` is its ``lossctl explain`` text and curve (optional: plugins work without).
    ``fused`` (a :class:`lossctl.fast.Fused`) is an optional fast path for ``mean``/``sum`` that
    must give the kernel's values; without one the engine calls the kernel (``replace=True`` keeps
    nothing of the loss it replaces, its fused path included).
    """
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:  # a typo would silently switch the pitfall checks off
        raise ValueError(f"loss {name!r}: unknown categories {unknown} (known: {', '.join(CATEGORIES)})")

    def decorate(kernel: Callable[..., Any]) -> Callable[..., Any]:
        key = name.lower()
        existing = _REGISTRY.get(_ALIASES.get(key, key))
        # A custom loss may be registered again (a plugin loaded twice, or from a new copy of its
        # file); a built-in name never is, unless replace=True says so on purpose.
        if existing is not None and not replace and not (family == "custom" and existing.family == "custom"):
            raise ValueError(f"loss {name!r} is already registered")
        spec = LossSpec(
            name=key, kernel=kernel, inputs=tuple(inputs), params=tuple(params), formula=formula,
            summary=summary, use_when=use_when, reference=reference, family=family,
            aliases=tuple(a.lower() for a in aliases),
            positional=tuple(positional) if positional is not None else tuple(inputs)[:2],
            optional_inputs=tuple(optional_inputs), sample_axes=dict(sample_axes or {}),
            elementwise=elementwise, check_shapes=check_shapes, prepare=prepare, finalize=finalize,
            plugin=getattr(kernel, "__module__", None) if family == "custom" else None,
            categories=tuple(categories), knowledge=knowledge, fused=fused,
        )
        _REGISTRY[key] = spec
        for alias in spec.aliases:
            _ALIASES[alias] = key
        return kernel

    return decorate


def canonical_name(name: str) -> str:
    """The canonical loss name for ``name`` or an alias; ExprError with a suggestion if unknown."""
    key = name.lower()
    if key in _REGISTRY:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    hint = did_you_mean(key, [*_REGISTRY, *_ALIASES])
    raise ExprError(f"unknown loss {name!r}{hint}; run 'lossctl losses' to list them")


def get_spec(name: str) -> LossSpec:
    return _REGISTRY[canonical_name(name)]


def all_specs() -> list[LossSpec]:
    return sorted(_REGISTRY.values(), key=lambda s: (s.family, s.name))
