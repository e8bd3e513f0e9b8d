"""``--format csv``: one row per loss and term (``term`` empty on the row of the whole expression)."""

from __future__ import annotations

import csv
import io
import math

from lossctl.result import Report


def _num(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(float(value))


def render(report: Report, **_: object) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["loss", "term", "weight", "value", "reduction", "passed"])
    for res in report.results:
        writer.writerow([res.loss, "", "", _num(res.value), res.reduction, str(res.passed).lower()])
        if len(res.terms) > 1:
            for t in res.terms:
                writer.writerow([res.loss, t.name, repr(t.weight), _num(t.value), t.reduction, ""])
    return buf.getvalue()
