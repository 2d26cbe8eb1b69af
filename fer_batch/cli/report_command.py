"""``fer-batch report``: a results file as one self-contained HTML page (:mod:`fer_batch.outputs.report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fer_batch.cli.common import app, choice_of, fail, log, setup_logging
from fer_batch.errors import ExitCode, FerBatchError
from fer_batch.outputs.writers import OutputFormat

# The defaults of fer_batch.outputs.report, repeated here so that --help does not import NumPy and OpenCV
# (tests/test_report.py checks that they are the same).
DEFAULT_MAX_FACES = 24
DEFAULT_UNSURE = 24


@app.command(short_help="A results file as one HTML page: counts, expressions, faces, where the model is unsure.")
def report(
    # The argument is described in the docstring: Typer's Arguments section adds the raw type (<path>).
    results: Annotated[Path, typer.Argument(metavar="RESULTS", hidden=True)],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE", help=(
        "The HTML file to write (replaced if it exists).")),] = Path("report.html"),
    fmt: Annotated[OutputFormat | None, typer.Option(
        "--format", "-f", **choice_of(OutputFormat), show_default=False,
        help="The results file's format; default: from its extension.")] = None,
    max_faces: Annotated[int, typer.Option(min=0, metavar="N", help=(
        "Thumbnails per expression, the most confident first.")),] = DEFAULT_MAX_FACES,
    unsure: Annotated[int, typer.Option(min=0, metavar="N", help=(
        "Faces shown where the model is least sure (smallest margin between its two likeliest "
        "expressions).")),] = DEFAULT_UNSURE,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No info messages.")] = False,
) -> None:
    """Make one self-contained HTML page of a results file of `fer-batch images` or `video`.

    RESULTS: a CSV, JSON, JSON Lines or Parquet file (Parquet needs the parquet extra). The page shows the run at
    a glance (inputs, faces, no-face and error counts, the error rows), the expressions as a bar chart, a gallery
    of face thumbnails per expression, the faces the model is least sure of and, for video, each video's
    emotion-over-time chart and track summaries. Relative sources are found from the current folder: run it
    where the run ran. It needs no network to open: images and charts are inside the file, and it has no
    script. Exit code 1: the page was written, but some sources could not be read for thumbnails (listed on it).
    """
    setup_logging(quiet)
    from fer_batch.outputs.report import build_report  # noqa: PLC0415 - NumPy, OpenCV: not for --help

    try:
        made = build_report(results, out, fmt=fmt, max_faces=max_faces, unsure=unsure)
    except FerBatchError as exc:
        raise fail(exc) from None
    log.info("%s: %s record(s), %s face(s), %d thumbnail(s); wrote %s (%.1f MB) in %.1f s", results,
             f"{made.records:,}", f"{made.faces:,}", made.thumbnails, made.path, made.bytes / 1e6, made.seconds)
    if made.missing_sources:
        shown = ", ".join(made.missing_sources[:3]) + (", ..." if len(made.missing_sources) > 3 else "")
        log.warning("%d source(s) could not be read for thumbnails (listed in the report): %s",
                    len(made.missing_sources), shown)
        raise typer.Exit(int(ExitCode.INPUT_ERRORS))
