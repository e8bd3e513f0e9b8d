"""Where output goes: reports to stdout, diagnostics to stderr (rich only on a TTY)."""

from __future__ import annotations

import sys


def stdout_write(text: str) -> None:
    """Write machine output (JSON, CSV, reports) to stdout exactly as given."""
    sys.stdout.write(text)
    if not text.endswith("\n"):
        sys.stdout.write("\n")
    sys.stdout.flush()


def stdout_json(text: str) -> None:
    """Write a JSON document to stdout; where stdout cannot encode a character, it is written as a
    ``\\uXXXX`` escape (the same document, losslessly) rather than an ASCII stand-in."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        import re

        def escape(match: re.Match[str]) -> str:
            data = match.group().encode("utf-16-be")
            return "".join(f"\\u{int.from_bytes(data[i:i + 2], 'big'):04x}" for i in range(0, len(data), 2))

        text = re.sub(r"[^\x00-\x7f]", escape, text)  # only strings hold non-ASCII in JSON
    except LookupError:
        pass
    stdout_write(text)


#: the longest ``error:`` line written (a message quoting a 1 MB user text is cut)
MAX_MESSAGE = 2000


def _capped(message: str) -> str:
    """A message cut to MAX_MESSAGE characters: user text is cut where it is quoted; this is the backstop."""
    if len(message) <= MAX_MESSAGE:
        return message
    return message[:MAX_MESSAGE - 40] + f"... ({len(message)} characters in all)"


def error(message: str) -> None:
    """The one ``error:`` line for a failed command."""
    message = _capped(" ".join(str(message).split()))  # always exactly one line
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def warn(message: str) -> None:
    message = _capped(" ".join(str(message).split()))
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()


def note(message: str) -> None:
    sys.stderr.write(f"{message}\n")
    sys.stderr.flush()


# ASCII stand-ins for what lossctl's own output uses; anything else falls back to its
# decomposition without accents (é -> e), then to '?'.
_ASCII = {
    "\u2713": "ok", "\u2714": "ok", "\u2717": "x", "\u2718": "x", "\u00d7": "x", "\u2715": "x",
    "\u2014": "--", "\u2013": "-", "\u2212": "-", "\u2010": "-", "\u2011": "-", "\u2192": "->", "\u2190": "<-",
    "\u21d2": "=>", "\u2194": "<->", "\u2264": "<=", "\u2265": ">=", "\u2260": "!=", "\u2248": "~=", "\u00b1": "+/-",
    "\u2026": "...", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u00b7": "*", "\u2022": "*",
    "\u22c5": "*", "\u221e": "inf", "\u2211": "sum", "\u220f": "prod", "\u221a": "sqrt", "\u2207": "grad",
    "\u2202": "d", "\u2208": " in ", "\u2016": "||", "\u00b2": "^2", "\u00b3": "^3", "\u00b9": "^1",
    "\u2070": "^0", "\u207f": "^n", "\u2081": "_1", "\u2082": "_2", "\u1d62": "_i", "\u2c7c": "_j",
    "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u2500": "-", "\u2502": "|", "\u2588": "#", "\u2591": ".",
    "\u03b1": "alpha", "\u03b2": "beta", "\u03b3": "gamma", "\u03b4": "delta", "\u0394": "Delta",
    "\u03b5": "eps", "\u03b6": "zeta", "\u03b7": "eta", "\u03b8": "theta", "\u03ba": "kappa",
    "\u03bb": "lambda", "\u03bc": "mu", "\u03bd": "nu", "\u03be": "xi", "\u03c0": "pi", "\u03c1": "rho",
    "\u03c3": "sigma", "\u03a3": "Sigma", "\u03c4": "tau", "\u03c6": "phi", "\u03c8": "psi", "\u03c9": "omega",
    "\u0177": "y^", "\u0302": "^", "\u2080": "_0", "\u2099": "_n",
}
ERRORS = "lossctl-ascii"


def ascii_equivalent(char: str) -> str:
    """An ASCII stand-in for one character a stream could not encode."""
    if char in _ASCII:
        return _ASCII[char]
    import unicodedata

    name = unicodedata.name(char, "")
    if name.startswith("BOX DRAWINGS"):  # table rules: ━ -> -, ┃ -> |, corners and joints -> +
        parts = name.split()
        horizontal, vertical = "HORIZONTAL" in parts, "VERTICAL" in parts
        if horizontal != vertical and not ({"AND", "DOWN", "UP", "LEFT", "RIGHT"} & set(parts)):
            return "-" if horizontal else "|"
        return "+"

    plain = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
    if plain and plain.isascii():
        return plain
    return "".join(_ASCII.get(c, "?") for c in plain) if plain != char else "?"


def _ascii_errors(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    text = exc.object[exc.start:exc.end]
    out = "".join(ascii_equivalent(c) for c in text)
    try:  # a stand-in the codec can encode (an ASCII-compatible one always can)
        out.encode(exc.encoding)
    except (UnicodeError, LookupError):
        out = "?" * len(text)
    return out, exc.end


def make_stdio_safe() -> None:
    """Let stdout/stderr write what their encoding cannot hold as ASCII equivalents (``✓`` -> ``ok``)
    instead of failing (cp1252, ascii, latin-1 consoles and ``PYTHONIOENCODING``)."""
    import codecs

    try:
        codecs.lookup_error(ERRORS)
    except LookupError:
        codecs.register_error(ERRORS, _ascii_errors)
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("_", "-")
        if encoding in ("utf-8", "utf8", "utf-16", "utf-32") or not hasattr(stream, "reconfigure"):
            continue
        try:
            stream.reconfigure(errors=ERRORS)
        except (AttributeError, ValueError, OSError):  # a stream that cannot be reconfigured
            pass
