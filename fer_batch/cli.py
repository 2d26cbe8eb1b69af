"""The ``fer-batch`` command line: each command parses options and calls one library function.

This is the only module that imports Typer. Library exceptions become exit
codes here (see :class:`fer_batch.errors.ExitCode`).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from fer_batch.errors import ExitCode, FerBatchError

app = typer.Typer(
    name="fer-batch",
    help="Facial expression recognition for photo folders and video, in batches.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("fer_batch")


@app.callback()
def _root() -> None:
    """Facial expression recognition for photo folders and video, in batches."""


def _setup_logging(quiet: bool, verbose: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("fer-batch: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def _fail(exc: FerBatchError) -> typer.Exit:
    typer.echo(f"fer-batch: error: {exc}", err=True)
    return typer.Exit(int(exc.exit_code))


@app.command()
def train(
    dataset: Annotated[Path, typer.Argument(help="Folder with train/<class>/ and validation/<class>/ images.",
                                            exists=True, file_okay=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (model.keras, history, charts).")] = Path(
        "runs/train"),
    recipe: Annotated[str, typer.Option(help="Architecture: compact (fast, default) or vgg.")] = "compact",
    epochs: Annotated[int, typer.Option(min=1)] = 50,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    learning_rate: Annotated[float, typer.Option(min=0.0)] = 1e-3,
    schedule: Annotated[str, typer.Option(help="cosine (decay over all epochs) or constant.")] = "cosine",
    label_smoothing: Annotated[float, typer.Option(min=0.0, max=0.5)] = 0.0,
    class_weights: Annotated[bool, typer.Option(help="Weight the loss by inverse class frequency.")] = False,
    augment: Annotated[bool, typer.Option(help="Random flips, rotations, shifts, zoom, brightness/contrast.")] = True,
    seed: Annotated[int, typer.Option()] = 1337,
    name: Annotated[str, typer.Option(help="Model name stored in the model file.")] = "custom",
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Train an expression classifier; the output folder can be passed to --model."""
    _setup_logging(quiet)
    from training.metrics import format_report  # noqa: PLC0415
    from training.train import TrainConfig, run_training  # noqa: PLC0415

    config = TrainConfig(dataset=dataset, out=out, recipe=recipe, epochs=epochs, batch_size=batch_size,
                         learning_rate=learning_rate, schedule=schedule, label_smoothing=label_smoothing,
                         class_weights=class_weights, augment=augment, seed=seed, name=name)

    def on_epoch(r):  # type: ignore[no-untyped-def]
        m = r.metrics
        log.info("epoch %d/%d  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f  lr %.2e  %.0fs%s",
                 r.epoch, r.epochs, m.get("loss", 0), m.get("accuracy", 0), m.get("val_loss", 0),
                 m.get("val_accuracy", 0), m.get("learning_rate", 0), r.seconds, "  *best" if r.best else "")

    try:
        result = run_training(config, resume=resume, on_epoch=on_epoch)
    except FerBatchError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        log.warning("interrupted; continue with: fer-batch train %s --out %s --resume", dataset, out)
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    if not quiet:
        typer.echo(format_report(result.report), err=True)
    log.info("best epoch %d; model written to %s", result.best_epoch, result.model_path)


def main() -> None:
    """Console-script entry point."""
    app()
