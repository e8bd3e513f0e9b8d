"""`lossctl recommend TASK.yaml`: ranked training losses for a task (SPEC §7)."""

from typing import Annotated, Optional

import typer


def recommend(
    task: Annotated[str, typer.Argument(help="Task description (YAML), e.g. configs/tasks/regression.yaml.",
                                        metavar="TASK.yaml")],
    format: Annotated[str, typer.Option("--format", "-f", help="Output format: table or json.",
                                        metavar="table|json")] = "table",
    top: Annotated[int, typer.Option("--top", "-n", help="Show the N best recommendations.",
                                     metavar="N")] = 5,
    rules: Annotated[Optional[str], typer.Option("--rules", help="Use this rules file instead of "
                                                 "the built-in configs/rules.yaml.",
                                                 metavar="RULES.yaml")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Show the derived and inferred facts "
                                          "and the rules that fired.")] = False,
    why_not: Annotated[Optional[str], typer.Option("--why-not", help="Say what lowered or "
                                                   "excluded this loss.", metavar="LOSS")] = None,
    targets: Annotated[Optional[str], typer.Option("--targets", help="Infer facts from these "
                                                   "targets (.npy, .npz[:KEY], .csv[:COL]).",
                                                   metavar="FILE")] = None,
    preds: Annotated[Optional[str], typer.Option("--preds", help="Infer the head (logits, "
                                                 "probabilities, log-probabilities) from these "
                                                 "predictions.", metavar="FILE")] = None,
) -> int:
    """Recommend training losses for a task described in a YAML file.

    Ranked losses with reasons, references, paste-ready code and pitfalls; facts written in the task file win over facts inferred from --targets/--preds.
    """  # noqa: E501 (one line, so the help text reflows)
    from lossctl.errors import UsageError

    fmt = format.strip().lower()
    if fmt not in ("table", "json"):
        raise UsageError(f"--format {format!r}: choose table or json")
    if top < 1:
        raise UsageError(f"--top {top}: must be at least 1")

    from lossctl.advisor import advise
    from lossctl.advisor.output import print_table, to_json_text
    from lossctl.console import stdout_json

    advice = advise(task, rules_path=rules, targets=targets, preds=preds, top=top)
    if why_not is not None:
        advice.why_not(why_not)  # validate the name before printing anything
    if fmt == "json":
        stdout_json(to_json_text(advice, explain=explain, why_not=why_not))
    else:
        print_table(advice, explain=explain, why_not=why_not)
    return 0
