"""Every framework's example in examples/ trains a few steps on a dataset built from
../shared/sources, each in a process of its own (as a notebook kernel would run it)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from covid19_images.assemble.build import BuildResult

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NEEDS = {
    "torch_train.py": "torch",
    "tf_train.py": "tensorflow",
    "fastai_train.py": "fastai",
    "monai_train.py": "monai",
    "hf_train.py": "datasets",
}


def test_every_example_is_tested() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(NEEDS)


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_example_trains(name: str, xray_dataset: BuildResult) -> None:
    if importlib.util.find_spec(NEEDS[name]) is None:
        pytest.skip(f"{NEEDS[name]} is not installed")
    env = {
        **os.environ,
        "COVID19_DATASET": str(xray_dataset.path),
        "COVID19_STEPS": "3",
        "COVID19_EPOCHS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "loss" in out.stdout
