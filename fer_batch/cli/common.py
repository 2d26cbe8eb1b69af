"""What every ``fer-batch`` command shares: the Typer app, logging, the error-to-exit-code edge, common options.

The CLI package (``fer_batch.cli``) is the only code that imports Typer; the commands are in
:mod:`fer_batch.cli.analysis` (``images``, ``video``) and :mod:`fer_batch.cli.train_commands` (``train``,
``evaluate``, ``quantize``). Library exceptions become exit codes here (see :class:`fer_batch.errors.ExitCode`).
"""

from __future__ import annotations

import logging
import os
import sys
from enum import Enum
from typing import Annotated, Any, TypeVar

import typer

from fer_batch import __version__
from fer_batch.analysis.classify import Precision
from fer_batch.errors import FerBatchError, UsageError
from fer_batch.models import shipped_models

app = typer.Typer(
    name="fer-batch",
    help="Facial expression recognition for photo folders and video, in batches.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click's plain help, not rich's panels: rich cuts option names to fit (`--no-class-wei…`) in terminals
    # and pipes of 80 columns, while Click wraps the descriptions and keeps every name whole.
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},  # Click's default is 80 even in a wide terminal
)
log = logging.getLogger("fer_batch")

E = TypeVar("E", bound=Enum)


def choice_of(kind: type[E]) -> dict[str, Any]:
    """``parser=`` and ``metavar=`` for an option that takes one of ``kind``'s values: ``typer.Option(...,
    **choice_of(kind))``.

    A wrong value is told in one plain line (``'foo' is not one of 'yunet', 'mtcnn', 'haar'``), where Typer's
    own check, through pydantic, prefixes ``Value error,``; the help lists the values as ``[a|b|c]``.
    """
    values = [str(member.value) for member in kind]

    def parse(value: object) -> E:
        if isinstance(value, kind):
            return value
        try:
            return kind(value)
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(map(repr, values))}") from None

    return {"parser": parse, "metavar": f"[{'|'.join(values)}]"}


ModelOption = Annotated[str, typer.Option(
    "--model", "-m", metavar="MODEL",
    help=f"A shipped model ({', '.join(shipped_models())}), a .keras file or a training output folder.")]
PrecisionOption = Annotated[Precision, typer.Option(
    **choice_of(Precision),
    help="Network to run: auto (the model's own choice), float32, or int8 (several times faster on a CPU; "
         "made by fer-batch quantize).")]


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"fer-batch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Facial expression recognition for photo folders and video, in batches."""


def setup_logging(quiet: bool, verbose: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("fer-batch: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def given(ctx: typer.Context, name: str) -> bool:
    """Whether the user set option ``name`` (on the command line or through the environment)."""
    source = ctx.get_parameter_source(name)  # by name: Typer's Click is private to it (typer._click)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush at exit cannot fail on the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def missing_extra(command: str, exc: ModuleNotFoundError) -> UsageError:
    """What ``command`` says on an install without the tensorflow extra: the module it lacks, and how to add it."""
    return UsageError(f'{command} needs TensorFlow, Keras and pandas, and this install lacks {exc.name or exc}: '
                      'pip install "fer-batch[tensorflow]" adds them')


def fail(exc: FerBatchError) -> typer.Exit:
    typer.echo(f"fer-batch: error: {exc}", err=True)
    return typer.Exit(int(exc.exit_code))
