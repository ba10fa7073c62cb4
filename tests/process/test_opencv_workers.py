"""Pool workers: OpenCV after a fork, and one thread per numeric library in each worker."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("cv2")

SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from PIL import Image

    from covid19_images.dedup.align import aligned_score
    from covid19_images.process.executor import LocalExecutor
    from covid19_images.process.signature import compute_signature


    def first_view(seed):
        rng = np.random.default_rng(seed)
        frame = Image.fromarray((rng.random((300, 300)) * 255).astype(np.uint8))
        return compute_signature(frame)[0].views[0]


    if __name__ == "__main__":
        rng = np.random.default_rng(0)
        a = (rng.random((256, 256)) * 255).astype(np.uint8)
        moved = np.ascontiguousarray(a[10:, 20:])
        # OpenCV's parallel code runs in this process first (as the deduplication does) ...
        score = aligned_score(a, moved, [np.array([[1.0, 0, 20], [0, 1, 10]])])[0]
        # ... then forked workers run OpenCV (as the split's leak check does).
        views = list(LocalExecutor(workers=2, progress=False).map(first_view, [1, 2, 3, 4]))
        print(round(score, 2), len(views), views == [first_view(s) for s in (1, 2, 3, 4)])
    """
)


def test_forked_workers_run_opencv_after_the_parent_did(tmp_path: Path) -> None:
    script = tmp_path / "fork_after_opencv.py"
    script.write_text(SCRIPT, encoding="utf-8")
    try:
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        pytest.fail("forked workers hung in OpenCV (its thread pool does not survive a fork)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1.0", "4", "True"]


def _threads(_: int) -> list[int]:
    import cv2
    from threadpoolctl import threadpool_info

    return [pool["num_threads"] for pool in threadpool_info()] + [cv2.getNumThreads()]


def test_pool_workers_run_their_numeric_libraries_on_one_thread() -> None:
    import numpy as np

    from covid19_images.process.executor import LocalExecutor

    np.ones((64, 128)) @ np.ones((128, 64))  # BLAS loaded in the parent before the fork
    per_worker = list(LocalExecutor(workers=2, progress=False).map(_threads, [0, 1, 2, 3]))
    assert all(threads and set(threads) == {1} for threads in per_worker), per_worker
