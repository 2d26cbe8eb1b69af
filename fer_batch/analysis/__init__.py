"""Analysis: faces found, framed and classified in frames, and tracked over time.

``detect`` (face detectors), ``crops`` (crop framing), ``classify`` (the batch classifier), ``tracking`` (the
IoU tracker), ``pipeline`` (:class:`~fer_batch.analysis.pipeline.Analyzer`: any frame source detected and
classified in chunks), ``video`` (:class:`~fer_batch.analysis.video.VideoAnalyzer`: chunks, face tracks, scene
cuts). Imports :mod:`fer_batch.inputs` and the base modules; never the outputs or the engines.
"""
