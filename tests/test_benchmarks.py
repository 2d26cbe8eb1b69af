"""The benchmark aids work: the AVX2 limit on LiteRT's kernels, and the classification benchmark's runtime lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


needs_avx2 = pytest.mark.skipif("avx2" not in _cpu_flags(), reason="needs an x86 CPU with AVX2 (Linux)")

# Classes and probabilities of the `fast` network for fixed crops, with or without the AVX2 limit (own process:
# the limit must come before any network loads, and lasts for the process).
_CLASSIFY = """
import json, sys
import numpy as np
sys.path.insert(0, {benchmarks!r})
note = None
if sys.argv[1] == "avx2":
    from xnnpack_isa import limit_to_avx2
    note = limit_to_avx2()
from fer_batch.analysis.classify import EmotionClassifier
from fer_batch.models import resolve_model
clf = EmotionClassifier.load(resolve_model("fast"), precision="int8")
crops = np.random.default_rng(3).integers(0, 256, (64, 48, 48, 1), dtype=np.uint8)
probs = clf.predict_proba(crops)
print(json.dumps({{"note": note, "classes": probs.argmax(1).tolist(), "probs": probs.tolist()}}))
"""


def _classify(mode: str) -> dict:
    script = _CLASSIFY.format(benchmarks=str(BENCHMARKS))
    done = subprocess.run([sys.executable, "-c", script, mode], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_avx2
def test_the_avx2_limit_clears_every_level_above_avx2_and_keeps_the_results() -> None:
    native, limited = _classify("native"), _classify("avx2")
    assert native["note"] is None
    before, after = limited["note"].split("flags ")[1].rstrip(")").split(" -> ")
    assert int(after, 16) == 0xFF  # SSSE3 .. AVX2 and FMA3 only
    if "avx512f" in _cpu_flags():
        assert int(before, 16) > 0xFF  # an AVX-512 CPU had levels above AVX2 to clear
    # Other kernels, same int8 arithmetic: the same classes, probabilities equal within float rounding.
    assert limited["classes"] == native["classes"]
    assert max(abs(a - b) for ra, rb in zip(limited["probs"], native["probs"]) for a, b in zip(ra, rb)) < 1e-3


@needs_avx2
def test_the_classification_benchmark_prints_a_line_per_runtime_with_the_cpu_flags() -> None:
    done = subprocess.run([sys.executable, str(BENCHMARKS / "images_benchmark.py"), "--model", "accurate",
                           "--skip-pipeline", "--emulate-avx2", "--faces", "128", "--batch-size", "64",
                           "--repeats", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    lines = done.stdout.splitlines()
    assert lines[0].startswith("cpu: ") and "avx2" in lines[0]
    assert any(line.startswith("emulating a CPU without AVX-512") for line in lines)
    assert any("float TFLite variants skipped" in line for line in lines)  # accurate ships int8 only
    rates = [line for line in lines if line.startswith("classification: model accurate on LiteRT int8: ")]
    assert len(rates) == 1, done.stdout
    assert float(rates[0].split(": ")[2].split(" faces/s")[0].replace(",", "")) > 0
