"""Outputs: what a run's records become.

``writers`` (CSV, JSON, JSON Lines, Parquet), ``summary`` (per-track series and summaries), ``charts``
(emotion-over-time charts), ``sinks`` (what receives each record: rows, progress, charts, track summaries),
``annotate`` (annotated copies and the ``--show`` window), ``resume`` (finishing an output a stopped run
left). Imports :mod:`fer_batch.inputs` and the base modules; never the analysis or the engines.
"""
