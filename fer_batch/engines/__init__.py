"""Engines: a whole run, a frame source through the analysis into the sinks.

``run`` (the local run, :func:`~fer_batch.engines.run.run`, and the :class:`~fer_batch.engines.run.RunSummary`
that gives the exit code), ``ray_engine`` (the same run as Ray tasks), ``options`` (a job's options, as the
commands declare them), ``job`` (:class:`~fer_batch.engines.job.Job`: the whole ``images`` or ``video`` job as
one call). Imports every layer below it: inputs, analysis, outputs and the base modules; only
:mod:`fer_batch.cli` imports it.
"""
