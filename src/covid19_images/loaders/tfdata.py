"""TensorFlow: a batched, prefetched ``tf.data.Dataset`` over a split's packed array.

Each element is ``(images, labels)``: float32 ``(batch, size, size, channels)`` (channels last,
as Keras expects) normalised with the train split's mean and standard deviation, and int64
class numbers. Batches are read from the memory-mapped array in one copy; augmentation applies
the preset's draws (:mod:`covid19_images.loaders.augment`, one generator per sample keyed by the
seed, a per-pass key and the sample's index) with ``ImageProjectiveTransformV3``. Shuffling and
the per-pass keys come from seeded ``tf.data`` ops, so a seed reproduces every pass.

This module imports TensorFlow and never torch. Triton (installed with CUDA builds of torch)
crashes the process when it is imported after TensorFlow, as ``import monai`` or
``torch.compile`` do; where Triton is installed, this module imports it before TensorFlow, which
avoids the crash (``docs/loaders.md``).

Example:
    >>> train = dataset("datasets/xray-covid", batch_size=32, shuffle=True)  # doctest: +SKIP
    >>> model.fit(train, epochs=5)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from covid19_images.loaders.frameworks import triton_before_tensorflow

triton_before_tensorflow()

import tensorflow as tf  # noqa: E402 - after Triton, see above

from covid19_images.loaders.augment import Preset, draw, preset, rng_for, theta  # noqa: E402
from covid19_images.loaders.packed import open_split  # noqa: E402


def dataset(
    folder: Path | str,
    split: str = "train",
    *,
    size: int | None = None,
    batch_size: int = 64,
    shuffle: bool = False,
    augment: str | Preset | None = None,
    seed: int = 0,
    channels: int = 1,
    normalize: bool = True,
    drop_remainder: bool = False,
) -> Any:
    """One split as a ``tf.data.Dataset`` of ``(images, labels)`` batches, prefetched."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    packed = open_split(folder, split, size)
    images, labels, side = packed.images, packed.labels, packed.size
    p = preset(augment)
    mean, std = packed.mean, packed.std

    def read(order: np.ndarray, key: np.int64) -> tuple[np.ndarray, ...]:
        pixels = np.take(images, order, axis=0)[..., None]
        draws = [draw(p, rng_for(seed, int(key), int(i))) for i in order]
        transforms = np.stack([_projective(theta(d), side) for d in draws]).astype(np.float32)
        shifts = np.array([[d.contrast, d.brightness] for d in draws], dtype=np.float32)
        return pixels, labels[order], transforms, shifts

    indices = tf.data.Dataset.range(len(labels))
    if shuffle:
        indices = indices.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    batches = indices.batch(batch_size, drop_remainder=drop_remainder)
    keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    pairs = tf.data.Dataset.zip((batches, keys))

    def load(order: Any, key: Any) -> tuple[Any, Any]:
        pixels, batch_labels, transforms, shifts = tf.numpy_function(
            read, [order, key], [tf.uint8, tf.int64, tf.float32, tf.float32]
        )
        x = tf.cast(tf.ensure_shape(pixels, [None, side, side, 1]), tf.float32) / 255.0
        if not p.identity:
            x = tf.raw_ops.ImageProjectiveTransformV3(
                images=x,
                transforms=tf.ensure_shape(transforms, [None, 8]),
                output_shape=[side, side],
                fill_value=0.0,
                interpolation="BILINEAR",
                fill_mode="CONSTANT",
            )
            shifts = tf.ensure_shape(shifts, [None, 2])
            contrast, brightness = shifts[:, 0, None, None, None], shifts[:, 1, None, None, None]
            centre = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
            x = tf.clip_by_value((x - centre) * contrast + centre + brightness, 0.0, 1.0)
        if normalize:
            x = (x - mean) / std
        if channels == 3:
            x = tf.tile(x, [1, 1, 1, 3])
        return x, tf.ensure_shape(batch_labels, [None])

    return pairs.map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _projective(t: np.ndarray, side: int) -> np.ndarray:
    """``theta`` (normalised, output → input) as TensorFlow's 8 projective coefficients in
    pixel coordinates (pixel centres at integers, as ``align_corners=False`` puts them)."""
    to_norm = np.array(
        [[2.0 / side, 0.0, 1.0 / side - 1.0], [0.0, 2.0 / side, 1.0 / side - 1.0], [0.0, 0.0, 1.0]]
    )
    full = np.linalg.inv(to_norm) @ np.vstack([t, [0.0, 0.0, 1.0]]) @ to_norm
    return np.array([full[0, 0], full[0, 1], full[0, 2], full[1, 0], full[1, 1], full[1, 2], 0, 0])
