"""The library's exception hierarchy and the CLI exit codes they map to.

Library code raises these; only the CLI turns them into exit codes, so a
program using the Python API gets ordinary exceptions.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of the ``fer-batch`` command (documented in docs/usage.md, Exit codes)."""

    OK = 0  # every input was read (inputs with no face are not failures)
    INPUT_ERRORS = 1  # the run finished, but one or more inputs could not be read
    USAGE = 2  # bad options or arguments (Typer/Click use 2 as well)
    MODEL = 3  # the model file is missing or not a fer-batch model
    DATASET = 4  # a training/evaluation dataset folder is unusable
    INTERRUPTED = 130  # Ctrl-C: output written so far is valid
    BROKEN_PIPE = 141  # stdout closed by its reader (`| head`): 128 + SIGPIPE, what cat and grep give


class FerBatchError(Exception):
    """Base class for every error fer-batch raises on purpose."""

    exit_code: ExitCode = ExitCode.USAGE


class InputError(FerBatchError):
    """One input (image, video, path) could not be read; the run goes on."""

    exit_code = ExitCode.INPUT_ERRORS


class ModelError(FerBatchError):
    """A model file could not be loaded or lacks fer-batch metadata."""

    exit_code = ExitCode.MODEL


class DatasetError(FerBatchError):
    """A dataset folder does not have the expected ``<split>/<class>/`` layout."""

    exit_code = ExitCode.DATASET


class UsageError(FerBatchError):
    """Options that contradict each other or name something that does not exist."""

    exit_code = ExitCode.USAGE
