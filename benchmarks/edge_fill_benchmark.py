"""Faces cut by the photo's edge: which fill of the crop's missing part keeps the label.

    python benchmarks/edge_fill_benchmark.py                      # fast, FER2013 validation, cuts of 20% and 35%
    python benchmarks/edge_fill_benchmark.py --model accurate --cuts 0.1 0.25 0.4

A face near the edge of a photo gets a crop square that reaches outside the image; ``fer_batch.analysis.crops.fill_edges``
fills that part. Each validation crop (already framed as the model's crops are) is cut on one side at a time by a
share of its width or height, as the photo's edge would cut it, then filled back by each :class:`EdgeFill`, and
classified. For each fill the benchmark prints how often the cut face keeps the class of the whole face, and the
accuracy against the FER+ crowd majority (when ``ferplus_labels.csv`` is beside the folder) and the folder
labels, over every side and cut. The whole, uncut faces are the reference row.

Accuracy figures, not speed: the machine's load does not change them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fer_batch.analysis.classify import EmotionClassifier  # noqa: E402
from fer_batch.analysis.crops import EdgeFill, fill_edges  # noqa: E402
from fer_batch.models import resolve_model  # noqa: E402
from fer_batch.training.data import load_image_folder  # noqa: E402
from fer_batch.training.evaluate import image_votes  # noqa: E402
from fer_batch.training.votes import find_vote_file, majority_classes, read_vote_table  # noqa: E402

SIDES = ("left", "right", "top", "bottom")


def cut_and_fill(image: np.ndarray, side: str, pixels: int, fill: EdgeFill) -> np.ndarray:
    """``image`` (H, W) with ``pixels`` rows or columns lost beyond ``side``, grown back by ``fill``."""
    height, width = image.shape
    visible = {"left": image[:, pixels:], "right": image[:, : width - pixels],
               "top": image[pixels:, :], "bottom": image[: height - pixels, :]}[side]
    pads = {"top": 0, "bottom": 0, "left": 0, "right": 0, side: pixels}
    return fill_edges(np.ascontiguousarray(visible), pads["top"], pads["bottom"], pads["left"], pads["right"], fill)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="fast")
    parser.add_argument("--crops", type=Path, default=REPO.parent / "shared" / "data" / "fer2013" / "validation")
    parser.add_argument("--cuts", type=float, nargs="+", default=[0.2, 0.35],
                        help="shares of the crop's side lost beyond the edge")
    args = parser.parse_args()

    classifier = EmotionClassifier.load(resolve_model(args.model))
    data = load_image_folder(args.crops, classifier.input_size, class_names=classifier.class_names)
    vote_file = find_vote_file(args.crops)
    crowd = None
    if vote_file is not None:
        crowd = majority_classes(image_votes(read_vote_table(vote_file), args.crops, data), data.class_names).labels
    whole = classifier.predict_proba(data.images).argmax(axis=1)
    print(f"model {classifier.info.name} ({classifier.precision}) on {len(data)} crops of {args.crops}; "
          f"cuts {', '.join(f'{c:.0%}' for c in args.cuts)} of the side, each side in turn")

    def scores(predicted: np.ndarray, reference: np.ndarray) -> str:
        labels = np.tile(data.labels, len(predicted) // len(data))
        text = f"{(predicted == reference).mean():>10.4f} {(predicted == labels).mean():>10.4f}"
        if crowd is not None:
            majority = np.tile(crowd, len(predicted) // len(data))
            has = majority >= 0
            text += f" {(predicted[has] == majority[has]).mean():>10.4f}"
        return text

    header = f"{'fill':<12} {'same class':>10} {'FER2013':>10}" + (f" {'FER+ maj.':>10}" if crowd is not None else "")
    print(header)
    print(f"{'(uncut)':<12} {scores(whole, whole)}")
    size = data.images.shape[1]
    for fill in EdgeFill:
        cut = [cut_and_fill(image[..., 0], side, max(1, int(round(share * size))), fill)[..., None]
               for share in args.cuts for side in SIDES for image in data.images]
        predicted = classifier.predict_proba(np.stack(cut)).argmax(axis=1)
        print(f"{fill.value:<12} {scores(predicted, np.tile(whole, len(args.cuts) * len(SIDES)))}")


if __name__ == "__main__":
    main()
