"""The ``fffbench`` typer app, and how every command reports a failure: one line, an exit code.

Exit codes: 0 all rows ok or skipped; 1 the run finished but some rows are wrong or errored, or it
stopped on an I/O failure (the line says how to resume); 2 bad input (suite, paths, options);
130 interrupted (finished rows are kept: resume the run).
"""
from __future__ import annotations

import errno
import sys

import typer
from typer.core import TyperGroup

try:  # typer 0.2x carries its own copy of click
    from typer._click import exceptions as cx
except ImportError:  # pragma: no cover - older typer on the click package
    from click import exceptions as cx


class OneLineErrors(TyperGroup):
    """Usage errors (a bad option value, a missing argument) as one line with exit code 2, like every
    other bad input, instead of click's usage box."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
            code = result if isinstance(result, int) else 0
        except getattr(cx, "NoArgsIsHelpError", ()) as e:
            typer.echo(e.ctx.get_help() if e.ctx else str(e))
            code = 0
        except cx.ClickException as e:
            ctx = getattr(e, "ctx", None)
            hint = f" (see: fffbench {ctx.info_name} --help)" if ctx is not None and ctx.parent is not None else ""
            typer.echo(f"error: {e.format_message().replace('Value error, ', '').strip()}{hint}", err=True)
            code = e.exit_code
        except (typer.Exit, getattr(cx, "Exit", typer.Exit)) as e:
            code = e.exit_code
        except (typer.Abort, getattr(cx, "Abort", typer.Abort), KeyboardInterrupt):
            typer.echo("interrupted", err=True)
            code = 130
        if standalone_mode:
            sys.exit(code)
        return code  # pragma: no cover - the console script always runs standalone


def _quiet_argument_types() -> None:
    """An argument named by its metavar (SUITE, RUN_DIR...) needs no type beside it in ``--help``
    (typer prints ``SUITE <path>``); typer versions without the hook are left as they are."""
    cls = getattr(__import__("typer.core", fromlist=["TyperArgument"]), "TyperArgument", None)
    shown = getattr(cls, "display_type_rich", None)
    if shown is not None:
        cls.display_type_rich = lambda self, ctx: "" if self.metavar else shown(self, ctx)


_quiet_argument_types()

app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  context_settings={"max_content_width": 100},
                  help="Honest benchmarks of fast feedforward (FFF) layers against dense FF baselines.")

#: OS errors that mean "this path cannot be used" (bad input, exit 2) rather than an I/O failure
BAD_PATH = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES, errno.EPERM, errno.EROFS,
            errno.ENAMETOOLONG, errno.ELOOP}


def fail(msg: str, code: int = 2):
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def os_error(e: OSError, what: str = "") -> str:
    """``path: reason`` of an OSError, in one line."""
    path = e.filename or what
    return f"{path}: {e.strerror or e}" if path else str(e.strerror or e)


def fail_os(e: OSError, what: str = ""):
    """Exit 2 for a path that cannot be used, 1 for an I/O failure (a full disk, a device error)."""
    fail(os_error(e, what), 2 if e.errno in BAD_PATH else 1)


def version_callback(value: bool):
    if value:
        from fffbench import __version__

        typer.echo(f"fffbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                       help="Print the version and exit.")):
    """Honest benchmarks of fast feedforward (FFF) layers against dense FF baselines."""
