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


def _load_entry_points() -> None:
    if "<entry-points>" in _loaded:
        return
    _loaded.add("<entry-points>")
    from importlib.metadata import entry_points

    for ep in entry_points(group="lossctl.losses"):
        try:
            ep.load()
        except Exception as exc:
            raise UsageError(f"plugin entry point {ep.name!r} ({ep.value}) failed to load: "
                             f"{type(exc).__name__}: {exc}") from None
