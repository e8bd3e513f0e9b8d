"""`lossctl evaluate`: compute losses over saved predictions and targets (SPEC §6)."""

from __future__ import annotations

from typing import Annotated

import typer

FORMAT_HELP = "Report format: table, json, csv, markdown or junit."


def evaluate(
    preds: Annotated[str | None, typer.Argument(help="Predictions: .npy, .npz[:KEY], .csv[:COLS] (or an .npz of named inputs).")] = None,
    targets: Annotated[str | None, typer.Argument(help="Targets (optional when the loss takes named inputs).")] = None,
    loss: Annotated[list[str] | None, typer.Option("--loss", "-l", help="Loss expression, e.g. 'huber(delta=0.5)' or 'mse + 2*mae'. Repeatable.")] = None,
    input_: Annotated[list[str] | None, typer.Option("--input", "-i", help="Named input NAME=PATH (anchor, x1, log_probs, ...). Repeatable.")] = None,
    reduction: Annotated[str, typer.Option(help="mean | sum | none (none writes per-sample values).")] = "mean",
    nan_policy: Annotated[str, typer.Option("--nan-policy", help="raise | omit | propagate.")] = "raise",
    format_: Annotated[str, typer.Option("--format", "-f", help=FORMAT_HELP)] = "table",
    output: Annotated[str | None, typer.Option("--output", "-o", help="Also write the report to FILE.")] = None,
    per_sample: Annotated[str | None, typer.Option("--per-sample", help="Write per-sample values to FILE (.npy or .csv).")] = None,
    worst: Annotated[int, typer.Option("--worst", help="Show the K worst samples.")] = 0,
    chunk_size: Annotated[int | None, typer.Option("--chunk-size", help="Samples per chunk (default: about 64K elements).")] = None,
    plugin: Annotated[list[str] | None, typer.Option("--plugin", help="Python file registering custom losses. Repeatable.")] = None,
) -> int:
    """Compute losses over saved predictions and targets."""
    from lossctl.commands._evaluate_impl import run_evaluate

    return run_evaluate(
        preds=preds, targets=targets, losses=loss or [], inputs=input_ or [], reduction=reduction,
        nan_policy=nan_policy, fmt=format_, output=output, per_sample=per_sample, worst=worst,
        chunk_size=chunk_size, plugins=plugin or [],
    )
