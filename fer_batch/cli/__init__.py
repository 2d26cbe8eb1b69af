"""The ``fer-batch`` command line: each command parses options and calls one library function.

This package is the only code that imports Typer. :mod:`~fer_batch.cli.common` holds the app and what every
command shares, :mod:`~fer_batch.cli.analysis` the ``images`` and ``video`` commands, :mod:`~fer_batch.cli.report_command`
``report``, and
:mod:`~fer_batch.cli.train_commands` ``train``, ``evaluate`` and ``quantize``. Library exceptions become exit
codes at this edge (see :class:`fer_batch.errors.ExitCode`); a run's exit code comes from its
:class:`fer_batch.engines.run.RunSummary`.
"""

from __future__ import annotations

# Importing the command modules registers their commands on the app, in the order --help lists them.
from fer_batch.cli import analysis, report_command, train_commands
from fer_batch.cli.analysis import images, video
from fer_batch.cli.common import app
from fer_batch.cli.report_command import report
from fer_batch.cli.train_commands import evaluate, quantize, train

__all__ = ["analysis", "app", "evaluate", "images", "main", "quantize", "report", "report_command", "train",
           "train_commands", "video"]


def main() -> None:
    """Console-script entry point."""
    app(prog_name="fer-batch")  # also under `python -m fer_batch`, so usage lines match the docs
