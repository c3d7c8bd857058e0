from functools import partial

import pytest
import torch
from torch.utils.data import TensorDataset

from segkit.data import make_loader
from segkit.losses import cross_entropy_criterion
from segkit.models import create_model
from segkit.train import load_checkpoint, train, validate_model


def _synthetic(n=8, size=32, seed=0):
    """Images whose label is given by colour: class c paints a rectangle of colour c/4."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=g) * 0.1
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        for c in (1, 2, 3):
            y, x = torch.randint(0, size - 12, (2,), generator=g).tolist()
            masks[i, y : y + 12, x : x + 12] = c
    images += (masks.float() / 4).unsqueeze(1)
    return TensorDataset(images, masks)


def _setup(seed=0, lr=3e-3):
    torch.manual_seed(seed)
    model = create_model("unet", num_classes=4)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    loader = make_loader(_synthetic(), batch_size=4, shuffle=True, seed=seed)
    return model, opt, loader


def test_overfits_one_batch():
    model, opt, _ = _setup()
    images, masks = next(iter(make_loader(_synthetic(4), 4, shuffle=False)))
    losses = []
    for _ in range(30):
        loss = cross_entropy_criterion(model(images), masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_seeded_runs_identical_and_resume_continues_exactly(tmp_path):
    crit = cross_entropy_criterion
    kw = dict(epochs=3, num_classes=None, progress=False, channels_last=False)
    model, opt, loader = _setup()
    val = make_loader(_synthetic(4, seed=1), 4, shuffle=False)
    _, full = train(
        model,
        opt,
        crit,
        loader,
        torch.device("cpu"),
        valloader=val,
        save_path=tmp_path / "a.pt",
        **kw,
    )
    model, opt, loader = _setup()
    _, again = train(model, opt, crit, loader, torch.device("cpu"), valloader=val, **kw)
    assert full["train_loss"] == again["train_loss"]
    # interrupted after 2 epochs, resumed from the last checkpoint for the 3rd
    model, opt, loader = _setup()
    train(
        model,
        opt,
        crit,
        loader,
        torch.device("cpu"),
        valloader=val,
        save_path=tmp_path / "b.pt",
        **{**kw, "epochs": 2},
    )
    model, opt, loader = _setup(seed=123)  # different state on purpose: resume must restore it
    _, resumed = train(
        model,
        opt,
        crit,
        loader,
        torch.device("cpu"),
        valloader=val,
        save_path=tmp_path / "b.pt",
        resume_from=tmp_path / "b_last.pt",
        **kw,
    )
    assert resumed["train_loss"] == full["train_loss"]
    assert resumed["val_loss"] == full["val_loss"]


def test_checkpoint_round_trip_and_best_selection(tmp_path):
    model, opt, loader = _setup()
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)
    val = make_loader(_synthetic(4, seed=1), 4, shuffle=False)
    model, hist = train(
        model,
        opt,
        cross_entropy_criterion,
        loader,
        torch.device("cpu"),
        sched,
        epochs=2,
        valloader=val,
        save_path=tmp_path / "best.pt",
        progress=False,
        config={"model": "unet"},
    )
    ck = load_checkpoint(tmp_path / "best.pt")
    assert set(ck) >= {"model", "optimizer", "scheduler", "epoch", "config", "history"}
    assert ck["config"] == {"model": "unet"}
    best = min(range(2), key=lambda i: hist["val_loss"][i])
    assert ck["epoch"] == best and hist["best_epoch"] == best + 1
    fresh = create_model("unet", num_classes=4)
    fresh.load_state_dict(ck["model"])
    x = torch.rand(1, 3, 32, 32)
    model.eval(), fresh.eval()
    assert torch.allclose(model(x), fresh(x), atol=1e-5)  # train() returned the best weights


def test_early_stopping_stops():
    model, opt, loader = _setup(lr=0.0)  # nothing changes, so nothing improves after epoch 1
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.0
    val = make_loader(_synthetic(4, seed=1), 4, shuffle=False)
    _, hist = train(
        model,
        opt,
        cross_entropy_criterion,
        loader,
        torch.device("cpu"),
        epochs=10,
        num_early_stop=2,
        valloader=val,
        progress=False,
    )
    assert len(hist["epoch"]) == 3


def test_non_finite_loss_raises_clearly():
    model, opt, loader = _setup()

    def bad(logits, target):
        return logits.mean() * float("nan")

    with pytest.raises(FloatingPointError, match="non-finite training loss"):
        train(model, opt, bad, loader, torch.device("cpu"), epochs=1, progress=False)


def test_validate_model_metrics_and_mode(tmp_path):
    model, _, _ = _setup()
    model.train()
    val = make_loader(_synthetic(4, seed=1), 2, shuffle=False)
    w = torch.tensor([1.0, 2.0, 2.0, 2.0])
    out = validate_model(
        model, val, partial(cross_entropy_criterion, weights=w), torch.device("cpu"), num_classes=4
    )
    assert model.training
    assert {"loss", "miou", "pixel_acc", "map"} <= set(out)
    assert 0 <= out["pixel_acc"] <= 1 and 0 <= out["map"] <= 1


def test_overfits_a_real_batch_to_near_zero_loss(data_root):
    from segkit.data import SegmentationDataset

    ds = SegmentationDataset("val", data_root, limit=2)
    # a 64x96 window of two real images keeps the test fast; it holds 4 classes
    images = torch.stack([ds[i][0] for i in range(2)])[:, :, 96:160, 96:192]  # (2, 3, 64, 96)
    masks = torch.stack([ds[i][1] for i in range(2)])[:, 96:160, 96:192]  # (2, 64, 96)
    assert len(masks.unique()) >= 3
    torch.manual_seed(0)
    model = create_model("unet", num_classes=9)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(100):
        loss = cross_entropy_criterion(model(images), masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
