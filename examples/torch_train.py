# %% [markdown]
# # PyTorch: train a small CNN on a built dataset
#
# Build the dataset once (`covid19-images build xray-covid --mirror ../shared/sources`), then
# read it through the packed fast path. Research use only: nothing here is a diagnostic device.

# %%
import os

import torch

import covid19_images as ci

DATASET = os.environ.get("COVID19_DATASET", "datasets/xray-covid")
STEPS = int(os.environ.get("COVID19_STEPS", "20"))
torch.manual_seed(0)

train = ci.load(DATASET, "train", framework="torch", augment="light")
val = ci.load(DATASET, "val", framework="torch")
print(len(train), "training images, classes", train.classes)

# %%
model = torch.nn.Sequential(
    torch.nn.Conv2d(1, 8, 5, stride=4),
    torch.nn.ReLU(),
    torch.nn.AdaptiveAvgPool2d(4),
    torch.nn.Flatten(),
    torch.nn.Linear(128, len(train.classes)),
)
optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
step = 0
while step < STEPS:
    for images, labels in train.loader(batch_size=32, shuffle=True):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        step += 1
        if step >= STEPS:
            break
print(f"step {step}: training loss {loss.item():.3f}")

# %%
model.eval()
with torch.no_grad():
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in val.loader(batch_size=64))
print(f"validation accuracy {correct / max(len(val), 1):.2f} on {len(val)} images")
