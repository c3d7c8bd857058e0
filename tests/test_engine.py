import json
from functools import partial

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from segkit.checkpoint import CheckpointError, finished_results, load_checkpoint
from segkit.config import TrainConfig
from segkit.data import make_loader
from segkit.engine import DivergenceError, evaluate, train, validate_model
from segkit.losses import cross_entropy_criterion
from segkit.metrics import segmentation_eval
from segkit.models import create_model
from segkit.optim import ema_decay_at, make_ema


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


def _setup(seed=0, lr=3e-3, width=0.25):
    torch.manual_seed(seed)
    model = create_model("unet", num_classes=4, width=width)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    loader = make_loader(_synthetic(), batch_size=4, shuffle=True, seed=seed)
    return model, opt, loader


def test_overfits_one_batch():
    model, opt, _ = _setup(width=0.5)
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
    fresh = create_model("unet", num_classes=4, width=0.25)
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


@pytest.mark.parametrize("bad_step", [1, 2])  # 2 = the epoch's last step (8 images, batch 4)
def test_divergence_names_run_epoch_step_and_keeps_last_good_checkpoint(tmp_path, bad_step):
    """A NaN loss mid-epoch or at an epoch's last step stops with one message naming the run,
    epoch and step; the checkpoint of the last good epoch is untouched and named."""
    model, opt, loader = _setup()
    calls = {"n": 0}

    def crit(logits, target):
        calls["n"] += 1
        loss = cross_entropy_criterion(logits, target)
        return loss * float("nan") if calls["n"] == 3 + bad_step else loss  # epoch 2

    val = make_loader(_synthetic(4, seed=1), 4, shuffle=False)
    kw = dict(epochs=3, valloader=val, save_path=tmp_path / "ck.pt", progress=False, name="demo")
    with pytest.raises(DivergenceError) as err:
        train(model, opt, crit, loader, torch.device("cpu"), **kw)
    msg = str(err.value)
    assert "run 'demo', epoch 2" in msg and f"step {bad_step}" in msg and "lr" in msg
    assert str(tmp_path / "ck_last.pt") in msg
    assert load_checkpoint(tmp_path / "ck_last.pt")["epoch"] == 0  # epoch 1 kept, intact


def test_divergence_in_the_weights_is_caught_before_validation(tmp_path):
    """The last update of an epoch can make the weights NaN with a finite loss: caught too."""
    model, opt, loader = _setup()

    class Poison(torch.optim.AdamW):
        steps = 0

        def step(self, closure=None):
            super().step(closure)
            Poison.steps += 1
            if Poison.steps == 2:  # the epoch's last step: its loss was still finite
                with torch.no_grad():
                    next(model.parameters()).fill_(float("nan"))

    opt = Poison(model.parameters(), lr=1e-3)
    with pytest.raises(DivergenceError, match="non-finite weights"):
        train(model, opt, cross_entropy_criterion, loader, torch.device("cpu"), epochs=1,
              valloader=make_loader(_synthetic(4), 4, shuffle=False), num_classes=4,
              progress=False)  # fmt: skip


def test_resume_refuses_a_changed_config_and_names_fields(tmp_path):
    model, opt, loader = _setup()
    cfg = {"model": "unet", "lr": 1e-3, "batch_size": 4, "seed": 0, "epochs": 1}
    kw = dict(save_path=tmp_path / "ck.pt", progress=False)
    train(model, opt, cross_entropy_criterion, loader, torch.device("cpu"), epochs=1,
          config=cfg, **kw)  # fmt: skip
    changed = {**cfg, "lr": 0.1, "batch_size": 8, "seed": 7}
    with pytest.raises(CheckpointError, match="batch_size.*lr.*seed"):
        train(model, opt, cross_entropy_criterion, loader, torch.device("cpu"), epochs=2,
              config=changed, resume_from=tmp_path / "ck_last.pt", **kw)  # fmt: skip
    # more epochs is a safe change: it resumes and accumulates the per-epoch seconds
    more = {**cfg, "epochs": 2}
    _, hist = train(model, opt, cross_entropy_criterion, loader, torch.device("cpu"), epochs=2,
                    config=more, resume_from=tmp_path / "ck_last.pt", **kw)  # fmt: skip
    assert hist["epoch"] == [1, 2] and len(hist["seconds"]) == 2


def test_streaming_evaluate_equals_one_shot_eval():
    """The one evaluator (streamed, no score buffer) gives the numbers of the one-shot
    ``segmentation_eval`` over all softmax scores of the split (the former final-eval path)."""
    model, _, _ = _setup()
    data = _synthetic(10, seed=3)
    loader = make_loader(data, 3, shuffle=False)
    loss, res = evaluate(model, loader, 4, criterion=cross_entropy_criterion)
    with torch.no_grad():
        model.eval()
        scores = torch.cat([model(x).softmax(1) for x, _ in loader])  # (10, 4, H, W)
    ref = segmentation_eval(scores, data.tensors[1], 4)
    for k in ("ap", "ap_step", "iou", "recall", "precision"):
        np.testing.assert_allclose(getattr(res, k), getattr(ref, k), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(res.confusion, ref.confusion)
    assert res.mean_ap == pytest.approx(ref.mean_ap, abs=1e-12)


def test_evaluate_leaves_model_device_and_mode_alone():
    model, _, _ = _setup()
    model.train()
    evaluate(model, make_loader(_synthetic(2), 2, shuffle=False), 4)
    assert model.training and next(model.parameters()).device.type == "cpu"


def test_checkpoint_errors_name_the_file(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file" * 10)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(garbage)
    assert str(garbage) in str(err.value) and "weights_only=False" not in str(err.value)
    no_model = tmp_path / "nomodel.pt"
    torch.save({"epoch": 1}, no_model)
    with pytest.raises(CheckpointError, match="not a segkit checkpoint.*model"):
        load_checkpoint(no_model)


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


@pytest.mark.slow  # 200 steps on real data: about 8 s; test_overfits_one_batch is the fast check
def test_overfits_a_dataset_batch_to_near_zero_loss(data_root):
    from segkit.data import SegmentationDataset

    ds = SegmentationDataset("val", data_root, limit=2)
    # a 64x96 window of two images keeps the test fast; it holds at least 3 classes
    images = torch.stack([ds[i][0] for i in range(2)])[:, :, 96:160, 96:192]  # (2, 3, 64, 96)
    masks = torch.stack([ds[i][1] for i in range(2)])[:, 96:160, 96:192]  # (2, 64, 96)
    assert len(masks.unique()) >= 3
    torch.manual_seed(0)
    model = create_model("unet", num_classes=9, width=0.5)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):  # ~12 s on 2 cores; real data ends near 0.014, synthetic near 0.05
        loss = cross_entropy_criterion(model(images), masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.07


def test_flip_tta_averages_the_mirrored_prediction():
    model, _, _ = _setup()
    model.eval()
    data = _synthetic(4, seed=5)
    loader = make_loader(data, 4, shuffle=False)
    _, plain = evaluate(model, loader, 4)
    _, tta = evaluate(model, loader, 4, tta=True)
    x = data.tensors[0]
    with torch.no_grad():
        avg = (model(x) + model(x.flip(-1)).flip(-1)) / 2  # (4, 4, H, W)
    ref = segmentation_eval(avg.softmax(1), data.tensors[1], 4)
    np.testing.assert_allclose(tta.ap, ref.ap, rtol=1e-6)
    assert not np.allclose(tta.ap, plain.ap)  # it did change something


def test_ema_weights_are_validated_saved_and_resumed(tmp_path):
    model, opt, loader = _setup()
    kw = dict(save_path=tmp_path / "ck.pt", progress=False, ema_decay=0.5,
              valloader=make_loader(_synthetic(4, seed=1), 4, shuffle=False))  # fmt: skip
    _, full = train(
        model, opt, cross_entropy_criterion, loader, torch.device("cpu"), epochs=2, **kw
    )
    ck = load_checkpoint(tmp_path / "ck_last.pt")
    assert ck["raw_model"] is not None
    assert any(not torch.equal(ck["model"][k], ck["raw_model"][k]) for k in ck["model"])
    # resume from epoch 1 continues exactly, EMA included
    model2, opt2, loader2 = _setup()
    train(model2, opt2, cross_entropy_criterion, loader2, torch.device("cpu"), epochs=1,
          **{**kw, "save_path": tmp_path / "b.pt"})  # fmt: skip
    model2, opt2, loader2 = _setup()
    _, resumed = train(model2, opt2, cross_entropy_criterion, loader2, torch.device("cpu"),
                       epochs=2, resume_from=tmp_path / "b_last.pt",
                       **{**kw, "save_path": tmp_path / "b.pt"})  # fmt: skip
    assert resumed["val_loss"] == pytest.approx(full["val_loss"], rel=1e-6)


def test_ema_follows_the_warmup_formula_by_hand():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    ema = make_ema(model, 0.995)
    ref = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ema.update_parameters(model)  # the first update copies
    for step in range(1, 40):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(torch.randn(2, 3, 8, 8))  # moves the BatchNorm statistics
        d = min(0.995, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            ref[k] = v.clone() if not v.is_floating_point() else d * ref[k] + (1 - d) * v
        ema.update_parameters(model)
    got = ema.module.state_dict()
    for k, v in ref.items():
        torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-5)
    # a constant 0.995 would still hold most of the first weights after 40 steps
    assert ema_decay_at(0.995, 39) == pytest.approx(40 / 49)


def test_cpu_bf16_autocast_trains_and_evaluates():
    model, opt, loader = _setup()
    _, hist = train(model, opt, cross_entropy_criterion, loader, torch.device("cpu"), epochs=1,
                    valloader=loader, num_classes=4, progress=False, cpu_bf16=True)  # fmt: skip
    assert np.isfinite(hist["train_loss"][0]) and 0 <= hist["val_map"][0] <= 1


def test_a_finished_run_in_a_renamed_folder_is_reused_but_not_a_changed_one(tmp_path):
    cfg = TrainConfig(model="unet", run_name="lever_recipe", out_dir=str(tmp_path)).to_dict()
    old = tmp_path / "lever_recipe"
    old.mkdir()
    (old / "results_val.json").write_text(json.dumps({"config": cfg, "metrics": {"mean_ap": 0.5}}))
    new = old.rename(tmp_path / "lever_inverse")  # the folder is the name
    moved = {**cfg, "run_name": "lever_inverse"}
    assert finished_results(new, moved)["metrics"]["mean_ap"] == 0.5
    with pytest.raises(CheckpointError, match="class_weighting"):
        finished_results(new, {**moved, "class_weighting": "sqrt"})
    assert finished_results(tmp_path / "unet", moved) is None  # nothing there yet
    # a run saved before tta / dice_weight existed: they were off, as their defaults are today
    older = {k: v for k, v in cfg.items() if k not in ("tta", "dice_weight")}
    (new / "results_val.json").write_text(json.dumps({"config": older, "metrics": {}}))
    assert finished_results(new, moved) is not None
    with pytest.raises(CheckpointError, match="tta"):
        finished_results(new, {**moved, "tta": True})


def test_select_metric_validation_does_not_compute_is_one_clear_error(tmp_path):
    """val_map needs num_classes: asking for it without them stops before any checkpoint is kept;
    without a valloader the training loss picks the epoch."""
    model, opt, loader = _setup()
    val = make_loader(_synthetic(4, seed=1), 4, shuffle=False)
    with pytest.raises(ValueError, match="'val_map' is not computed.*pass num_classes"):
        train(model, opt, cross_entropy_criterion, loader, torch.device("cpu"), epochs=1,
              valloader=val, select_metric="val_map", progress=False)  # fmt: skip
    _, history = train(model, opt, cross_entropy_criterion, loader, torch.device("cpu"), epochs=2,
                       select_metric="val_map", progress=False)  # fmt: skip
    best = min(range(2), key=lambda i: history["train_loss"][i])
    assert history["best_epoch"] == best + 1
