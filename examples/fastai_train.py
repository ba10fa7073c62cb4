# %% [markdown]
# # fastai: a Learner on a built dataset
#
# `framework="fastai"` gives `DataLoaders` of our train and val splits (split by patient).
# Research use only: nothing here is a diagnostic device.

# %%
import os

import torch
from fastai.callback.progress import ProgressCallback
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy

import covid19_images as ci

DATASET = os.environ.get("COVID19_DATASET", "datasets/xray-covid")
EPOCHS = int(os.environ.get("COVID19_EPOCHS", "1"))
torch.manual_seed(0)

dls = ci.load(DATASET, framework="fastai", bs=32, augment="light")
print("classes", dls.vocab)

# %%
model = torch.nn.Sequential(
    torch.nn.Conv2d(1, 8, 5, stride=4),
    torch.nn.ReLU(),
    torch.nn.AdaptiveAvgPool2d(4),
    torch.nn.Flatten(),
    torch.nn.Linear(128, dls.c),
)
learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy)
learn.remove_cb(ProgressCallback)
learn.fit(EPOCHS, lr=1e-3)
train_loss, valid_loss, acc = learn.recorder.values[-1]
print(f"training loss {train_loss:.3f}, validation accuracy {acc:.2f}")
