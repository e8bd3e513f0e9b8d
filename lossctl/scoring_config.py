"""``lossctl evaluate --config scoring.yaml``: a CI scoring step as one reviewed file (SPEC §6).

A scoring file holds the inputs, the losses, the gates and the baseline, so a pipeline runs
``lossctl evaluate --config configs/scoring.yaml``. It is read with ``yaml.safe_load`` semantics
(a SafeLoader; duplicate keys are refused), unknown keys are errors with a did-you-mean, and
relative paths are relative to the scoring file's own directory, so it works from any cwd (an
input, plugin or baseline missing there but present relative to the working directory is taken
from there).
Command-line flags override it (see :func:`merge`). ``configs/scoring.schema.json`` describes
the same format as a JSON Schema (tests keep the two in agreement)::

    version: 1
    inputs:                      # preds/targets are the positional PREDS/TARGETS;
      preds: ../sample_data/regression_preds.npy      # any other key is a named input
      targets: ../sample_data/regression_targets.npy  # (= --input NAME=PATH)
    weights: ../sample_data/weights.csv:w   # one weight per sample (= --weights PATH[:COL])
    losses: [mse, "huber(delta=0.5)"]
    reduction: mean              # mean | sum | none
    nan_policy: raise            # raise | omit | propagate
    chunk_size: 65536
    hash: xxh3                   # xxh3 | sha256 | none: the inputs' digest in the report
    engine: local                # local | dask (SPEC §8)
    scheduler: local:2           # with engine dask: local[:N] | tcp://HOST:PORT
    plugins: [my_losses.py]
    fail_above:                  # LOSS: VALUE (expression as written, or a bare loss name)
      mse: 1.5
    baseline:                    # or just: baseline: reports/baseline.json
      report: examples/baseline.json
      max_increase: 5%           # X (absolute), X% (relative), or a list of one of each
      allow_missing: false
    report:
      format: markdown           # table | json | csv | markdown | junit
      output: ../reports/scoring.md
      worst: 5
      per_sample: ../reports/per_sample.npy
    slices:                      # one loss value per group key (= --by, --min-slice-size, --gate-slices)
      by: ../sample_data/groups.csv:region
      min_size: 30
      gate: false
    no_fail: false
    github: false
    strict: false
    against: examples/regression_preds_worse.npy   # = --against (a paired comparison)
    ci: {level: 0.95, method: auto, seed: 0, resamples: 1000}   # = --ci ...; or ci: true
    inconclusive: pass           # pass | fail: an inconclusive gate (with ci)

``report.dir`` is ``--report-dir`` (the report bundle, SPEC §10).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, fields
from typing import Any

from lossctl.errors import UsageError

FORMATS = ("table", "json", "csv", "markdown", "junit")
REDUCTIONS = ("mean", "sum", "none")
NAN_POLICIES = ("raise", "omit", "propagate")
ENGINES = ("local", "dask")
HASHES = ("xxh3", "sha256", "none")  # = lossctl.provenance.ALGORITHMS (which imports NumPy; a test keeps them equal)

TOP_KEYS = ("version", "inputs", "weights", "losses", "reduction", "nan_policy", "chunk_size", "hash", "plugins",
            "fail_above", "baseline", "report", "no_fail", "github", "strict", "header", "delimiter", "classes",
            "storage_options", "engine", "scheduler", "against", "ci", "inconclusive", "slices")
CI_KEYS = ("level", "method", "seed", "resamples")
BASELINE_KEYS = ("report", "max_increase", "allow_missing")
REPORT_KEYS = ("format", "output", "worst", "per_sample", "dir")
SLICES_KEYS = ("by", "min_size", "gate")


@dataclass
class ScoringConfig:
    """Everything a scoring file (or the command line) can say; None = not given."""

    preds: str | None = None
    targets: str | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    weights: str | None = None
    losses: list[str] = field(default_factory=list)
    reduction: str | None = None
    nan_policy: str | None = None
    chunk_size: int | None = None
    hash: str | None = None
    plugins: list[str] = field(default_factory=list)
    fail_above: dict[str, float] = field(default_factory=dict)
    baseline: str | None = None
    max_increase: list[str] = field(default_factory=list)
    allow_missing: bool = False
    format: str | None = None
    output: str | None = None
    worst: int | None = None
    per_sample: str | None = None
    no_fail: bool = False
    github: bool = False
    strict: bool = False
    header: str | None = None  # CSV inputs (SPEC §5): auto | yes | no
    delimiter: str | None = None
    classes: str | None = None  # "a,b,c": string class labels -> index
    storage_options: dict[str, Any] = field(default_factory=dict)  # fsspec options for URL inputs (SPEC §8)
    engine: str | None = None  # local | dask (SPEC §8)
    scheduler: str | None = None  # local[:N] | tcp://HOST:PORT (engine dask)
    against: str | None = None  # --against BASE: a second model's predictions, compared row by row
    ci: bool = False
    confidence: float | None = None
    ci_method: str | None = None
    seed: int | None = None
    resamples: int | None = None
    inconclusive: str | None = None  # pass | fail
    by: str | None = None  # slice keys (--by PATH[:COL], SPEC §9)
    min_slice_size: int | None = None
    gate_slices: bool = False
    report_dir: str | None = None  # the report bundle (--report-dir, SPEC §10)


class _Reader:
    def __init__(self, path: str) -> None:
        self.path = path
        self.base = os.path.dirname(path)

    def fail(self, mapping: Any, key: Any, message: str) -> UsageError:
        from lossctl.advisor.yamlio import line_of

        line = line_of(mapping, key) if mapping is not None else None
        where = f"{self.path}:{line}" if line else self.path
        return UsageError(f"{where}: {message}")

    def check_keys(self, mapping: Any, allowed: tuple[str, ...], prefix: str) -> None:
        for key in mapping:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                hint = f"; did you mean {prefix + close[0]!r}?" if close else ""
                raise self.fail(mapping, key, f"unknown key {prefix + str(key)!r}{hint} "
                                              f"(allowed: {', '.join(allowed)})")

    def path_value(self, mapping: Any, key: Any, name: str, read: bool = True) -> str:
        """A path relative to the scoring file's directory. For a file to read (``read``) that is
        not there but is relative to the working directory, that one is used instead (so a file
        written with cwd-relative paths still works when run from where it was written for)."""
        value = mapping[key]
        if not isinstance(value, str) or not value.strip():
            raise self.fail(mapping, key, f"{name} must be a file path (a string), got {value!r}")
        value = os.path.expanduser(value.strip())
        if os.path.isabs(value) or "://" in value:  # (a URL: s3://bucket/key)
            return value
        resolved = os.path.normpath(os.path.join(self.base, value))
        if read and self.base and not _exists(resolved) and _exists(value):
            return value
        return resolved

    def choice(self, mapping: Any, key: str, name: str, choices: tuple[str, ...]) -> str:
        value = mapping[key]
        if not isinstance(value, str) or value.lower() not in choices:
            close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise self.fail(mapping, key, f"{name} must be one of {', '.join(choices)}, got {value!r}{hint}")
        return value.lower()

    def boolean(self, mapping: Any, key: str, name: str) -> bool:
        value = mapping[key]
        if not isinstance(value, bool):
            raise self.fail(mapping, key, f"{name} must be true or false, got {value!r}")
        return value

    def integer(self, mapping: Any, key: str, name: str, minimum: int) -> int | None:
        value = mapping[key]
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(mapping, key, f"{name} must be an integer >= {minimum}, got {value!r}")
        return value


def _exists(path: str) -> bool:
    """Whether ``path`` names a file, also as ``file.npz:KEY`` / ``file.csv:cols``."""
    if os.path.exists(path):
        return True
    head, sep, _ = path.rpartition(":")
    return bool(sep and head and os.path.exists(head))


def _mapping(value: Any) -> bool:
    return isinstance(value, dict)


def _read_csv_keys(r: _Reader, doc: Any, cfg: ScoringConfig) -> None:
    """``header`` (auto | yes | no; YAML's bare yes/no are booleans), ``delimiter`` (one character or
    ``tab``), ``classes`` (a list of labels or ``"a,b,c"``): how CSV inputs are read (SPEC §5)."""
    if "header" in doc:
        if isinstance(doc["header"], bool):
            cfg.header = "yes" if doc["header"] else "no"
        else:
            cfg.header = r.choice(doc, "header", "header", ("auto", "yes", "no"))
    if "delimiter" in doc:
        value = doc["delimiter"]
        if not isinstance(value, str) or not (len(value) == 1 or value in ("tab", "\\t")):
            raise r.fail(doc, "delimiter", f"delimiter must be one character or 'tab', got {value!r}")
        cfg.delimiter = value
    if "classes" in doc:
        value = doc["classes"]
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            value = ",".join(value)
        if not isinstance(value, str) or not value.strip():
            raise r.fail(doc, "classes", "classes must be a list of class labels or 'a,b,c', in the logits' order")
        cfg.classes = value


def _read_ci_keys(r: _Reader, doc: Any, cfg: ScoringConfig) -> None:
    """``against: PATH``, ``ci: true`` or ``ci: {level, method, seed, resamples}``, ``inconclusive``."""
    if "against" in doc:
        cfg.against = r.path_value(doc, "against", "against")
    if "inconclusive" in doc:
        cfg.inconclusive = r.choice(doc, "inconclusive", "inconclusive", ("pass", "fail"))
    if "ci" not in doc:
        return
    ci = doc["ci"]
    if isinstance(ci, bool):
        cfg.ci = ci
        return
    if not _mapping(ci):
        raise r.fail(doc, "ci", "ci must be true/false or a mapping with level, method, seed, resamples")
    r.check_keys(ci, CI_KEYS, "ci.")
    cfg.ci = True
    if "level" in ci:
        level = ci["level"]
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
            raise r.fail(ci, "level", f"ci.level must be a number between 0 and 1 (e.g. 0.95), got {level!r}")
        cfg.confidence = float(level)
    if "method" in ci:
        cfg.ci_method = r.choice(ci, "method", "ci.method", ("auto", "clt", "jackknife", "bootstrap"))
    if "seed" in ci:
        cfg.seed = r.integer(ci, "seed", "ci.seed", 0)
    if "resamples" in ci:
        cfg.resamples = r.integer(ci, "resamples", "ci.resamples", 2)


def parse_config(doc: Any, path: str) -> ScoringConfig:
    """Validate a parsed scoring document; every problem is a UsageError naming file, line and key."""
    r = _Reader(path)
    if not _mapping(doc):
        kind = "empty" if doc is None else f"a {type(doc).__name__}"
        raise UsageError(f"{path}: a scoring file must be a mapping of keys (inputs, losses, fail_above, "
                         f"baseline, ...), but it is {kind}")
    r.check_keys(doc, TOP_KEYS, "")
    cfg = ScoringConfig()
    if "version" in doc and (isinstance(doc["version"], bool) or doc["version"] != 1):
        raise r.fail(doc, "version", f"version must be 1, got {doc['version']!r}")
    if "inputs" in doc:
        inputs = doc["inputs"]
        if not _mapping(inputs):
            raise r.fail(doc, "inputs", "inputs must be a mapping NAME: PATH (preds, targets, anchor, ...)")
        for name in inputs:
            if not isinstance(name, str) or not name.isidentifier():
                raise r.fail(inputs, name, f"inputs: {name!r} is not a valid input name")
            value = r.path_value(inputs, name, f"inputs.{name}")
            if name == "preds":
                cfg.preds = value
            elif name == "targets":
                cfg.targets = value
            else:
                cfg.inputs[name] = value
    if "weights" in doc:
        cfg.weights = r.path_value(doc, "weights", "weights")
    if "losses" in doc:
        losses = doc["losses"]
        if isinstance(losses, str):
            losses = [losses]
        if not isinstance(losses, list) or not losses or \
                not all(isinstance(x, str) and x.strip() for x in losses):
            raise r.fail(doc, "losses", "losses must be a non-empty list of loss expressions, e.g. "
                                        "[mse, \"huber(delta=0.5)\"]")
        cfg.losses = [x.strip() for x in losses]
    if "reduction" in doc:
        cfg.reduction = r.choice(doc, "reduction", "reduction", REDUCTIONS)
    if "nan_policy" in doc:
        cfg.nan_policy = r.choice(doc, "nan_policy", "nan_policy", NAN_POLICIES)
    if "chunk_size" in doc:
        cfg.chunk_size = r.integer(doc, "chunk_size", "chunk_size", 1)
    if "hash" in doc:
        cfg.hash = r.choice(doc, "hash", "hash", HASHES)
    if "engine" in doc:
        cfg.engine = r.choice(doc, "engine", "engine", ENGINES)
    if "scheduler" in doc:
        value = doc["scheduler"]
        if not isinstance(value, str) or not (value.strip() == "local" or value.strip().startswith(("local:", "tcp://", "tls://"))):
            raise r.fail(doc, "scheduler", f"scheduler must be local, local:N or tcp://HOST:PORT, got {value!r}")
        cfg.scheduler = value.strip()
    _read_csv_keys(r, doc, cfg)
    if "storage_options" in doc:
        opts = doc["storage_options"]
        if not _mapping(opts) or not all(isinstance(k, str) for k in opts):
            raise r.fail(doc, "storage_options", "storage_options must be a mapping of fsspec options "
                                                 "(e.g. anon: true, client_kwargs: {endpoint_url: ...})")
        cfg.storage_options = dict(opts)
    if "plugins" in doc:
        plugins = doc["plugins"]
        if isinstance(plugins, str):
            plugins = [plugins]
        if not isinstance(plugins, list):
            raise r.fail(doc, "plugins", "plugins must be a list of Python file paths")
        cfg.plugins = [r.path_value(plugins, i, f"plugins[{i}]") for i in range(len(plugins))]
    if "fail_above" in doc:
        gates = doc["fail_above"]
        if not _mapping(gates):
            raise r.fail(doc, "fail_above", "fail_above must be a mapping LOSS: VALUE, e.g. {mse: 0.3}")
        for loss, limit in gates.items():
            if not isinstance(loss, str) or not loss.strip():
                raise r.fail(gates, loss, f"fail_above: {loss!r} is not a loss expression")
            if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit != limit:
                raise r.fail(gates, loss, f"fail_above.{loss} must be a number, got {limit!r}")
            cfg.fail_above[loss.strip()] = float(limit)
    if "baseline" in doc:
        base = doc["baseline"]
        if isinstance(base, str):
            cfg.baseline = r.path_value(doc, "baseline", "baseline")
        elif _mapping(base):
            r.check_keys(base, BASELINE_KEYS, "baseline.")
            if "report" not in base:
                raise r.fail(doc, "baseline", "baseline needs 'report': the path of an earlier JSON report")
            cfg.baseline = r.path_value(base, "report", "baseline.report")
            if "max_increase" in base:
                value = base["max_increase"]
                items = value if isinstance(value, list) else [value]
                if not items or not all(isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in items):
                    raise r.fail(base, "max_increase", f"baseline.max_increase must be a number (absolute) or "
                                                       f"a percentage such as '5%', got {value!r}")
                cfg.max_increase = [str(x) for x in items]
                from lossctl.gates import parse_max_increase

                try:
                    parse_max_increase(cfg.max_increase, "baseline.max_increase")
                except UsageError as exc:
                    raise r.fail(base, "max_increase", str(exc)) from None
            if "allow_missing" in base:
                cfg.allow_missing = r.boolean(base, "allow_missing", "baseline.allow_missing")
        else:
            raise r.fail(doc, "baseline", "baseline must be a report path or a mapping with report, "
                                          "max_increase, allow_missing")
    if "report" in doc:
        rep = doc["report"]
        if not _mapping(rep):
            raise r.fail(doc, "report", "report must be a mapping with format, output, worst, per_sample")
        r.check_keys(rep, REPORT_KEYS, "report.")
        if "format" in rep:
            cfg.format = r.choice(rep, "format", "report.format", FORMATS)
        if "output" in rep:
            cfg.output = r.path_value(rep, "output", "report.output", read=False)
        if "worst" in rep:
            cfg.worst = r.integer(rep, "worst", "report.worst", 0)
        if "per_sample" in rep:
            cfg.per_sample = r.path_value(rep, "per_sample", "report.per_sample", read=False)
        if "dir" in rep:
            cfg.report_dir = r.path_value(rep, "dir", "report.dir", read=False)
    if "slices" in doc:
        sl = doc["slices"]
        if not _mapping(sl) or "by" not in sl:
            raise r.fail(doc, "slices", "slices must be a mapping with by (PATH[:COL]), min_size, gate")
        r.check_keys(sl, SLICES_KEYS, "slices.")
        cfg.by = r.path_value(sl, "by", "slices.by")
        if "min_size" in sl:
            cfg.min_slice_size = r.integer(sl, "min_size", "slices.min_size", 1)
        if "gate" in sl:
            cfg.gate_slices = r.boolean(sl, "gate", "slices.gate")
    _read_ci_keys(r, doc, cfg)
    for key in ("no_fail", "github", "strict"):
        if key in doc:
            setattr(cfg, key, r.boolean(doc, key, key))
    return cfg


def load_config(path: str) -> ScoringConfig:
    """Read and validate a scoring YAML file (SafeLoader only)."""
    from lossctl.advisor.yamlio import load_yaml

    if os.path.isdir(path):
        raise UsageError(f"--config {path!r} is a directory, not a scoring YAML file")
    return parse_config(load_yaml(path, "scoring file"), path)


#: How a command-line value overrides the file's (fields not named here: a value given replaces it)
_REPLACE_IF_GIVEN = ("losses", "max_increase")  # lists: the flags' list replaces the file's
_UPDATE = ("inputs", "fail_above", "storage_options")  # mappings: flags override entries by name, keep the others
_APPEND = ("plugins",)  # added to the file's
_SWITCH_ON = ("allow_missing", "no_fail", "github", "strict", "ci", "gate_slices")  # booleans: a flag can only switch on


def merge(cfg: ScoringConfig, flags: ScoringConfig) -> ScoringConfig:
    """The options of one run: the command line's ``flags`` (None / empty where not given) over the
    file's ``cfg``. Scalars given on the command line win; ``--loss`` replaces the file's list;
    ``--input`` and ``--fail-above`` override entries by name and keep the others; ``--plugin`` adds
    to the file's plugins; boolean flags can only switch a setting on. A ``--format`` other than
    the file's, without ``--output``, drops the file's ``report.output`` (so a table never lands in
    ``scoring.json``). Neither argument is changed."""
    out = ScoringConfig()
    for f in fields(ScoringConfig):
        mine, given = getattr(cfg, f.name), getattr(flags, f.name)
        if f.name in _REPLACE_IF_GIVEN:
            value = list(given or mine)
        elif f.name in _UPDATE:
            value = {k: v for k, v in mine.items() if k not in given}
            value.update(given)
        elif f.name in _APPEND:
            value = mine + [p for p in given if p not in mine]
        elif f.name in _SWITCH_ON:
            value = mine or given
        else:
            value = mine if given is None else given
        setattr(out, f.name, value)
    if flags.format is not None and flags.output is None and cfg.output and flags.format != (cfg.format or "table"):
        out.output = None  # the file's report.output is for its own report.format, not another one
    return out
