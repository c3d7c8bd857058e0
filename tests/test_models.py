import pytest
import torch

from segkit.engine import train_one_epoch
from segkit.models import create_model, list_models
from segkit.models.pretrained import EffNetLite0Encoder, ResNet18Encoder
from segkit.utils import SegkitError

NAMES = list_models()


def _build(name, num_classes=9):
    return create_model(name, num_classes, weights=None)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(64, 96), (96, 64)])  # small: logits at input size
def test_shape_and_every_parameter_gets_a_gradient(name, size):
    torch.manual_seed(0)
    model = _build(name, num_classes=5)
    x = torch.rand(2, 3, *size)
    out = model(x)
    assert out.shape == (2, 5, *size) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_bad_size_error_suggests_padding():
    with pytest.raises(ValueError, match="224x288"):
        _build("unet")(torch.rand(1, 3, 220, 280))


def test_unknown_name_lists_choices():
    with pytest.raises(KeyError, match="available: .*unet"):
        create_model("segformer")


def test_frozen_encoder_keeps_batchnorm_statistics():
    torch.manual_seed(0)
    model = create_model("resnet18_unet", 9, weights=None, freeze_encoder=True)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = model(torch.rand(2, 3, 64, 64)).mean()
    loss.backward()
    opt.step()
    after = model.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not p.requires_grad for p in model.encoder.parameters())
    assert any(p.grad is not None for p in model.decoder.parameters())
    model.freeze_encoder(False)
    assert model.encoder.training


def test_resnet_weights_from_local_file(tmp_path):
    from torchvision.models import resnet18

    ref = resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    enc = ResNet18Encoder(weights=tmp_path / "r18.pth")
    assert torch.equal(enc.stem[0].weight, ref.conv1.weight)
    assert torch.equal(enc.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)


def test_resnet_imagenet_offline_error_says_how(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache

    def refuse(*a, **k):
        raise OSError("network unreachable")

    import torchvision.models._api as api

    monkeypatch.setattr(api, "load_state_dict_from_url", refuse)
    with pytest.raises(RuntimeError, match="weights='/path/to/resnet18-f37072fd.pth'"):
        create_model("resnet18_unet", weights="imagenet")


def test_effnet_loads_shipped_imagenet_weights():
    from segkit.models.pretrained import _load_local, effnet_lite_imagenet_path

    path = effnet_lite_imagenet_path(0)
    state = _load_local(path)
    enc = EffNetLite0Encoder(weights="imagenet")
    assert torch.equal(enc.body.conv_stem.weight, state["_conv_stem.weight"])
    assert torch.equal(enc.body.bn1.running_var, state["_bn0.running_var"])
    # the last encoder block maps to the last lukemelas block before the head
    assert torch.equal(enc.body.blocks[-1][-1].bn3.weight, state["_blocks.15._bn2.weight"])


def test_effnet_rejects_wrong_file(tmp_path):
    torch.save({"a": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(SegkitError, match="bad.pth: 1 encoder tensors, expected the 288"):
        EffNetLite0Encoder(weights=tmp_path / "bad.pth")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_amp_train_step():
    device = torch.device("cuda")
    model = create_model("unet", 4).to(device)
    opt = torch.optim.AdamW(model.parameters())
    data = [(torch.rand(2, 3, 64, 64), torch.randint(0, 4, (2, 64, 64)))]
    scaler = torch.amp.GradScaler("cuda")
    out = train_one_epoch(
        model,
        data,
        opt,
        torch.nn.functional.cross_entropy,
        device,
        scaler=scaler,
        amp=True,
        channels_last=True,
    )
    assert out["loss"] > 0
