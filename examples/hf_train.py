# %% [markdown]
# # Hugging Face datasets: a DatasetDict and a few training steps
#
# `dataset_dict` gives `train`, `val` and `test` with `image` and `label` (`ClassLabel`)
# features; transforms are added with `with_transform`. Research use only.

# %%
import os

import numpy as np
import torch

from covid19_images.loaders.hf import dataset_dict

DATASET = os.environ.get("COVID19_DATASET", "datasets/xray-covid")
STEPS = int(os.environ.get("COVID19_STEPS", "10"))
torch.manual_seed(0)

dd = dataset_dict(DATASET)
names = dd["train"].features["label"].names
print(dd)


def to_tensors(batch):
    images = np.stack(
        [np.asarray(img.convert("L"), dtype=np.float32) / 255 for img in batch["image"]]
    )
    return {
        "pixel_values": torch.from_numpy(images)[:, None],
        "label": torch.tensor(batch["label"]),
    }


train = dd["train"].with_transform(to_tensors)

# %%
model = torch.nn.Sequential(
    torch.nn.Conv2d(1, 8, 5, stride=4),
    torch.nn.ReLU(),
    torch.nn.AdaptiveAvgPool2d(4),
    torch.nn.Flatten(),
    torch.nn.Linear(128, len(names)),
)
optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
loader = torch.utils.data.DataLoader(train, batch_size=16, shuffle=True)
step = 0
while step < STEPS:
    for batch in loader:
        loss = torch.nn.functional.cross_entropy(model(batch["pixel_values"]), batch["label"])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        step += 1
        if step >= STEPS:
            break
print(f"step {step}: training loss {loss.item():.3f}")
