# %% [markdown]
# # MONAI: a CacheDataset and a few training steps
#
# `covid19_images.loaders.monai_data` gives the datalist and a transform chain; for CT volumes
# use `level="volume"` on a `ct-covid` dataset. Research use only.

# %%
import os

import torch
from monai.data import CacheDataset, DataLoader
from monai.networks.nets import DenseNet121

from covid19_images.loaders.monai_data import datalist, transforms

DATASET = os.environ.get("COVID19_DATASET", "datasets/xray-covid")
STEPS = int(os.environ.get("COVID19_STEPS", "5"))
torch.manual_seed(0)

train = CacheDataset(
    datalist(DATASET, "train"),
    transforms(DATASET, augment="light", seed=0),
    cache_rate=0.0,
    progress=False,
)
labels = {item["label"] for item in datalist(DATASET, "train")}

# %%
model = DenseNet121(spatial_dims=2, in_channels=1, out_channels=max(labels) + 1)
optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
step = 0
for batch in DataLoader(train, batch_size=8, shuffle=True):
    loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["label"])
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    step += 1
    if step >= STEPS:
        break
print(f"step {step}: training loss {loss.item():.3f}")
