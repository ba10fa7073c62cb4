"""The TensorFlow loader, run in processes of its own.

TensorFlow and the torch stack share a process badly (Triton imported after TensorFlow
segfaults), and this test session imports torch; so each check runs in a fresh interpreter that
imports only TensorFlow and this package, and reports back as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from covid19_images.assemble.build import BuildResult

pytestmark = pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("tensorflow") is None,
    reason="TensorFlow is not installed: pip install '.[tf]'",
)


def _run(code: str, timeout: int = 300) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_batches_labels_shapes_and_values(xray_dataset: BuildResult) -> None:
    result = _run(
        f"""
        import json, sys
        import numpy as np
        import covid19_images as ci
        from covid19_images.loaders import open_split
        folder = {str(xray_dataset.path)!r}
        packed = open_split(folder, "train")
        ds = ci.load(folder, "train", framework="tf", batch_size=32)
        xs, ys = [], []
        for x, y in ds:
            xs.append(x.numpy()); ys.extend(y.numpy().tolist())
        x = np.concatenate(xs)
        expected = (packed.images[:].astype(np.float32) / 255 - packed.mean) / packed.std
        shuffled = [y.numpy().tolist() for _, y in ci.load(folder, "train", framework="tf",
                    batch_size=32, shuffle=True, seed=4)]
        again = [y.numpy().tolist() for _, y in ci.load(folder, "train", framework="tf",
                 batch_size=32, shuffle=True, seed=4)]
        print(json.dumps({{
            "shape": list(xs[0].shape), "dtype": str(xs[0].dtype), "n": len(ys),
            "labels_equal": ys == packed.labels.tolist(),
            "max_diff": float(np.abs(x[..., 0] - expected).max()),
            "shuffle_repeatable": shuffled == again,
            "shuffled": shuffled != [ys[i:i+32] for i in range(0, len(ys), 32)],
            "torch_imported": "torch" in sys.modules,
        }}))
        """
    )
    assert result["shape"] == [32, 224, 224, 1] and result["dtype"] == "float32"
    manifest = xray_dataset.manifest
    assert result["n"] == int((manifest["split"] == "train").sum())
    assert result["labels_equal"] is True and float(result["max_diff"]) < 1e-5  # type: ignore[arg-type]
    assert result["shuffle_repeatable"] is True and result["shuffled"] is True
    assert result["torch_imported"] is False


def test_augmentation_matches_the_reference_draw(xray_dataset: BuildResult) -> None:
    result = _run(
        f"""
        import json
        import numpy as np
        import tensorflow as tf
        from covid19_images.loaders import open_split
        from covid19_images.loaders.augment import PRESETS, apply_numpy, draw, rng_for, theta
        from covid19_images.loaders.tfdata import _projective
        packed = open_split({str(xray_dataset.path)!r}, "train")
        image = np.asarray(packed.images[3])
        d = draw(PRESETS["standard"], rng_for(0, 0, 3))
        t = _projective(theta(d), 224).astype(np.float32)[None]
        x = tf.constant(image[None, ..., None].astype(np.float32) / 255)
        got = tf.raw_ops.ImageProjectiveTransformV3(images=x, transforms=t, output_shape=[224, 224],
              fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT").numpy()[0, ..., 0]
        # apply_numpy also shifts contrast and brightness; compare the geometry alone
        ref_geometry = apply_numpy(image, type(d)(d.angle, d.scale, d.shift_x, d.shift_y, 0.0, 1.0))
        aug = [x.numpy() for x, _ in __import__("covid19_images").load(
            {str(xray_dataset.path)!r}, "train", framework="tf", augment="light", batch_size=8)][0]
        print(json.dumps({{
            "mean_diff": float(np.abs(got - ref_geometry)[16:-16, 16:-16].mean()),
            "aug_shape": list(aug.shape), "aug_finite": bool(np.isfinite(aug).all()),
        }}))
        """
    )
    assert float(result["mean_diff"]) < 0.01  # type: ignore[arg-type]
    assert result["aug_shape"] == [8, 224, 224, 1] and result["aug_finite"] is True


@pytest.mark.parametrize(
    "after", ["import monai", "import torch._dynamo"], ids=["monai", "torch-dynamo"]
)
def test_tensorflow_loader_then_the_torch_stack_in_one_process(
    xray_dataset: BuildResult, after: str
) -> None:
    pytest.importorskip("torch")
    result = _run(
        f"""
        import json
        import covid19_images as ci
        ds = ci.load({str(xray_dataset.path)!r}, "val", framework="tf", batch_size=4)
        {after}
        x, y = next(iter(ds))
        print(json.dumps({{"ok": True, "shape": list(x.shape)}}))
        """
    )
    assert result["ok"] is True
