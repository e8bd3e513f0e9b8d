"""``--report-dir DIR``: the report bundle (SPEC §10).

DIR gets ``report.json`` (as ``--format json``), ``report.md`` (the markdown report, at most 65,536
characters, GitHub's comment limit: longer content is cut with a visible note), a self-contained
``report.html`` (figures inline as ``data:`` URIs; no external URL of any kind), the PNG figures
(:mod:`lossctl.report.figures`, extra ``plot``; without matplotlib there are none, and report.md,
report.html and the manifest say so) and ``manifest.json``: every other file with its size in bytes
and its sha256. Every file is written atomically (:func:`lossctl.userfiles.write_atomic`).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
from typing import Any

from lossctl.errors import UsageError
from lossctl.report import json_report, markdown
from lossctl.result import Report

MAX_MARKDOWN = 65_536  # characters: GitHub's limit for a comment
CUT_NOTE = ("\n\n> **Note: this report was cut** to stay within 65,536 characters (GitHub's comment limit); "
            "report.json and report.html in the bundle have everything.\n")
NO_PLOT = "no figures: matplotlib is not installed (pip install 'lossctl[plot]')"


def check_dir(path: str) -> None:
    """``--report-dir``: an existing path that is not a directory is a usage error (before any work)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--report-dir {path}: exists and is not a directory; give a directory "
                         f"(it is created if missing)")


def fit_markdown(text: str, limit: int = MAX_MARKDOWN) -> str:
    """``text`` if it has at most ``limit`` characters, else its head (whole lines) and :data:`CUT_NOTE`."""
    if len(text) <= limit:
        return text
    head = text[: limit - len(CUT_NOTE)]
    head = head.rsplit("\n", 1)[0] if "\n" in head else head
    return head + CUT_NOTE


def write_bundle(report: Report, directory: str) -> dict[str, Any]:
    """Write the bundle into ``directory`` (created if missing); returns the manifest."""
    from lossctl.userfiles import write_atomic

    check_dir(directory)
    doc = json_report.report_dict(report)
    try:
        from lossctl.report.figures import make_figures

        figures, notes = make_figures(report, doc)
        plot_note = None
    except ImportError:
        figures, notes, plot_note = [], [], NO_PLOT
    md = markdown.render(report)
    md += "\n**Figures**\n\n"
    md += "".join(f"- {f.title}: `{f.name}`\n" for f in figures)
    md += "".join(f"- {n}\n" for n in ([plot_note] if plot_note else notes))
    files: dict[str, bytes] = {
        "report.json": (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode("utf-8"),
        "report.md": fit_markdown(md).encode("utf-8"),
        "report.html": _html(report, doc, figures, [plot_note] if plot_note else notes).encode("utf-8"),
    }
    files.update({f.name: f.png for f in figures})
    manifest = {"lossctl_version": report.version, "figures": bool(figures),
                **({"note": plot_note} if plot_note else {}),
                "files": [{"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                          for name, data in files.items()]}
    files["manifest.json"] = (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
    for name, data in files.items():
        write_atomic(os.path.join(directory, name), data, f"--report-dir {directory}: {name}")
    return manifest


def _html(report: Report, doc: dict[str, Any], figures: list[Any], notes: list[str]) -> str:
    """One self-contained page: the results, the worst slices, the figures inline, the notes."""
    e = html.escape
    rows = []
    for r in doc["results"]:
        ci = r.get("ci") or {}
        interval = f"[{markdown.num(ci.get('low'))}, {markdown.num(ci.get('high'))}]" if ci else "—"
        status = "—" if not r["checks"] and not any(s["checks"] for s in r.get("slices") or ()) else (
            "pass" if r["passed"] else "FAIL")
        rows.append(f"<tr><td><code>{e(r['loss'])}</code></td><td>{e(markdown.num(r['value']))}</td>"
                    f"<td>{e(interval)}</td><td>{r['samples']}</td><td>{status}</td></tr>")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>lossctl report</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child{text-align:left}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>lossctl report: {'passed' if report.passed else 'FAILED'}</h1>",
        "<table><tr><th>loss</th><th>value</th><th>interval</th><th>samples</th><th>gates</th></tr>",
        *rows, "</table>",
    ]
    for r in doc["results"]:
        if not r.get("slices"):
            continue
        shown = r["slices"][: markdown.MAX_SLICES]
        parts.append(f"<h2>Worst slices of <code>{e(r['loss'])}</code> ({len(r['slices'])} slices)</h2>")
        parts.append("<table><tr><th>key</th><th>samples</th><th>value</th><th>interval</th><th>gates</th></tr>")
        for s in shown:
            key = "(missing)" if s["key"] is None else str(s["key"])
            gate = ("pass" if all(c["passed"] for c in s["checks"]) else "FAIL") if s["checks"] else (
                "not gated (small)" if not s["gated"] else "—")
            parts.append(f"<tr><td>{e(key)}</td><td>{s['samples']}</td><td>{e(markdown.num(s['value']))}</td>"
                         f"<td>{e(markdown.slice_interval_text(s.get('ci')))}</td><td>{gate}</td></tr>")
        parts.append("</table>")
        if len(r["slices"]) > len(shown):
            parts.append(f"<p>… {len(r['slices']) - len(shown)} more slices in report.json.</p>")
    for f in figures:
        data = base64.b64encode(f.png).decode("ascii")
        parts.append(f"<h2>{e(f.title)}</h2><img alt=\"{e(f.title)}\" src=\"data:image/png;base64,{data}\">")
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    parts.append(f"<p><small>lossctl {e(report.version)}</small></p></body></html>")
    return "\n".join(parts) + "\n"
