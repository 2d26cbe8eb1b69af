"""fer-batch: facial expression recognition for photo collections and video, in batches.

Importing the package is cheap: TensorFlow loads only when a model is used.
"""

from __future__ import annotations

__version__ = "0.1.0"
