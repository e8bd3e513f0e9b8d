"""`lossctl explain NAME`: what a loss is, when to use it, its pitfalls, and its shape."""

from typing import Annotated, Optional

import typer


def explain(
    name: Annotated[str, typer.Argument(help="Loss name or alias (see 'lossctl losses'), or an "
                                        "advisor catalogue id such as tweedie or arcface.")],
    format: Annotated[str, typer.Option("--format", "-f", help="Output format: table or json.",
                                        metavar="table|json")] = "table",
    plot: Annotated[Optional[str], typer.Option("--plot", help="Also draw the loss and its "
                                                "gradient to this PNG (needs matplotlib: the "
                                                "'plot' extra of lossctl).",
                                                metavar="FILE.png")] = None,
) -> int:
    """Explain a loss: formula, properties, when to use it and when not, pitfalls, PyTorch/Keras equivalents, and the shape of the loss and its gradient."""  # noqa: E501
    from lossctl.errors import UsageError

    fmt = format.strip().lower()
    if fmt not in ("table", "json"):
        raise UsageError(f"--format {format!r}: choose table or json")
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError(f"--plot {plot}: drawing a PNG needs matplotlib: install lossctl[plot] "
                             "(pip install 'lossctl[plot]')") from None

    import json

    from lossctl.advisor.explain import lookup, print_explain, to_json
    from lossctl.console import stdout_json

    info = lookup(name)
    if plot is not None:
        if info.get("_curve") is None:
            raise UsageError(f"--plot: {info['name']} has no one-dimensional curve to draw")
        from lossctl.advisor.plot import save_png

        save_png(info["_curve"], f"{info['name']}: loss and gradient", plot)
    if fmt == "json":
        stdout_json(json.dumps(to_json(info), allow_nan=False, indent=2, ensure_ascii=False))
    else:
        print_explain(info)
    if plot is not None and fmt != "json":
        from lossctl.console import note

        note(f"wrote {plot}")
    return 0
