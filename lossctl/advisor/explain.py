"""``lossctl explain NAME``: a registered loss's formula, defaults, knowledge and curve (all from the
registry: see lossctl.knowledge), or an advisor catalogue entry."""

from __future__ import annotations

from typing import Any

from lossctl.errors import UsageError


def _registry_spec(name: str):
    """(spec, None) if the registry knows ``name``, else (None, the registry's error)."""
    try:
        import lossctl.losses  # noqa: F401  (populates the registry)
        from lossctl.registry import get_spec
    except ImportError as exc:  # pragma: no cover - the registry is part of lossctl
        return None, exc
    try:
        return get_spec(name), None
    except Exception as exc:  # ExprError with a did-you-mean
        return None, exc


def lookup(name: str) -> dict[str, Any]:
    """Everything known about ``name`` (a lossctl loss or alias, or an advisor catalogue id)."""
    from lossctl.knowledge import curve_data

    spec, err = _registry_spec(name)
    if spec is not None:
        k = spec.knowledge
        params = {p.name: p.default for p in spec.params}
        info: dict[str, Any] = {
            "name": spec.name,
            "aliases": list(spec.aliases),
            "family": spec.family,
            "evaluable": True,
            "formula": spec.formula,
            "summary": spec.summary,
            "params": [{"name": p.name, "default": _jsonable(p.default), "doc": p.doc}
                       for p in spec.params],
            "use_when": [spec.use_when] if spec.use_when else [],
            "avoid_when": list(k.avoid_when) if k else [],
            "properties": list(k.properties) if k else [],
            "pitfalls": list(k.pitfalls) if k else [],
            "pytorch": k.pytorch if k else "",
            "keras": k.keras if k else "",
            "references": [spec.reference] if spec.reference else [],
        }
        info["recommended_by"] = _recommended_by(spec.name)
        info["_curve"] = curve_data(k, params)
        return info
    entry = _catalogue_entry(name)
    if entry is not None:
        rs, e = entry
        from lossctl.advisor.rules import render, render_code, resolve_params, _ref

        params = resolve_params(e.params, {})
        loss, evaluable = render(e, params)
        code = render_code(e, params, "any")
        return {
            "name": e.id, "aliases": [], "family": "advisor catalogue", "evaluable": evaluable,
            "formula": "", "summary": f"{e.name}: {loss}",
            "params": [{"name": k, "default": _jsonable(getattr(v, "hint", v)), "doc": ""}
                       for k, v in params.items()],
            "use_when": _use_when(rs, e.id), "avoid_when": [], "properties": [], "pitfalls": [],
            "pytorch": code.get("pytorch", ""), "keras": code.get("keras", ""),
            "code": code, "references": [_ref(rs, r) for r in e.refs], "_curve": None,
        }
    from lossctl.words import did_you_mean
    from lossctl.registry import all_specs

    known = [s.name for s in all_specs()] + _catalogue_ids()
    hint = did_you_mean(name.lower(), known)
    raise UsageError(f"explain: unknown loss {name!r}{hint}; run 'lossctl losses' for the "
                     "losses lossctl computes")


def _catalogue_ids() -> list[str]:
    try:
        from lossctl.advisor.rules import load_rules

        return list(load_rules().losses)
    except Exception:  # a broken rules file must not break explain
        return []


def _catalogue_entry(name: str):
    try:
        from lossctl.advisor.rules import load_rules

        rs = load_rules()
    except Exception:
        return None
    key = name.strip().lower()
    if key in rs.losses:
        return rs, rs.losses[key]
    return None


def _recommended_by(name: str) -> list[str]:
    """Advisor rules that put ``name`` (alone, as the catalogue's plain call) on a shortlist."""
    try:
        from lossctl.advisor.rules import load_rules

        rs = load_rules()
    except Exception:
        return []
    from lossctl.advisor.catalogue import registry_name

    ids = {lid for lid, e in rs.losses.items() if lid == name or (e.call and registry_name(e.call) == name)}
    out = []
    for r in rs.rules:
        if any(c.loss in ids and c.score > 0 for c in r.recommend):
            out.append(f"{r.id} {r.title}")
    return out


def _use_when(rs, lid: str) -> list[str]:
    out = []
    for r in rs.rules:
        for c in r.recommend:
            if c.loss == lid and c.score > 0:
                out.append(f"{r.title} ({r.id}): {c.reason}")
    return out


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return str(v)


def to_json(info: dict[str, Any], points: int = 41) -> dict[str, Any]:
    import numpy as np

    out = {k: v for k, v in info.items() if not k.startswith("_")}
    curve = info.get("_curve")
    if curve is not None:
        idx = np.linspace(0, len(curve["x"]) - 1, points).round().astype(int)

        def clean(a):
            return [float(v) if np.isfinite(v) else None for v in np.asarray(a)[idx]]

        out["curve"] = {"x_label": curve["x_label"], "x": clean(curve["x"]), "note": curve["note"],
                        "series": [{"label": s["label"], "loss": clean(s["loss"]),
                                    "grad": clean(s["grad"])} for s in curve["series"]]}
    else:
        out["curve"] = None
    return out


def print_explain(info: dict[str, Any], file=None) -> None:
    from rich.markup import escape

    from lossctl.advisor.output import _console
    from lossctl.advisor.plot import text_plot

    con = _console(file)
    head = f"[bold]{escape(info['name'])}[/]"
    if info["aliases"]:
        head += f"  [dim](aliases: {escape(', '.join(info['aliases']))})[/]"
    head += f"  [dim]family: {escape(info['family'])}[/]"
    if not info["evaluable"]:
        head += "  [yellow]not computed by lossctl evaluate[/]"
    con.print(head)
    if info["summary"]:
        con.print(escape(info["summary"]))
    if info["formula"]:
        con.print(f"\n[bold]Formula[/]  {escape(info['formula'])}")
    if info["params"]:
        con.print("[bold]Parameters[/]")
        for p in info["params"]:
            d = p["default"]
            d = "true" if d is True else "false" if d is False else "none" if d is None else d
            doc = f"  [dim]{escape(p['doc'])}[/]" if p["doc"] else ""
            con.print(f"  {escape(p['name'])} = {escape(str(d))}{doc}")

    def section(title: str, items: list[str]) -> None:
        if items:
            con.print(f"[bold]{title}[/]")
            for it in items:
                con.print(f"  - {escape(it)}")

    section("Properties", info["properties"])
    section("Use when", info["use_when"])
    section("Avoid when", info["avoid_when"])
    section("Pitfalls", info["pitfalls"])
    if info.get("code"):
        con.print("[bold]Code[/]")
        for fw, code in info["code"].items():
            con.print(f"  {fw}: " + escape(code.replace("\n", "\n    ")))
    else:
        if info["pytorch"]:
            con.print(f"[bold]PyTorch[/]  {escape(info['pytorch'])}")
        if info["keras"]:
            con.print(f"[bold]Keras[/]    {escape(info['keras'])}")
    section("References", info["references"])
    if info.get("recommended_by"):
        con.print("[bold]Recommended by rules[/] "
                  + escape(", ".join(r.split()[0] for r in info["recommended_by"]))
                  + " [dim](configs/rules.yaml)[/]")
    curve = info.get("_curve")
    if curve is not None:
        con.print("")
        for line in text_plot(curve):
            con.print(escape(line), overflow="ignore", crop=False)
    elif info["evaluable"]:
        con.print("\n[dim](no one-dimensional curve to draw for this loss)[/]")
