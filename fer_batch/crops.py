"""Face crops framed like the training images: square, with a margin, grayscale, model-sized."""

from __future__ import annotations

import cv2
import numpy as np

from fer_batch.records import Box


def square_crop(
    image_bgr: np.ndarray,
    box: Box,
    size: tuple[int, int] = (48, 48),
    margin: float = 0.2,
    grayscale: bool = True,
) -> np.ndarray:
    """Cut a square around ``box`` and resize it to ``size`` (height, width).

    The square is centred on the box and its side is the box's longer side
    times ``1 + margin``: FER2013 faces fill most of their frame, a little more
    loosely than a detector's box. Parts of the square outside the image are
    filled by replicating the border rather than black, which the model never
    saw in training.
    """
    height, width = image_bgr.shape[:2]
    side = max(box.w, box.h) * (1.0 + margin)
    cx, cy = box.x + box.w / 2.0, box.y + box.h / 2.0
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = max(1, int(round(side)))
    x1, y1 = x0 + s, y0 + s
    src = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY) if grayscale and image_bgr.ndim == 3 else image_bgr
    pad_l, pad_t = max(0, -x0), max(0, -y0)
    pad_r, pad_b = max(0, x1 - width), max(0, y1 - height)
    patch = src[max(0, y0) : min(height, y1), max(0, x0) : min(width, x1)]
    if pad_l or pad_t or pad_r or pad_b:
        patch = cv2.copyMakeBorder(patch, pad_t, pad_b, pad_l, pad_r, cv2.BORDER_REPLICATE)
    out_h, out_w = size
    interp = cv2.INTER_AREA if s > max(out_h, out_w) else cv2.INTER_LINEAR
    return cv2.resize(patch, (out_w, out_h), interpolation=interp)
