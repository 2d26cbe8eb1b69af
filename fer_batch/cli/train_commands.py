"""``fer-batch train``, ``evaluate`` and ``quantize``: each parses its options and calls one library function."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from fer_batch.analysis.classify import DEFAULT_BATCH_SIZE, Precision, runs_float32
from fer_batch.cli.common import (
    ModelOption,
    PrecisionOption,
    app,
    choice_of,
    fail,
    given,
    log,
    missing_extra,
    setup_logging,
)
from fer_batch.errors import ExitCode, FerBatchError
from fer_batch.inputs.images import IMAGE_SUFFIXES
from fer_batch.model_file import require_float32
from fer_batch.models import DEFAULT_MODEL, resolve_model
from fer_batch.runtime import load_backend
from fer_batch.training.options import (
    DefaultPrecision,
    Optimizer,
    Recipe,
    Schedule,
    Selection,
    TrainConfig,
    check_precision,
    config_from_json,
)


@app.command(short_help="Train an expression classifier on a folder dataset.")
def train(
    ctx: typer.Context,
    # Every parameter but --resume and --quiet is the TrainConfig field of its name, whose default it takes.
    dataset: Annotated[Path, typer.Argument(metavar="DATASET", exists=True, file_okay=False,
                                            help="Folder with train/<class>/ and validation/<class>/ images.")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR",
                                      help="Output folder (model.keras, history, charts).")] = Path("runs/train"),
    recipe: Annotated[Recipe, typer.Option(**choice_of(Recipe), help="Architecture: compact (quickest to train; the "
                                                                     "default), wide, vgg or resnet.")
                      ] = TrainConfig.recipe,
    epochs: Annotated[int, typer.Option(min=1, metavar="N", help=(
        "Passes over the training images; the epoch with the best validation accuracy is kept."))
    ] = TrainConfig.epochs,
    batch_size: Annotated[int, typer.Option(min=1, metavar="N", help="Training images per step.")
                          ] = TrainConfig.batch_size,
    learning_rate: Annotated[float, typer.Option(min=0.0, metavar="RATE",
                                                 help="Learning rate at the start (see --schedule).")
                             ] = TrainConfig.learning_rate,
    schedule: Annotated[Schedule, typer.Option(**choice_of(Schedule), help=(
        "cosine (decay to 1% over all epochs), constant, or plateau (halve after 3 epochs without a lower "
        "validation loss)."))] = TrainConfig.schedule,
    optimizer: Annotated[Optimizer, typer.Option(**choice_of(Optimizer),
                                                 help="adam, adamw, or sgd (Nesterov momentum 0.9).")
                         ] = TrainConfig.optimizer,
    weight_decay: Annotated[float, typer.Option(min=0.0, metavar="RATE",
                                                help="Decoupled weight decay (any optimizer).")
                            ] = TrainConfig.weight_decay,
    label_smoothing: Annotated[float, typer.Option(min=0.0, max=0.5, metavar="SHARE", help=(
        "Move this share of each target's probability evenly onto all classes (0: off)."))
    ] = TrainConfig.label_smoothing,
    class_weights: Annotated[bool, typer.Option(help="Weight the loss by inverse class frequency.")
                             ] = TrainConfig.class_weights,
    class_weight_power: Annotated[float, typer.Option(min=0.0, max=1.0, metavar="POWER", help=(
        "With --class-weights: raise the inverse class frequency to this power (1: full balance, 0.5: its square "
        "root, a milder one)."))] = TrainConfig.class_weight_power,
    augment: Annotated[bool, typer.Option(help="Random flips, rotations, shifts, zoom, brightness/contrast.")
                       ] = TrainConfig.augment,
    random_erasing: Annotated[float, typer.Option(
        min=0.0, max=1.0, metavar="SHARE",
        help="With --augment: share of images with one random patch replaced by noise.")
                              ] = TrainConfig.random_erasing,
    crop_padding: Annotated[int, typer.Option(
        min=0, metavar="PIXELS",
        help="With --augment: zero-pad by this many pixels, then crop back at a random position.")
                            ] = TrainConfig.crop_padding,
    seed: Annotated[int, typer.Option(metavar="N", help=(
        "Seeds the new network's weights and, with --name, each epoch's shuffle and augmentation."))
    ] = TrainConfig.seed,
    name: Annotated[str, typer.Option(metavar="NAME", help=(
        "Model name stored in the model file; it also seeds each epoch's shuffle and augmentation, so give a "
        "fine-tune its own."))] = TrainConfig.name,
    init_from: Annotated[str | None, typer.Option(metavar="MODEL", help=(
        "Fine-tune this model (fast, a .keras file or a training folder; not accurate, which holds int8 only: "
        "python -m fer_batch.training.dequantize rebuilds its networks) instead of a new --recipe."))] = None,
    ferplus_weight: Annotated[float, typer.Option(
        min=0.0, max=1.0, metavar="WEIGHT", help="Blend this much of the FER+ vote distribution "
                                                 "(DATASET/ferplus_labels.csv) into each training target.")
                              ] = TrainConfig.ferplus_weight,
    drop_non_faces: Annotated[bool, typer.Option(
        help="Leave out training images that FER+ annotators marked as not a face.")] = TrainConfig.drop_non_faces,
    flip_average: Annotated[bool, typer.Option(
        help="Store in the model that inference averages each face with its mirror image (twice the cost).")
                            ] = TrainConfig.flip_average,
    teachers: Annotated[list[str] | None, typer.Option(
        "--teacher", metavar="MODEL", help="Distil from this model (shipped name, .keras file or training folder): "
                                           "blend its probabilities into the targets. Repeat for an ensemble of "
                                           "teachers.")] = None,
    teacher_weight: Annotated[float, typer.Option(min=0.0, max=1.0, metavar="WEIGHT",
                                                  help="Share of the teacher in each target.")
                              ] = TrainConfig.teacher_weight,
    mixed_precision: Annotated[bool, typer.Option(
        help="Compute in bfloat16 with float32 weights: faster on CPUs with bfloat16 instructions and on GPUs. "
             "The saved model is float32.")] = TrainConfig.mixed_precision,
    select_by: Annotated[Selection, typer.Option(**choice_of(Selection),
        help="Which validation score picks the epoch kept as model.keras: accuracy against the folder labels, or "
             "against the FER+ crowd majority (DATASET/ferplus_labels.csv).")] = TrainConfig.select_by,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No info messages and no validation report.")] = False,
) -> None:
    """Train an expression classifier; the output folder can be passed to --model."""
    setup_logging(quiet)
    # TrainConfig turns the names of paths and choices into Path and enum values.
    config = TrainConfig(**{key: value for key, value in ctx.params.items() if key not in ("resume", "quiet")})

    def on_epoch(r):  # type: ignore[no-untyped-def]
        m = r.metrics
        log.info("epoch %d/%d  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f  lr %.2e  %.0fs%s",
                 r.epoch, r.epochs, m.get("loss", 0), m.get("accuracy", 0), m.get("val_loss", 0),
                 m.get("val_accuracy", 0), m.get("learning_rate", 0), r.seconds, "  *best" if r.best else "")

    try:
        from fer_batch.training.metrics import format_crowd_report, format_report  # noqa: PLC0415
        from fer_batch.training.train import run_training  # noqa: PLC0415

        plan = _training_plan(config, resume)
        if plan:
            log.info("%s", plan)  # at once: the first epoch can take minutes, and TensorFlow seconds to load
        _warn_training_options(ctx, config, resume)
        load_backend()
        result = run_training(config, resume=resume, on_epoch=on_epoch)
    except ModuleNotFoundError as exc:  # an install without the tensorflow extra (Keras, pandas...)
        raise fail(missing_extra("train", exc)) from None
    except FerBatchError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        log.warning("interrupted; continue with: fer-batch train %s --out %s --resume", dataset, out)
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    if not quiet:  # on stderr: train's product is the model file; the report describes it
        typer.echo(f"validation report of {result.model_path} (epoch {result.best_epoch}):", err=True)
        typer.echo(format_report(result.report), err=True)
        if "ferplus" in result.report:
            typer.echo("against the FER+ crowd votes:", err=True)
            typer.echo(format_crowd_report(result.report["ferplus"]), err=True)
    log.info("best epoch %d; model written to %s", result.best_epoch, result.model_path)


def _warn_training_options(ctx: typer.Context, config: TrainConfig, resume: bool) -> None:
    """One warning for each group of options that do nothing in this run."""
    flags = {param.name: param.opts[0] for param in ctx.command.params}  # the option of each parameter
    if resume:
        ignored = [flags[name] for name in ctx.params
                   if name not in ("dataset", "out", "resume", "quiet") and given(ctx, name)]
        if ignored:
            log.warning("--resume continues with the options the run was started with; ignored: %s",
                        ", ".join(ignored))
        return
    if not config.augment:
        ignored = [flags[name] for name in ("random_erasing", "crop_padding") if given(ctx, name)]
        if ignored:
            log.warning("%s %s only with --augment; ignored with --no-augment", " and ".join(ignored),
                        "applies" if len(ignored) == 1 else "apply")
    if not config.teachers and given(ctx, "teacher_weight"):
        log.warning("--teacher-weight does nothing without --teacher; ignored")
    if config.init_from is not None and given(ctx, "recipe"):
        log.warning("--init-from keeps the architecture of the model it starts from; --recipe is ignored")


def _count_split(split_dir: Path) -> tuple[int, list[str]]:
    """Images and class folders of one dataset split, by their names alone (no decoding)."""
    if not split_dir.is_dir():
        return 0, []
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    images = sum(1 for name in classes for entry in os.scandir(split_dir / name)
                 if Path(entry.name).suffix.lower() in IMAGE_SUFFIXES)
    return images, classes


def _training_plan(config: TrainConfig, resume: bool) -> str | None:
    """What ``train`` is about to do, in one line; None when training is about to refuse (it says why)."""
    from fer_batch.training.data import TRAIN_SPLIT, VALIDATION_SPLIT  # noqa: PLC0415
    from fer_batch.training.train import load_state  # noqa: PLC0415

    start = ""
    if resume:
        state = load_state(config.out)
        if not state:
            return None
        config = config_from_json(state["config"])
        start = f"resuming the run in {config.out} after epoch {state['epochs_done']}, with its saved options: "
    train_images, classes = _count_split(Path(config.dataset) / TRAIN_SPLIT)
    val_images, _ = _count_split(Path(config.dataset) / VALIDATION_SPLIT)
    if not (train_images and val_images):
        return None
    shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
    model = f"fine-tuning {config.init_from}" if config.init_from else f"training recipe {config.recipe}"
    teachers = (f", distilling from {', '.join(map(str, config.teachers))} (weight {config.teacher_weight:g})"
                if config.teachers else "")
    return (f"{start}{model} on {config.dataset}: {train_images:,} training and {val_images:,} validation images, "
            f"{len(classes)} classes ({shown}); {config.epochs} epochs at batch size {config.batch_size}, "
            f"{config.optimizer} at {config.learning_rate:g} ({config.schedule}), augmentation "
            f"{'on' if config.augment else 'off'}{teachers}; writing {config.out}")


@app.command(short_help="Score a model on labelled face crops.")
def evaluate(
    # The argument is described in the docstring: Typer's Arguments section adds the raw type (<path>).
    data: Annotated[Path, typer.Argument(metavar="DIR", hidden=True, exists=True, file_okay=False)],
    model: ModelOption = DEFAULT_MODEL,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR",
                                      help="Report folder (metrics.json, confusion_matrix.png and, with crowd "
                                           "votes, confusion_matrix_ferplus.png).")] = Path("evaluation"),
    batch_size: Annotated[int, typer.Option(min=1, metavar="N", help="Faces per classifier call.")
                          ] = DEFAULT_BATCH_SIZE,
    precision: PrecisionOption = Precision.AUTO,
    votes: Annotated[Path | None, typer.Option(
        help="FER+ crowd votes for the images (a ferplus_labels.csv). Default: ferplus_labels.csv in DIR or "
             "its parent, when there is one.", exists=True, dir_okay=False, metavar="FILE")] = None,
) -> None:
    """Score a model on labelled face crops: accuracy, macro F1, per-class metrics, confusion matrix.

    DIR: a folder of labelled face crops, DIR/<class>/*.png. With FER+ crowd votes for them (--votes, or
    ferplus_labels.csv in DIR or its parent), also scored against the annotators: majority accuracy, annotator
    agreement, cross-entropy and calibration error, and a second confusion matrix against the crowd's majority.
    """
    setup_logging(False)
    from fer_batch.training.evaluate import evaluate_folder  # noqa: PLC0415
    from fer_batch.training.metrics import format_crowd_report, format_report  # noqa: PLC0415

    try:
        model_path = resolve_model(model)  # before TensorFlow loads: a wrong name is reported at once
        if runs_float32(model_path, precision):  # an int8 network runs on LiteRT, without TensorFlow
            load_backend()
        result = evaluate_folder(data, model_path, out, batch_size=batch_size, precision=precision.value,
                                 votes=votes)
    except FerBatchError as exc:
        raise fail(exc) from None
    # On stdout: the scores are evaluate's data. The heading says which model (and network) was scored.
    report = result.report
    typer.echo(f"model {report['model_name']} ({model_path}, {report['precision']}) on {data}:")
    typer.echo("against the folder labels:")
    typer.echo(format_report(report))
    if "ferplus" in report:
        typer.echo(f"against the FER+ crowd votes ({report['votes']}):")
        typer.echo(format_crowd_report(report["ferplus"]))
    charts = [p for p in (result.confusion_path, result.crowd_confusion_path) if p is not None]
    log.info("report written to %s and %s", result.metrics_path, " and ".join(map(str, charts)))


@app.command(short_help="Add an int8 network to a model and measure what it costs.")
def quantize(
    # The arguments are described in the docstring: Typer's Arguments section adds the raw type (<str>).
    model: Annotated[str, typer.Argument(metavar="MODEL", hidden=True)],
    dataset: Annotated[Path, typer.Argument(metavar="DATASET", hidden=True, exists=True, file_okay=False)],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE", dir_okay=False,
                                      help="The new model file (.keras).")],
    precision: Annotated[DefaultPrecision, typer.Option(**choice_of(DefaultPrecision),
                                                        help="What the new file runs by default: int8 or float32.")
                         ] = DefaultPrecision.INT8,
    flip_average: Annotated[bool | None, typer.Option(
        help="Average each face with its mirror image at inference (default: as the source model).")] = None,
    name: Annotated[str | None, typer.Option(metavar="NAME",
                                             help="Model name stored in the file (default: the source's).")
                 ] = None,
    calibration_images: Annotated[int, typer.Option(min=1, metavar="N",
                                                    help="Training images used to measure activation ranges.")
                                  ] = 500,
    seed: Annotated[int, typer.Option(metavar="N", help="Seeds the draw of the calibration images.")] = 1337,
    int8_only: Annotated[bool, typer.Option(
        help="Leave the float32 network out of the new file (a fraction of the size; it then runs at int8 only).")
    ] = False,
) -> None:
    """Add an int8 copy of a model's network (several times faster on a CPU) and measure what it costs.

    MODEL: the model to quantise: fast, a .keras file or a training output folder (not accurate, which holds
    int8 only). DATASET: a folder with train/<class>/ (calibration images) and, optionally, validation/<class>/
    (to measure the cost in accuracy).
    """
    setup_logging(False)
    try:
        model_path = resolve_model(model)  # before TensorFlow loads: a wrong name is reported at once
        check_precision(precision, int8_only)  # and so are these mistakes
        require_float32(model_path)
        load_backend()
        from fer_batch.training.quantize import quantize_model  # noqa: PLC0415 - imports Keras

        result = quantize_model(model_path, dataset, out, name=name, precision=precision,
                                flip_average=flip_average, calibration_images=calibration_images, seed=seed,
                                int8_only=int8_only)
    except ModuleNotFoundError as exc:  # an install without the tensorflow extra
        raise fail(missing_extra("quantize", exc)) from None
    except FerBatchError as exc:
        raise fail(exc) from None
    log.info("int8 network: %.0f kB, calibrated on %d training images; written to %s (%.1f MB%s)",
             result.int8_bytes / 1024, result.info.training["quantized"]["calibration_images"], result.path,
             result.path.stat().st_size / 1e6, ", int8 only" if int8_only else "")
    if result.int8_accuracy is not None:  # on stderr: quantize's product is the model file
        typer.echo(f"validation accuracy: float32 {result.float32_accuracy:.4f}, int8 {result.int8_accuracy:.4f}; "
                   f"same class for {result.agreement:.1%} of images", err=True)
