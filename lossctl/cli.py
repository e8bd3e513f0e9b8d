"""The thin Typer app: parses the command line, calls the core, and owns the exit codes.

Every command module under ``lossctl.commands`` imports only typer at top level, so
``lossctl --help`` stays free of NumPy, pandas and PyYAML.
"""

from __future__ import annotations

import sys
import traceback
from typing import Annotated, Any

import typer

try:  # typer >= 0.20 vendors click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as click_exc
import typer.core
from typer.core import TyperCommand, TyperGroup

from lossctl.version import __version__
from lossctl.errors import ExitCode, LossctlError

REPORT_URL = "https://github.com/lossctl/lossctl/issues"

# Typer escapes the "[default: ...]"/"[required]" in help for rich whenever rich is installed, even
# with rich_markup_mode=None, which then prints a literal "\[required]" (and imports rich, ~65 ms).
# Help here is plain text: tell typer.core there is no rich to escape for.
typer.core.HAS_RICH = False

#: shown in every command's help; the group strips it from the arguments before parsing
DEBUG_HELP = "Show the traceback of an error (may go anywhere on the command line)."


def _with_debug(params: list[Any]) -> list[Any]:
    """``params`` with ``--debug`` listed before the help option (which click puts last)."""
    try:
        from typer._click import Option
    except ImportError:  # pragma: no cover
        from click import Option
    debug = Option(["--debug"], is_flag=True, expose_value=False, help=DEBUG_HELP)
    return [*params[:-1], debug, params[-1]] if params else [debug]


#: click >= 8.2 raises this (a UsageError carrying the whole help) for no_args_is_help
_NO_ARGS_IS_HELP = getattr(click_exc, "NoArgsIsHelpError", ())


class _LossctlCommand(TyperCommand):
    """A command whose help also lists ``--debug`` (handled by :class:`_LossctlGroup`)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _with_debug(super().get_params(ctx))


#: the signal (SIGTERM, SIGHUP) that stopped the run, if one did: it is handled like Ctrl-C
_SIGNALLED: list[int] = []


def _on_signal(signum: int, frame: Any) -> None:
    """SIGTERM / SIGHUP: unwind like Ctrl-C, so every temporary file is removed on the way out."""
    if _SIGNALLED:  # a second one while cleaning up: the clean-up finishes
        return
    _SIGNALLED.append(signum)
    raise KeyboardInterrupt


def _install_signal_handlers() -> None:
    """Handle SIGTERM and SIGHUP like Ctrl-C (main thread only; a signal someone set to be ignored,
    like nohup's SIGHUP, stays ignored)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is None:  # pragma: no cover - Windows has no SIGHUP
            continue
        try:
            if signal.getsignal(sig) == signal.SIG_DFL:
                signal.signal(sig, _on_signal)
        except (OSError, ValueError):  # pragma: no cover
            pass


def _interrupted() -> int:
    """Say why the run stopped (one ``error:`` line) and return its exit code: 130 for Ctrl-C,
    128 + the signal's number for SIGTERM (143) and SIGHUP (129)."""
    import signal

    from lossctl import console

    if _SIGNALLED:
        signum = _SIGNALLED[0]
        console.error(f"terminated by {signal.Signals(signum).name}")
        return 128 + signum
    console.error("interrupted")
    return int(ExitCode.INTERRUPTED)


class _LossctlGroup(TyperGroup):
    """Runs a command and maps every outcome onto SPEC §2's exit codes and streams."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _with_debug(super().get_params(ctx))

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        args = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in args
        args = [a for a in args if a != "--debug"]
        from lossctl import console

        console.make_stdio_safe()
        _install_signal_handlers()
        try:
            result = super().main(args=args, prog_name=prog_name or "lossctl",
                                  complete_var=complete_var, standalone_mode=False, **extra)
            code = result if isinstance(result, int) else ExitCode.OK
            if code == ExitCode.INTERRUPTED:  # typer turns Ctrl-C into Exit(130) itself
                code = _interrupted()
        except typer.Exit as exc:  # pragma: no cover - click returns it instead
            code = exc.exit_code
        except (typer.Abort, KeyboardInterrupt):
            code = _interrupted()
        except _NO_ARGS_IS_HELP as exc:  # the usage itself, as typer formats it
            sys.stderr.write(exc.format_message().rstrip("\n") + "\n")
            code = ExitCode.USAGE
        except click_exc.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            console.error(f"{exc.format_message()}{hint}")
            code = ExitCode.USAGE
        except click_exc.ClickException as exc:
            console.error(exc.format_message())
            code = ExitCode.USAGE
        except LossctlError as exc:
            if debug:
                traceback.print_exc()
            console.error(exc.for_cli())
            code = exc.exit_code
        except BrokenPipeError:
            code = ExitCode.OK
        except Exception as exc:  # a bug: say so briefly, traceback only on request
            if debug:
                traceback.print_exc()
            console.error(f"internal error: {type(exc).__name__}: {exc}; please report it at "
                          f"{REPORT_URL} (rerun with --debug for the traceback)")
            code = ExitCode.INTERNAL
        if standalone_mode:
            sys.exit(int(code))
        return int(code)


app = typer.Typer(
    cls=_LossctlGroup,
    add_completion=True,  # --install-completion / --show-completion (typer loads its completion code anyway)
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich would add ~70 ms to every `--help`
    help="A loss advisor and evaluator: recommend a loss for a task, compute losses over saved "
         "predictions, and explain what each loss does.",
)


def _version(value: bool) -> None:
    if value:
        print(f"lossctl {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """lossctl: choose, compute and explain training losses. Add --debug anywhere for tracebacks."""


def _register() -> None:
    from lossctl.commands import evaluate, explain, losses, recommend

    class EvaluateCommand(_LossctlCommand, evaluate.EvaluateCommand):
        """``evaluate``: ``--debug`` in its help, and ``-:COL`` taken as an argument."""

    app.command("evaluate", no_args_is_help=True, cls=EvaluateCommand)(evaluate.evaluate)
    app.command("recommend", no_args_is_help=True, cls=_LossctlCommand)(recommend.recommend)
    app.command("losses", cls=_LossctlCommand)(losses.losses)
    app.command("explain", no_args_is_help=True, cls=_LossctlCommand)(explain.explain)


_register()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C outside the command itself (while typer builds it)
        sys.exit(_interrupted())
