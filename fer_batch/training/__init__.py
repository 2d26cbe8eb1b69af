"""Training code for fer-batch models: datasets, recipes, the training loop, evaluation, quantisation.

Imported lazily by ``fer-batch train``, ``evaluate`` and ``quantize``; this file imports nothing, so
``import fer_batch`` and ``fer-batch --help`` stay free of TensorFlow. The tools run as
``python -m fer_batch.training.NAME`` (the package holds no top-level ``training`` module).
"""
