"""`lossctl evaluate`: compute losses over saved predictions and targets (SPEC §6).

Only typer is imported here; the work happens in ``_evaluate_impl`` (imported when run), so
``lossctl --help`` stays free of NumPy, pandas and PyYAML.
"""

from typing import Annotated

import typer
from typer.core import TyperCommand

FORMAT_HELP = "Report format: table, json, csv, markdown or junit."
GATES = "Gates (CI)"
PREDS_HELP = ("Predictions: p.npy; f.npz (one array, or named inputs) or f.npz:KEY; f.csv, f.csv:COL or "
              "f.csv:COL1,COL2 (columns by name or 0-based index); - reads stdin (NPY or CSV), -:COL.")
TARGETS_HELP = ("Targets, in the same forms: t.npy, f.npz:KEY, f.csv:COL, or - for stdin. Optional when the "
                "loss takes named inputs (from --input or an .npz).")


class EvaluateCommand(TyperCommand):
    """Takes ``-:COL`` (CSV columns of standard input) as an argument, not as an unknown option ``-:``."""

    _MARK = "\x00"

    def parse_args(self, ctx, args):  # type: ignore[no-untyped-def]
        rest = super().parse_args(ctx, [self._MARK + a if a.startswith("-:") else a for a in args])
        for key, value in ctx.params.items():
            if isinstance(value, str) and value.startswith(self._MARK):
                ctx.params[key] = value[1:]
        return rest


def evaluate(
    preds: Annotated[str | None, typer.Argument(help=PREDS_HELP)] = None,
    targets: Annotated[str | None, typer.Argument(help=TARGETS_HELP)] = None,
    loss: Annotated[list[str] | None, typer.Option("--loss", "-l", help="Loss expression, e.g. 'huber(delta=0.5)' or 'mse + 2*mae'. Repeatable.")] = None,
    input_: Annotated[list[str] | None, typer.Option("--input", "-i", help="Named input NAME=PATH (anchor, x1, log_probs, ...). Repeatable.")] = None,
    weights: Annotated[str | None, typer.Option(
        "--weights", help="PATH[:COL]: one non-negative weight per sample; mean = sum(w*loss)/sum(w), sum = sum(w*loss).")] = None,
    header: Annotated[str | None, typer.Option(
        "--header", help="CSV header: auto (a first row with text, or pandas' 0,1,...,k-1, is a header), yes or no. Default: auto.")] = None,
    delimiter: Annotated[str | None, typer.Option(
        "--delimiter", help="CSV field separator (one character, or 'tab'). Default: ',' (.csv), tab (.tsv), or ';'/'|' when the header splits better on it.")] = None,
    classes: Annotated[str | None, typer.Option(
        "--classes", help="String class labels in a CSV column, in the order of the logits' columns: 'cat,dog,bird' (index = position).")] = None,
    storage_option: Annotated[list[str] | None, typer.Option(
        "--storage-option", help="KEY=VALUE for URL inputs (s3://, gs://, az://, https://), passed to fsspec; dotted keys nest (client_kwargs.endpoint_url=...). Repeatable.")] = None,
    reduction: Annotated[str | None, typer.Option(help="mean | sum | none (none writes per-sample values). Default: mean.")] = None,
    nan_policy: Annotated[str | None, typer.Option("--nan-policy", help="raise | omit | propagate. Default: raise.")] = None,
    format_: Annotated[str | None, typer.Option("--format", "-f", help=FORMAT_HELP + " Default: table.")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Also write the report to FILE.")] = None,
    per_sample: Annotated[str | None, typer.Option("--per-sample", help="Write per-sample values to FILE (.npy or .csv).")] = None,
    worst: Annotated[int | None, typer.Option("--worst", help="Show summary statistics and the K worst samples.")] = None,
    chunk_size: Annotated[int | None, typer.Option("--chunk-size", help="Samples per chunk (default: about 64K elements); with --engine dask, rows per partition.")] = None,
    hash_: Annotated[str | None, typer.Option(
        "--hash", help="Digest of each input in the report's provenance: xxh3 (fast, default), sha256 (cryptographic) or none.")] = None,
    engine: Annotated[str | None, typer.Option(
        "--engine", help="local (threads in this process, default) or dask (one state per partition on a dask cluster; pip install 'lossctl[dask]').")] = None,
    scheduler: Annotated[str | None, typer.Option(
        "--scheduler", help="With --engine dask: local[:N] (a local cluster of N processes; default: the core count) or tcp://HOST:PORT.")] = None,
    plugin: Annotated[list[str] | None, typer.Option("--plugin", help="Python file registering custom losses. Repeatable.")] = None,
    fail_above: Annotated[list[str] | None, typer.Option(
        "--fail-above", rich_help_panel=GATES,
        help="LOSS=VALUE: exit 1 if that loss is above VALUE (LOSS as written in --loss, or a bare loss name). Repeatable.")] = None,
    baseline: Annotated[str | None, typer.Option(
        "--baseline", rich_help_panel=GATES, help="An earlier --format json report to compare against.")] = None,
    max_increase: Annotated[list[str] | None, typer.Option(
        "--max-increase", rich_help_panel=GATES,
        help="Tolerated increase over the baseline: X (absolute) or X% (relative); give both to allow the larger. Default: 0 (no increase).")] = None,
    against: Annotated[str | None, typer.Option(
        "--against", rich_help_panel=GATES,
        help="BASE: a baseline model's predictions (PREDS-like path, or an .npz with the same keys), scored on the same targets and compared row by row.")] = None,
    ci: Annotated[bool, typer.Option(
        "--ci", rich_help_panel=GATES, help="Add a confidence interval to each value (and to each --against difference).")] = False,
    confidence: Annotated[float | None, typer.Option(
        "--confidence", rich_help_panel=GATES, help="Confidence level of --ci. Default: 0.95.")] = None,
    ci_method: Annotated[str | None, typer.Option(
        "--ci-method", rich_help_panel=GATES,
        help="auto (clt for means of per-sample values, else jackknife) | clt | jackknife | bootstrap. Default: auto.")] = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", rich_help_panel=GATES, help="Seed of the bootstrap's draws (they depend on row index and seed only). Default: 0.")] = None,
    resamples: Annotated[int | None, typer.Option(
        "--resamples", rich_help_panel=GATES, help="Bootstrap resamples. Default: 1000.")] = None,
    inconclusive: Annotated[str | None, typer.Option(
        "--inconclusive", rich_help_panel=GATES,
        help="pass | fail: what an inconclusive gate (with --ci) does; pass warns. Default: pass.")] = None,
    allow_missing: Annotated[bool, typer.Option(
        "--allow-missing", rich_help_panel=GATES, help="A loss in the baseline but not evaluated now is not a failure.")] = False,
    no_fail: Annotated[bool, typer.Option(
        "--no-fail", rich_help_panel=GATES, help="Report failed gates but exit 0.")] = False,
    github: Annotated[bool, typer.Option(
        "--github", rich_help_panel=GATES,
        help="GitHub Actions: annotations for failed gates and warnings; append the markdown report to $GITHUB_STEP_SUMMARY.")] = False,
    strict: Annotated[bool, typer.Option(
        "--strict", rich_help_panel=GATES, help="Treat warnings (pitfalls, non-finite values) as errors: exit 2.")] = False,
    by: Annotated[str | None, typer.Option(
        "--by", help="PATH[:COL]: one group key per sample (a CSV column of the inputs, or a file): a value per slice, worst first.")] = None,
    min_slice_size: Annotated[int | None, typer.Option(
        "--min-slice-size", help="Slices with fewer samples are reported but not gated. Default: 30.")] = None,
    gate_slices: Annotated[bool, typer.Option(
        "--gate-slices", rich_help_panel=GATES, help="Apply --fail-above to every slice (of at least --min-slice-size samples) too.")] = False,
    report_dir: Annotated[str | None, typer.Option(
        "--report-dir", help="Write a report bundle to DIR: report.json, report.md, report.html, PNG figures (extra 'plot'), manifest.json.")] = None,
    config: Annotated[str | None, typer.Option(
        "--config", rich_help_panel=GATES, help="A scoring YAML file (inputs, losses, gates, baseline); flags override it.")] = None,
) -> int:
    """Compute losses over saved predictions and targets; gate them for CI."""
    flags = dict(locals())  # the parameters by name (first, before any other name is bound here)
    from lossctl.commands._evaluate_impl import run_evaluate

    return run_evaluate(flags)
