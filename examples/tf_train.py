# %% [markdown]
# # TensorFlow / Keras: train a small CNN on a built dataset
#
# `framework="tf"` gives a batched, prefetched `tf.data.Dataset` (channels last). Keep
# TensorFlow in a process of its own, or import it after torch's Triton (docs/loaders.md).
# Research use only: nothing here is a diagnostic device.

# %%
import os

import keras

import covid19_images as ci

DATASET = os.environ.get("COVID19_DATASET", "datasets/xray-covid")
STEPS = int(os.environ.get("COVID19_STEPS", "20"))
keras.utils.set_random_seed(0)

train = ci.load(DATASET, "train", framework="tf", batch_size=32, shuffle=True, augment="light")
val = ci.load(DATASET, "val", framework="tf", batch_size=64)
classes = ci.load(DATASET, "train", framework="numpy").classes

# %%
model = keras.Sequential(
    [
        keras.Input((224, 224, 1)),
        keras.layers.Conv2D(8, 5, strides=4, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(len(classes)),
    ]
)
model.compile(
    optimizer=keras.optimizers.AdamW(1e-3),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
history = model.fit(train.repeat(), steps_per_epoch=STEPS, epochs=1, verbose=0)
print(f"training loss {history.history['loss'][-1]:.3f}")
loss, accuracy = model.evaluate(val, verbose=0)
print(f"validation accuracy {accuracy:.2f}")
