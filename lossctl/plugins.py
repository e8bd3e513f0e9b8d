"""Custom losses: load ``--plugin FILE.py`` files and the ``lossctl.losses`` entry point group.

A plugin registers its losses with the same decorator the built-ins use::

    from lossctl.registry import register_loss

    @register_loss("my_loss", formula="...", summary="...", use_when="...", reference="...")
    def my_loss(preds, targets):
        return abs(preds - targets) ** 1.5
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence

from lossctl.errors import UsageError

_loaded: set[str] = set()


def load_plugins(paths: Sequence[str] = ()) -> None:
    import lossctl.losses  # noqa: F401  (built-ins first, so a plugin cannot shadow them by accident)

    _load_entry_points()
    for path in paths:
        _load_file(path)


def _load_file(path: str) -> None:
    full = os.path.abspath(path)
    if full in _loaded:
        return
    if not os.path.isfile(full):
        raise UsageError(f"--plugin {path}: no such file")
    if not full.endswith(".py"):
        raise UsageError(f"--plugin {path}: expected a Python file (.py)")
    name = "lossctl_plugin_" + os.path.splitext(os.path.basename(full))[0]
    spec = importlib.util.spec_from_file_location(name, full)
    if spec is None or spec.loader is None:
        raise UsageError(f"--plugin {path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise UsageError(f"--plugin {path}: failed to load ({type(exc).__name__}: {exc}); "
                         f"fix the plugin file") from None
    _loaded.add(full)


_GROUP = "lossctl.losses"


def _may_have_entry_points() -> bool:
    """Whether some distribution on sys.path may declare the group (a quick look at every
    ``*.dist-info``/``*.egg-info`` ``entry_points.txt``; about 1 ms where importing and running
    ``importlib.metadata`` costs 15). Anything but a plain directory on sys.path (a zip, an egg)
    counts as "may": importlib.metadata then decides."""
    marker = f"[{_GROUP}]".encode()
    for entry in sys.path:
        path = entry or "."
        if not os.path.isdir(path):
            if os.path.exists(path):
                return True
            continue
        try:
            names = os.listdir(path)
        except OSError:
            continue
        for name in names:
            if name.endswith((".dist-info", ".egg-info")):
                try:
                    with open(os.path.join(path, name, "entry_points.txt"), "rb") as fh:
                        if marker in fh.read():
                            return True
                except OSError:
                    pass
    return False


def _load_entry_points() -> None:
    if "<entry-points>" in _loaded:
        return
    _loaded.add("<entry-points>")
    if not _may_have_entry_points():
        return
    from importlib.metadata import entry_points

    for ep in entry_points(group=_GROUP):
        try:
            ep.load()
        except Exception as exc:
            raise UsageError(f"plugin entry point {ep.name!r} ({ep.value}) failed to load: "
                             f"{type(exc).__name__}: {exc}") from None
