"""Keras applications on a built dataset: DenseNet121 or InceptionV3, with Grad-CAM.

`keras.applications.DenseNet121` or `InceptionV3` (`--model inception_v3`) from scratch
(`weights=None`) on one-channel images, trained on the `tf.data` loader; AUROC per class on the
validation split, then Grad-CAM overlays (through `tf.GradientTape`) for a few test images.
`grad_cam()`, `cam_layer()` and `save_overlay()` work on other Keras functional models too:
copy them, or import this file.

    $ COVID19_DATASET=datasets/xray-covid python examples/keras_train.py --model inception_v3

Research use only: these data and models are for research, and nothing here is a diagnostic
device (`covid19_images.RESEARCH_USE_NOTICE`).
"""

import argparse
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image
from sklearn.metrics import roc_auc_score

import covid19_images as ci

MODELS = {
    "densenet121": keras.applications.DenseNet121,
    "inception_v3": keras.applications.InceptionV3,
}
MIN_SIZE = {"densenet121": 32, "inception_v3": 75}
# Grad-CAM weighs the last convolutional feature map, the one global pooling reads: each
# application's layer by name (Keras names the models "densenet121" and "inception_v3").
CAM_LAYERS = {"densenet121": "relu", "inception_v3": "mixed10"}


# Grad-CAM (Selvaraju et al., 2017): the gradient of a class score with respect to the last
# convolutional feature map, averaged over space, weighs that map's channels; the weighted sum,
# rectified, shows where the evidence for the class lies. The grid is about the input side / 32
# (7 x 7 at 224 px for DenseNet121, 5 x 5 for InceptionV3, whose stem trims more): small inputs
# give coarse maps.


def cam_layer(model: keras.Model) -> str:
    """The name of the layer Grad-CAM weighs: an application's last convolutional block by name
    (`CAM_LAYERS`), or for another model the last layer with a 4-D (feature map) output."""
    if model.name in CAM_LAYERS:
        return CAM_LAYERS[model.name]
    for layer in reversed(model.layers):
        if len(layer.output.shape) == 4:
            return layer.name
    raise ValueError(f"{model.name} has no layer with a 4-D output")


def grad_cam(model: keras.Model, images, class_index=None, layer: str | None = None) -> np.ndarray:
    """Grad-CAM maps of a batch of images: float32 `(N, H, W)` at the images' size, each scaled
    to a maximum of 1 (all zeros where the map finds no evidence for the class).

    `class_index`: the class to explain, one for all images or one per image; by default each
    image's highest-scoring class. `layer`: the feature map's layer name (`cam_layer(model)`).
    The model should end in class scores (logits): after a softmax the gradients saturate.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    feature_map = model.get_layer(layer or cam_layer(model)).output
    features_and_scores = keras.Model(model.inputs, [feature_map, model.outputs[0]])
    with tf.GradientTape() as tape:
        features, scores = features_and_scores(images, training=False)
        if class_index is None:
            class_index = tf.argmax(scores, axis=-1)
        index = tf.broadcast_to(tf.cast(class_index, tf.int32), tf.shape(scores)[:1])
        score = tf.gather(scores, index, batch_dims=1)
    weights = tf.reduce_mean(tape.gradient(score, features), axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))[..., None]
    cam = tf.image.resize(cam, tf.shape(images)[1:3], method="bilinear")[..., 0]
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(cam, peak).numpy()


def save_overlay(path: Path | str, image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> None:
    """Save one image (`(H, W)` or `(H, W, 1)`, any scale) as a PNG, its Grad-CAM map
    (`(H, W)` in 0-1) blended over it in red to yellow."""
    grey = np.asarray(image, np.float32).reshape(cam.shape)
    grey = (grey - grey.min()) / max(float(grey.max() - grey.min()), 1e-8)
    heat = np.stack([np.clip(2 * cam, 0, 1), np.clip(2 * cam - 1, 0, 1), np.zeros_like(cam)], -1)
    blend = alpha * cam[..., None]
    rgb = (1 - blend) * grey[..., None] + blend * heat
    Image.fromarray(np.uint8(np.clip(rgb, 0, 1) * 255)).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="densenet121")
    parser.add_argument("--size", type=int, default=0, help="input side (default: the dataset's)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--augment", choices=["none", "light", "standard"], default="light")
    parser.add_argument("--out", default="gradcam", help="folder for the Grad-CAM overlays")
    parser.add_argument(
        "--eager",
        action="store_true",
        help="train without tracing a graph: tracing DenseNet121's training step can take a minute "
        "on a small CPU, so a run of a few steps is quicker eagerly",
    )
    args, _ = parser.parse_known_args()  # known only: a notebook kernel passes its own
    dataset = os.environ.get("COVID19_DATASET", "datasets/xray-covid")
    steps = int(os.environ.get("COVID19_STEPS", "0"))  # 0: whole passes over the train split
    epochs = int(os.environ.get("COVID19_EPOCHS", "5"))
    keras.utils.set_random_seed(0)
    print(ci.RESEARCH_USE_NOTICE)

    # The loader gives the dataset's side (224 unless built with --size). InceptionV3 needs at
    # least 75 px: a smaller dataset (or --size) is resized in the pipeline, after augmentation.
    packed = ci.load(dataset, "train", framework="numpy")
    classes = list(packed.classes)
    side = max(args.size or packed.size, MIN_SIZE[args.model])
    if side != packed.size:
        print(f"{args.model}: images resized from {packed.size} to {side} px in the pipeline")

    def split(name: str, **kwargs: object) -> tf.data.Dataset:
        ds = ci.load(dataset, name, framework="tf", batch_size=args.batch_size, **kwargs)
        if side == packed.size:
            return ds
        return ds.map(lambda x, y: (tf.image.resize(x, (side, side)), y), tf.data.AUTOTUNE)

    train = split("train", shuffle=True, augment=args.augment)
    model = MODELS[args.model](
        weights=None,
        input_shape=(side, side, 1),
        classes=len(classes),
        classifier_activation=None,  # logits: Grad-CAM weighs the class score before softmax
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=args.eager,
    )
    if steps:
        history = model.fit(train.repeat(), steps_per_epoch=steps, epochs=epochs, verbose=2)
    else:
        history = model.fit(train, epochs=epochs, verbose=2)
    print(f"training loss {history.history['loss'][-1]:.3f}")

    # One-vs-rest AUROC per class on the validation split (undefined for a class absent from it).
    probs, labels = [], []
    for x, y in split("val"):
        probs.append(tf.nn.softmax(model(x, training=False)).numpy())
        labels.append(y.numpy())
    prob, label = np.concatenate(probs), np.concatenate(labels)
    for k, name in enumerate(classes):
        positive = label == k
        auroc = roc_auc_score(positive, prob[:, k]) if 0 < positive.sum() < len(label) else None
        print(f"validation AUROC {name}: " + ("undefined" if auroc is None else f"{auroc:.3f}"))

    # Grad-CAM of the predicted class for the first four test images.
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, truth = next(iter(split("test")))
    images, truth = images[:4], truth.numpy()[:4]
    predicted = model(images, training=False).numpy().argmax(-1)
    cams = grad_cam(model, images, predicted)
    for i, (image, cam) in enumerate(zip(images.numpy(), cams, strict=True)):
        path = out / f"{args.model}_test{i}_{classes[truth[i]]}_as_{classes[predicted[i]]}.png"
        save_overlay(path, image, cam)
    print(f"Grad-CAM of layer {cam_layer(model)!r}: {len(cams)} overlays in {out}")


if __name__ == "__main__":
    main()
