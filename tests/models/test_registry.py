"""The model registry: every name builds a one-channel model, checkpoints load or fail clearly."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from covid19_images.errors import ModelError
from covid19_images.models import available, create

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")

SIZES = {"inception_v3": 75}
"""Input size per model in these tests (64 px unless listed)."""


def _images(name: str, batch: int = 2, seed: int = 0) -> torch.Tensor:
    size = SIZES.get(name, 64)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, size, size, generator=generator)


def test_available_names() -> None:
    assert available() == [
        "densenet121",
        "inception_v3",
        "resnet18",
        "resnet18_cbam",
        "vit_small",
        "vit_tiny",
    ]


@pytest.mark.parametrize("name", available())
def test_forward_and_backward_on_one_channel_images(name: str) -> None:
    torch.manual_seed(0)
    model = create(name, 3, in_chans=1)
    logits = model(_images(name))
    assert logits.shape == (2, 3)
    logits.sum().backward()
    no_grad = [key for key, p in model.named_parameters() if p.grad is None]
    assert not no_grad
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_hybrid_has_cbam_attention() -> None:
    plain = create("resnet18", 3)
    hybrid = create("resnet18_cbam", 3)
    extra = set(hybrid.state_dict()) - set(plain.state_dict())
    assert any(".se.channel." in key for key in extra)
    assert any(".se.spatial." in key for key in extra)


def _save(model: torch.nn.Module, path: Path) -> None:
    state = {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}
    if path.suffix == ".safetensors":
        safetensors_torch.save_file(state, str(path))
    else:
        torch.save(state, path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_checkpoint_reproduces_saved_outputs(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(1)
    saved = create("resnet18_cbam", 3)
    with torch.no_grad():  # non-trivial batch-norm statistics, as after training
        for module in saved.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / f"model{suffix}"
    _save(saved, path)
    torch.manual_seed(2)
    loaded = create("resnet18_cbam", 3, pretrained=path)
    x = _images("resnet18_cbam", seed=3)
    saved.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), saved(x))


def test_wrapped_torch_checkpoint_loads(tmp_path: Path) -> None:
    saved = create("vit_tiny", 2)
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in saved.state_dict().items()}}, path)
    loaded = create("vit_tiny", 2, pretrained=str(path))
    for key, value in saved.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_other_head_loads_body_and_keeps_fresh_head(tmp_path: Path) -> None:
    torch.manual_seed(4)
    saved = create("densenet121", 5)
    path = tmp_path / "five.safetensors"
    _save(saved, path)
    torch.manual_seed(5)
    fresh = create("densenet121", 3)
    torch.manual_seed(5)  # the same draws as `fresh`: the head must be exactly that
    with pytest.warns(UserWarning, match="head is left out"):
        loaded = create("densenet121", 3, pretrained=path)
    saved_state, loaded_state = saved.state_dict(), loaded.state_dict()
    body = [key for key in saved_state if not key.startswith("classifier.")]
    assert len(body) == len(loaded_state) - 2
    for key in body:
        assert torch.equal(loaded_state[key], saved_state[key]), key
    assert loaded_state["classifier.weight"].shape == (3, 1024)
    assert torch.equal(loaded_state["classifier.weight"], fresh.state_dict()["classifier.weight"])
    assert torch.equal(loaded_state["classifier.bias"], fresh.state_dict()["classifier.bias"])


def test_three_channel_checkpoint_is_summed_into_one(tmp_path: Path) -> None:
    rgb = create("resnet18", 3, in_chans=3)
    path = tmp_path / "rgb.pt"
    _save(rgb, path)
    with pytest.warns(UserWarning, match="adapted from 3 input channels to 1"):
        gray = create("resnet18", 3, in_chans=1, pretrained=path)
    oracle = rgb.state_dict()["conv1.weight"].sum(dim=1, keepdim=True)
    assert gray.state_dict()["conv1.weight"].shape == (64, 1, 7, 7)
    torch.testing.assert_close(gray.state_dict()["conv1.weight"], oracle, rtol=0, atol=0)
    assert torch.equal(
        gray.state_dict()["layer1.0.conv1.weight"], rgb.state_dict()["layer1.0.conv1.weight"]
    )


def test_three_channel_vit_checkpoint_is_summed_into_one(tmp_path: Path) -> None:
    rgb = create("vit_tiny", 3, in_chans=3)
    path = tmp_path / "rgb.safetensors"
    _save(rgb, path)
    with pytest.warns(UserWarning, match="patch_embed.proj.weight"):
        gray = create("vit_tiny", 3, in_chans=1, pretrained=path)
    oracle = rgb.state_dict()["patch_embed.proj.weight"].sum(dim=1, keepdim=True)
    assert torch.equal(gray.state_dict()["patch_embed.proj.weight"], oracle)


def test_other_architecture_names_keys(tmp_path: Path) -> None:
    path = tmp_path / "resnet.safetensors"
    _save(create("resnet18", 3), path)
    with pytest.raises(ModelError, match=r"missing keys \(\d+\): features\.conv0\.weight") as error:
        create("densenet121", 3, pretrained=path)
    assert re.search(r"unexpected keys \(\d+\): bn1\.bias, ", str(error.value))


def test_cbam_keys_must_be_present(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    _save(create("resnet18", 3), path)
    with pytest.raises(ModelError, match=r"missing keys \(\d+\): layer1\.0\.se\.channel"):
        create("resnet18_cbam", 3, pretrained=path)


def test_missing_or_unreadable_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no checkpoint file"):
        create("resnet18", 3, pretrained=tmp_path / "absent.pt")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read checkpoint"):
        create("resnet18", 3, pretrained=broken)
    pickled = tmp_path / "pickled.pt"
    torch.save({"weights": object()}, pickled)  # refused by weights_only=True
    with pytest.raises(ModelError, match="cannot read checkpoint"):
        create("resnet18", 3, pretrained=pickled)


def test_xrv_without_cached_weights_says_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # torchxrayvision's cache is ~/.torchxrayvision
    with pytest.raises(ModelError, match="pip install torchxrayvision") as error:
        create("densenet121", 3, pretrained="xrv:densenet121-res224-all")
    message = str(error.value)
    assert "internet" in message
    if "not cached at" in message:  # torchxrayvision is installed: the exact path is named
        assert str(tmp_path / ".torchxrayvision" / "models_data") in message
    assert not (tmp_path / ".torchxrayvision").exists() or not any(
        (tmp_path / ".torchxrayvision").rglob("*.pt")
    )


def test_xrv_with_cached_weights_gets_a_new_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    xrv = pytest.importorskip("torchxrayvision")
    from covid19_images.models import _xrv

    monkeypatch.setenv("HOME", str(tmp_path))
    cached = _xrv.weights_file("densenet121-res224-all")
    assert cached.parent == tmp_path / ".torchxrayvision" / "models_data"
    # a stand-in for the released file: an xrv DenseNet pickled whole, as the release is
    cached.parent.mkdir(parents=True)
    torch.save(xrv.models.DenseNet(num_classes=18), cached)
    model = create("densenet121", 3, pretrained="xrv:densenet121-res224-all")
    assert model.head.out_features == 3
    logits = model(torch.rand(2, 1, 64, 64) * 2048 - 1024)  # xrv resizes to 224 px itself
    assert logits.shape == (2, 3)


def test_xrv_only_for_densenet121() -> None:
    with pytest.raises(ModelError, match="only for densenet121"):
        create("resnet18", 3, pretrained="xrv:densenet121-res224-all")


def test_unknown_name_suggests() -> None:
    with pytest.raises(ModelError, match=r"did you mean: vit_tiny") as error:
        create("vit-tiny", 3)
    assert "available: densenet121, inception_v3" in str(error.value)


def test_missing_torch_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ModelError, match=r"pip install 'covid19-images\[torch\]'"):
        create("resnet18", 3)


def test_import_does_not_import_torch() -> None:
    code = textwrap.dedent(
        """
        import sys
        import covid19_images
        import covid19_images.models
        assert covid19_images.models.available()
        print(sorted(m for m in ("torch", "timm", "torchxrayvision") if m in sys.modules))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
