"""Video throughput: analysed frames per second and wall time over video duration, per clip.

    python benchmarks/video_benchmark.py                           # shipped model, ../shared/media/video
    python benchmarks/video_benchmark.py --model runs/x --folder my_clips --detector haar

For each clip, at the default sampling (at most 5 frames per second of video) and with ``--every 1``
(every frame), it times ``VideoAnalyzer.analyze_video`` end to end (decode, detect, crop, classify,
track) after the model and detector have been loaded and warmed up, and then the whole process a user
runs (``fer-batch video CLIP --out FILE.csv``, start-up and model loading included), and prints:

* analysed frames / wall second (warm, in process);
* wall time / video duration, warm and for the whole process: below 1.0 means faster than real time.

Machines are noisy: run it on an idle machine and read the figures as rates, not as test results.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fer_batch.analysis.detect import DEFAULT_DETECTOR, DetectorName  # noqa: E402
from fer_batch.analysis.video import VideoAnalyzer  # noqa: E402
from fer_batch.inputs.video import VIDEO_SUFFIXES, Sampling, VideoReader  # noqa: E402
from fer_batch.models import DEFAULT_MODEL  # noqa: E402
from fer_batch.runtime import cpu_description  # noqa: E402

SETTINGS = {"default (--fps 5)": (Sampling(), []), "--every 1": (Sampling(fps=None, every=1), ["--every", "1"])}


def whole_process(clip: Path, model: str, detector: str, options: list[str]) -> float:
    """Wall seconds of ``fer-batch video CLIP`` as a new process, start-up included."""
    with tempfile.TemporaryDirectory(prefix="fer-batch-video-bench-") as tmp:
        command = [sys.executable, "-m", "fer_batch", "video", str(clip), "--out", f"{tmp}/rows.csv", "--quiet",
                   "--model", model, "--detector", detector, *options]
        began = time.perf_counter()
        subprocess.run(command, check=True, cwd=REPO)
        return time.perf_counter() - began


def clip_duration(path: Path) -> tuple[float, str, np.ndarray]:
    """Decoded duration (last frame time plus one frame), the frame size and the first frame."""
    with VideoReader(path) as reader:
        last, first = 0.0, None
        for frame in reader.frames(Sampling(fps=None, every=1)):
            last = frame.time_s
            first = frame.image if first is None else first
        step = 1.0 / reader.info.nominal_fps if reader.info.nominal_fps else 0.0
        return last + step, f"{reader.info.width}x{reader.info.height}", first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--folder", type=Path, default=REPO.parent / "shared" / "media" / "video")
    parser.add_argument("--detector", default=DEFAULT_DETECTOR.value, choices=[d.value for d in DetectorName])
    parser.add_argument("--clip", action="append", help="Only this clip (file name); repeatable.")
    args = parser.parse_args()
    clips = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES
                   and (not args.clip or p.name in args.clip))
    if not clips:
        sys.exit(f"no video clips in {args.folder}")

    from fer_batch.analysis.pipeline import Analyzer  # noqa: PLC0415

    analyzer = Analyzer(args.model, args.detector)
    print(f"cpu: {cpu_description()}; OpenCV {cv2.__version__}; model {analyzer.classifier.info.name} "
          f"({analyzer.classifier.precision}), detector {args.detector}")
    print(f"{'clip':<28} {'size':>9} {'video s':>8}  {'setting':<18} {'frames':>6} {'faces':>6} "
          f"{'wall s':>7} {'frames/s':>8} {'wall/video':>10} {'process s':>9} {'process/video':>13}")
    for clip in clips:
        duration, size, first = clip_duration(clip)
        analyzer.analyze_arrays([first] * 2)  # warm-up: first allocations for this frame size
        for label, (sampling, options) in SETTINGS.items():
            videos = VideoAnalyzer(analyzer, sampling)
            began = time.perf_counter()
            results = list(videos.analyze_video(clip))
            wall = time.perf_counter() - began
            faces = sum(len(r.faces) for r in results)
            process = whole_process(clip, args.model, args.detector, options)
            print(f"{clip.name:<28} {size:>9} {duration:>8.1f}  {label:<18} {len(results):>6} {faces:>6} "
                  f"{wall:>7.1f} {len(results) / wall:>8.2f} {wall / duration:>10.2f} {process:>9.1f} "
                  f"{process / duration:>13.2f}", flush=True)


if __name__ == "__main__":
    main()
