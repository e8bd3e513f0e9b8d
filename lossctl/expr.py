"""Loss expressions: a small recursive-descent parser, a canonical formatter, and binding.

Grammar (SPEC §3)::

    expr  := term (('+' | '-') term)*
    term  := [number '*'] call | call ['*' number]
    call  := NAME ['(' [NAME '=' value (',' NAME '=' value)*] ')']
    value := number | true | false | none | WORD | 'string' | "string" | '[' value (',' value)* ']'

``parse`` gives a typed tree (names lower-cased, aliases kept as written); ``format_expr`` prints
it canonically so ``parse(format_expr(e)) == e``; ``bind`` resolves names and parameters against
the registry. Nothing here ever evaluates code.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from lossctl.errors import ExprError
from lossctl.registry import REDUCTIONS, get_spec

#: limits on a loss expression, checked while parsing (a hostile --loss must not recurse or make bignums)
MAX_LIST_DEPTH = 16
MAX_NUMBER_CHARS = 40
MAX_TOKENS = 100_000


def _cut(text: str, limit: int) -> str:
    from lossctl.errors import cut

    return cut(text, limit)


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>'[^']*'|"[^"]*")
  | (?P<op>[-+*(),=\[\]])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Term:
    weight: float
    call: Call


@dataclass(frozen=True)
class Expr:
    terms: tuple[Term, ...]


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    col: int  # 1-based


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ExprError(f"unexpected character {text[pos]!r}", text, pos + 1)
        if len(toks) > MAX_TOKENS:
            raise ExprError(f"expression too long (over {MAX_TOKENS} tokens)", text)
        if m.lastgroup != "ws":
            toks.append(_Tok(m.lastgroup or "", m.group(), pos + 1))
        pos = m.end()
    toks.append(_Tok("end", "", len(text) + 1))
    return toks


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def fail(self, message: str, tok: _Tok | None = None) -> ExprError:
        tok = tok or self.peek()
        found = "end of expression" if tok.kind == "end" else repr(_cut(tok.text, 40))
        return ExprError(f"{message}, found {found}", self.text, tok.col)

    def expect(self, text: str) -> _Tok:
        tok = self.peek()
        if tok.text != text or tok.kind in ("string", "name"):
            raise self.fail(f"expected {text!r}")
        return self.take()

    def is_op(self, text: str) -> bool:
        tok = self.peek()
        return tok.kind == "op" and tok.text == text

    def parse(self) -> Expr:
        if self.peek().kind == "end":
            raise ExprError("empty loss expression; give a loss name such as 'mse'", self.text, 1)
        sign = 1.0
        if (self.is_op("-") or self.is_op("+")) and self.toks[self.i + 1].kind == "name":
            sign = -1.0 if self.take().text == "-" else 1.0  # a leading sign: "-mse"
        terms = [self.term(sign)]
        while self.is_op("+") or self.is_op("-"):
            sign = 1.0 if self.take().text == "+" else -1.0
            terms.append(self.term(sign))
        if self.peek().kind != "end":
            raise self.fail("expected '+', '-' or the end of the expression")
        return Expr(tuple(terms))

    def signed_token(self) -> tuple[float, str] | None:
        """(sign, number text) of a signed number at the cursor, or None (cursor unchanged)."""
        start = self.i
        sign = 1.0
        while self.is_op("-") or self.is_op("+"):
            if self.take().text == "-":
                sign = -sign
        if self.peek().kind == "number":
            return sign, self.take().text
        self.i = start
        return None

    def number(self, text: str, col: int) -> float | int:
        """The value of a number token: an int for plain digits, else a float; a number too long to
        be meant (over 40 characters) or outside the float range is an error, not inf or a bignum."""
        if len(text) > MAX_NUMBER_CHARS:
            raise ExprError(f"number {_cut(text, 20)} is too long (over {MAX_NUMBER_CHARS} characters)",
                            self.text, col)
        value = float(text)
        if not math.isfinite(value):
            raise ExprError(f"number {text} is out of range (beyond +/-1.8e308)", self.text, col)
        return int(text) if re.fullmatch(r"\d+", text) else value

    def signed_number(self) -> float | None:
        """A signed number at the cursor, or None (cursor unchanged) if there is none."""
        col = self.peek().col
        got = self.signed_token()
        return None if got is None else got[0] * float(self.number(got[1], col))

    def term(self, sign: float) -> Term:
        weight = self.signed_number()
        if weight is not None:
            self.expect("*")
            call = self.call()
        else:
            call = self.call()
            if self.is_op("*"):
                self.take()
                weight = self.signed_number()
                if weight is None:
                    raise self.fail("expected a number after '*'")
        return Term(sign * (1.0 if weight is None else weight), call)

    def call(self) -> Call:
        tok = self.peek()
        if tok.kind != "name":
            raise self.fail("expected a loss name")
        name = self.take().text.lower()
        args: list[tuple[str, Any]] = []
        if self.is_op("("):
            self.take()
            if not self.is_op(")"):
                while True:
                    key_tok = self.peek()
                    if key_tok.kind != "name":
                        raise self.fail("expected a parameter name")
                    key = self.take().text.lower()
                    if any(k == key for k, _ in args):
                        raise ExprError(f"parameter {key!r} given twice", self.text, key_tok.col)
                    self.expect("=")
                    args.append((key, self.value()))
                    if self.is_op(","):
                        self.take()
                        continue
                    break
            self.expect(")")
        return Call(name, tuple(args))

    def value(self, depth: int = 0) -> Any:
        tok = self.peek()
        if tok.kind == "op" and tok.text == "[":
            if depth >= MAX_LIST_DEPTH:
                raise ExprError(f"lists nested more than {MAX_LIST_DEPTH} deep", self.text, tok.col)
            self.take()
            items = [self.value(depth + 1)]
            while self.is_op(","):
                self.take()
                items.append(self.value(depth + 1))
            self.expect("]")
            return items
        if tok.kind == "string":
            return self.take().text[1:-1]
        if tok.kind == "name":
            word = self.take().text
            low = word.lower()
            return {"true": True, "false": False, "none": None, "null": None}.get(low, word)
        got = self.signed_token()
        if got is not None:
            sign, text = got
            number = self.number(text, tok.col)
            return int(sign) * number if isinstance(number, int) else sign * number
        raise self.fail("expected a value (number, true, false, none, word, string or [list])")


def parse(text: str) -> Expr:
    """Parse a loss expression (``huber(delta=0.5) + 2*mae``) into a typed tree."""
    return _Parser(text).parse()


def format_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, str):
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value) and value.lower() not in ("true", "false", "none", "null"):
            return value
        return repr(value) if '"' in value or "'" not in value else f'"{value}"'
    raise TypeError(f"cannot format {value!r}")


def format_call(call: Call) -> str:
    if not call.args:
        return call.name
    return f"{call.name}(" + ", ".join(f"{k}={format_value(v)}" for k, v in call.args) + ")"


def _format_weight(w: float) -> str:
    return repr(int(w)) if float(w).is_integer() and abs(w) < 1e15 else repr(float(w))


def format_expr(expr: Expr) -> str:
    """Canonical text: ``mse + 2*mae - 0.5*huber(delta=2.0)``; ``parse(format_expr(e)) == e``."""
    out = []
    for i, term in enumerate(expr.terms):
        w = term.weight
        sign = "-" if w < 0 or (w == 0 and str(w).startswith("-")) else "+"
        mag = abs(w)
        body = format_call(term.call) if mag == 1.0 else f"{_format_weight(mag)}*{format_call(term.call)}"
        if i == 0:
            out.append(("-" if sign == "-" else "") + body)
        else:
            out.append(f" {sign} {body}")
    return "".join(out)


# --------------------------------------------------------------------------------------- binding


@dataclass(frozen=True)
class BoundTerm:
    """One term resolved against the registry: the spec, its weight, and every effective parameter."""

    spec: Any  # LossSpec
    weight: float
    params: dict[str, Any]
    reduction: str | None  # set by an explicit reduction= parameter, else None (use --reduction)

    @property
    def name(self) -> str:
        return self.spec.name


def bind(text_or_expr: str | Expr, text: str | None = None) -> list[BoundTerm]:
    """Resolve an expression's names and parameters (type- and range-checked) against the registry."""
    import lossctl.losses  # noqa: F401  (the built-in losses; here, not at the top: parse needs no NumPy)

    if isinstance(text_or_expr, str):
        text = text_or_expr
        expr = parse(text_or_expr)
    else:
        expr = text_or_expr
        text = text or format_expr(expr)
    bound = []
    for term in expr.terms:
        try:
            spec = get_spec(term.call.name)
            given = dict(term.call.args)
            reduction = given.pop("reduction", None)
            if reduction is not None or "reduction" in dict(term.call.args):
                reduction = "none" if reduction is None else str(reduction).lower()
                if reduction not in REDUCTIONS:
                    raise ExprError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
            params = spec.bind_params(given)
        except ExprError as exc:
            col = text.lower().find(term.call.name) + 1 if text else None
            raise ExprError(exc.args[0], text, col or None) from None
        bound.append(BoundTerm(spec, term.weight, params, reduction))
    return bound
