"""Training code for fer-batch models (imported lazily by ``fer-batch train`` and ``evaluate``)."""
