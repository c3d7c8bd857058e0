"""segkit.predict: any image a user has (sizes, modes, EXIF, corrupt files) through a run folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import segkit.maskrcnn
from segkit import cli, predict
from segkit.config import InstanceConfig, MaskRCNNConfig, TrainConfig
from segkit.constants import NUM_CLASSES, PALETTE
from segkit.models import create_model
from segkit.models.instance_unet import InstanceUNet
from segkit.models.maskrcnn import build_maskrcnn
from segkit.predict import load_image, main_predict, model_input_size, predict_image

ORIENTATION = 0x0112  # the EXIF orientation tag


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("unet", NUM_CLASSES).eval()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, model: torch.nn.Module) -> Path:
    """A semantic run folder as `segkit train` leaves it (only what predict reads)."""
    return _save_run(model, tmp_path_factory.mktemp("runs"))


def _save_run(net: torch.nn.Module, parent: Path, **config) -> Path:
    run = parent / "unet"
    run.mkdir()
    cfg = {**TrainConfig(model="unet").to_dict(), **config}
    torch.save({"model": net.state_dict(), "config": cfg}, run / "checkpoint.pt")
    return run


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _exif_jpeg(path: Path, orientation: int = 6) -> Path:
    """A 64 wide x 40 high JPEG with a red top-left block, shown rotated by its EXIF tag."""
    arr = np.full((40, 64, 3), 200, np.uint8)
    arr[:10, :16] = (255, 0, 0)
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(arr).save(path, exif=exif.tobytes(), quality=95)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the kinds of files a user may point predict at."""
    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(_rgb(30, 40)[..., 0]).save(d / "gray.png")  # "L"
    rgba = np.dstack([_rgb(48, 36, 1), np.full((48, 36), 128, np.uint8)])
    Image.fromarray(rgba).save(d / "rgba.png")  # "RGBA"
    Image.fromarray(_rgb(33, 50, 2)).convert("P", palette=Image.Palette.ADAPTIVE).save(
        d / "palette.png"
    )
    Image.fromarray(_rgb(157, 301, 3)).save(d / "odd.png")  # 301 wide x 157 high
    _exif_jpeg(d / "rotated.jpg")  # stored 64x40, shown 40 wide x 64 high
    (d / "broken.jpg").write_bytes(np.random.default_rng(4).bytes(2000))
    (d / "notes.txt").write_text("not an image")
    return d


# (H, W) of each readable image as shown, i.e. after EXIF rotation
SIZES = {"gray": (30, 40), "rgba": (48, 36), "palette": (33, 50), "odd": (157, 301),
         "rotated": (64, 40)}  # fmt: skip


# ----------------------------------------------------------------------------- reading
def test_load_image_modes_give_rgb_uint8(images: Path) -> None:
    for stem, size in SIZES.items():
        path = next(images.glob(stem + ".*"))
        image = load_image(path)
        assert image.dtype == torch.uint8 and tuple(image.shape) == (3, *size), stem


def test_load_image_applies_exif_orientation(tmp_path: Path) -> None:
    path = _exif_jpeg(tmp_path / "r.jpg")
    image = load_image(path)  # (3, 64, 40)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), expected)
    # orientation 6: the stored top-left corner is shown top-right
    assert image[0, :8, -8:].float().mean() > 230 and image[1, :8, -8:].float().mean() < 40


def test_load_image_flattens_transparency_onto_white(tmp_path: Path) -> None:
    rgba = np.zeros((8, 8, 4), np.uint8)  # black, fully transparent
    Image.fromarray(rgba).save(tmp_path / "t.png")
    assert int(load_image(tmp_path / "t.png").min()) == 255


def test_load_image_scales_16_bit_grayscale(tmp_path: Path) -> None:
    Image.fromarray(np.full((6, 5), 65535, np.uint16)).save(tmp_path / "g16.png")
    image = load_image(tmp_path / "g16.png")
    assert tuple(image.shape) == (3, 6, 5) and int(image.min()) == 255


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\nrubbish", None])
def test_load_image_unreadable_names_the_file(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bad.png"
    if content is None:  # a real PNG cut in half
        Image.fromarray(_rgb(64, 64)).save(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"^{path}: not a readable image \(.+\)$"):
        load_image(path)


# ----------------------------------------------------------------------------- predicting
@pytest.mark.parametrize(
    ("h", "w", "expected"),
    [
        (224, 288, (224, 288)),
        (288, 224, (288, 224)),
        (3000, 4000, (224, 288)),
        (10, 10, (256, 256)),
    ],
)
def test_model_input_size_keeps_training_scale(h: int, w: int, expected: tuple) -> None:
    assert model_input_size(h, w) == expected


def test_predict_image_any_size_back_at_input_size(model: torch.nn.Module) -> None:
    image = torch.from_numpy(_rgb(157, 301)).permute(2, 0, 1)  # (3, 157, 301)
    model.train()
    labels, probs = predict_image(model, image)
    assert model.training  # mode restored
    model.eval()
    assert labels.shape == (157, 301) and labels.dtype == torch.int64
    assert probs.shape == (NUM_CLASSES, 157, 301) and probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(0), torch.ones(157, 301))
    assert torch.equal(labels, probs.argmax(0))
    # a float image in [0, 1] is the same image
    labels_f, _ = predict_image(model, image.float() / 255)
    assert (labels_f == labels).float().mean() > 0.99


class ColourModel(torch.nn.Module):
    """Logits = 10 * the RGB channels: the label is the dominant colour of each pixel."""

    stride = 32

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert images.shape[-2] % 32 == 0 and images.shape[-1] % 32 == 0
        return images * 10  # (N, 3, H, W)


def test_predict_image_labels_align_with_the_image() -> None:
    arr = np.zeros((157, 301, 3), np.uint8)  # red left, green right, blue bottom-right block
    arr[:, :150, 0] = 255
    arr[:, 150:, 1] = 255
    arr[100:, 200:] = (0, 0, 255)
    expected = np.argmax(arr, axis=2)
    labels, probs = predict_image(ColourModel(), torch.from_numpy(arr).permute(2, 0, 1))
    wrong = labels.numpy() != expected
    assert wrong.mean() < 0.02  # only next to the edges
    assert not wrong[:, :140].any() and not wrong[:90, 160:].any() and not wrong[110:, 210:].any()


# ----------------------------------------------------------------------------- the command
def _check_outputs(out: Path, stem: str, size: tuple[int, int]) -> None:
    labels = Image.open(out / f"{stem}_labels.png")
    assert labels.mode == "P" and labels.size == size[::-1], stem
    ids = np.asarray(labels)
    assert ids.max() < NUM_CLASSES
    colours = np.unique(np.asarray(labels.convert("RGB")).reshape(-1, 3), axis=0)
    assert {tuple(c) for c in colours.tolist()} <= set(PALETTE), stem
    overlay = Image.open(out / f"{stem}_overlay.png")
    assert overlay.mode == "RGB" and overlay.size == size[::-1], stem
    probs = np.load(out / f"{stem}_probs.npy")
    assert probs.dtype == np.float16 and probs.shape == (NUM_CLASSES, *size), stem
    np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=1e-2)


def test_main_predict_folder_with_a_corrupt_file(
    run_dir: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    rc = main_predict(run_dir, [images], out, probs=True, device="cpu")
    captured = capsys.readouterr()
    assert rc == 1  # one image failed
    for stem, size in SIZES.items():
        _check_outputs(out, stem, size)
    assert not list(out.glob("broken*"))
    assert f"{images / 'broken.jpg'}: not a readable image" in captured.err
    assert f"skipped: {images / 'notes.txt'}" in captured.out
    assert "predicted 5 of 6 images" in captured.out and "1 failed, 1 skipped" in captured.out


def test_predict_paths_results_in_input_order(run_dir: Path, tmp_path: Path) -> None:
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        Image.fromarray(_rgb(20, 30)).save(tmp_path / sub / "x.png")
    inputs = [tmp_path / "a" / "x.png", tmp_path / "missing.jpg", tmp_path / "b"]
    results = predict.predict_paths(run_dir, inputs, tmp_path / "out")
    assert [r.source for r in results] == [*inputs[:2], tmp_path / "b" / "x.png"]
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error == f"{inputs[1]}: no such file or folder"
    assert [p.name for p in results[0].written] == ["x_labels.png", "x_overlay.png"]
    assert [p.name for p in results[2].written] == ["x-2_labels.png", "x-2_overlay.png"]


def test_output_names_never_clash() -> None:
    images = [Path(p) for p in ("a/x.png", "b/X.jpg", "c/x-2.png", "x.bmp")]
    stems = predict._output_stems(images, Path("o"))
    assert [s.name for s in stems] == ["x", "X-2", "x-2-2", "x-3"]


def test_label_png_values_are_the_labels(
    run_dir: Path, model: torch.nn.Module, images: Path, tmp_path: Path
) -> None:
    """The label PNG is "P" mode: its values are class ids (as the dataset's label PNGs)."""
    assert main_predict(run_dir, [images / "odd.png"], tmp_path) == 0
    labels, _ = predict_image(model, load_image(images / "odd.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "odd_labels.png")), labels)


def test_main_predict_all_good_returns_0(run_dir: Path, tmp_path: Path) -> None:
    Image.fromarray(_rgb(24, 24)).save(tmp_path / "one.bmp")
    assert main_predict(run_dir, [tmp_path / "one.bmp"], tmp_path / "o", device="cpu") == 0
    assert (tmp_path / "o" / "one_labels.png").is_file()


def test_main_predict_no_images_returns_1(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "empty").mkdir()
    assert main_predict(run_dir, [tmp_path / "empty"], tmp_path / "o") == 1
    assert "no image files" in capsys.readouterr().err


def test_bad_run_folders_exit_2(
    model: torch.nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    Image.fromarray(_rgb(24, 24)).save(tmp_path / "one.png")
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "unknown").mkdir()
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "checkpoint.pt").write_bytes(b"garbage bytes")
    other = _save_run(model, tmp_path / "other", model="no_such_model")
    unknown = _save_run(model, tmp_path / "unknown", task="no_such_task")
    cases = {
        other: "which this segkit cannot build (unknown model 'no_such_model'",
        unknown: "holds a no_such_task 'unet' checkpoint (9 classes), which predict cannot run",
        tmp_path / "nope": "no such run folder",
        tmp_path / "not_a_run": "not a segkit run folder (no checkpoint.pt",
        garbage: "not a segkit checkpoint",
    }
    for run, message in cases.items():
        assert main_predict(run, [tmp_path / "one.png"], tmp_path / "o") == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and str(run) in err, err
        assert "weights_only=False" not in err
    assert not (tmp_path / "o").exists()


def test_run_folder_saved_before_the_task_field_still_predicts(
    run_dir: Path, tmp_path: Path
) -> None:
    """A semantic run folder whose config has no ``task`` (saved before it existed)."""
    ck = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ck["config"].pop("task") == "semantic"
    old = tmp_path / "old" / "unet"
    old.mkdir(parents=True)
    torch.save(ck, old / "checkpoint.pt")
    pred = predict.load_predictor(old, torch.device("cpu"))
    assert pred.kind == "semantic" and pred.cfg == TrainConfig(model="unet")
    Image.fromarray(_rgb(40, 56)).save(tmp_path / "one.png")
    assert main_predict(old, [tmp_path / "one.png"], tmp_path / "o") == 0
    assert main_predict(run_dir, [tmp_path / "one.png"], tmp_path / "n") == 0
    for name in ("one_labels.png", "one_overlay.png"):
        assert (tmp_path / "o" / name).read_bytes() == (tmp_path / "n" / name).read_bytes()


def test_cli_predict(run_dir: Path, images: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    argv = ["predict", str(run_dir), str(images / "odd.png"), str(images / "broken.jpg")]
    assert cli.main([*argv, "--out", str(out), "--device", "cpu"]) == 1
    assert "broken.jpg: not a readable image" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["odd_labels.png", "odd_overlay.png"]
    rc = cli.main(["predict", str(tmp_path / "nope"), str(images), "--out", str(out)])
    assert rc == 2 and "no such run folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- instance runs
def test_instance_run_writes_instance_overlays(tmp_path: Path, images: Path) -> None:
    """An instance run folder (checkpoint + postprocess.json) through the real run loader."""
    torch.manual_seed(0)
    cfg = InstanceConfig(model="unet", num_energy_levels=4, short_side=64, max_size=96)
    run = tmp_path / "instance"
    run.mkdir()
    net = InstanceUNet(cfg.model, cfg.num_energy_levels, weights=None)
    torch.save({"model": net.state_dict(), "config": cfg.to_dict()}, run / "checkpoint.pt")
    params = {"sem_threshold": 0.0, "core_level": 1.0, "min_size": 0}  # all foreground
    (run / "postprocess.json").write_text(json.dumps({"params": params}))
    out = tmp_path / "out"
    inputs = [images / "odd.png", images / "rotated.jpg", images / "broken.jpg"]
    assert main_predict(run, inputs, out, probs=True, device="cpu") == 1
    for stem in ("odd", "rotated"):
        size = SIZES[stem]
        instances = Image.open(out / f"{stem}_instances.png")
        assert instances.mode == "P" and instances.size == size[::-1]
        assert np.asarray(instances).min() >= 1
        assert Image.open(out / f"{stem}_overlay.png").size == size[::-1]
        prob = np.load(out / f"{stem}_probs.npy")
        assert prob.shape == (1, *size) and prob.min() >= 0 and prob.max() <= 1
    # the run's tuned thresholds are the ones used: now nothing is foreground
    params["sem_threshold"] = 1.0
    (run / "postprocess.json").write_text(json.dumps({"params": params}))
    assert main_predict(run, [images / "odd.png"], out) == 0
    assert np.asarray(Image.open(out / "odd_instances.png")).max() == 0
    # a run folder saved before the task field: still an instance run
    old = {k: v for k, v in cfg.to_dict().items() if k != "task"}
    torch.save({"model": net.state_dict(), "config": old}, run / "checkpoint.pt")
    assert predict.load_predictor(run, torch.device("cpu")).kind == "instance"
    assert main_predict(run, [images / "odd.png"], tmp_path / "old") == 0
    for name in ("odd_instances.png", "odd_overlay.png"):
        assert (tmp_path / "old" / name).read_bytes() == (out / name).read_bytes()


def test_maskrcnn_run_writes_instances_with_its_val_thresholds(
    tmp_path: Path, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Mask R-CNN run folder through the real run loader; its detections (replaced by known
    ones) become labels by the run's thresholds, by score, as worked out by hand here."""
    cfg = MaskRCNNConfig(weights="none", short_side=64, max_size=96, fpn_channels=16)
    run = tmp_path / "maskrcnn"
    run.mkdir()
    net = build_maskrcnn("none", min_size=64, max_size=96, fpn_channels=16)
    torch.save({"model": net.state_dict(), "config": cfg.to_dict()}, run / "checkpoint.pt")
    params = {"score_threshold": 0.5, "mask_threshold": 0.5}
    (run / "postprocess.json").write_text(json.dumps({"selected_on": "val", "params": params}))
    seen = []

    def detections(model: torch.nn.Module, image: torch.Tensor) -> tuple:
        seen.append(model.training)
        h, w = image.shape[-2:]
        masks = np.zeros((3, h, w), np.float32)
        masks[0, : h // 2] = 0.9  # top half, score 0.9
        masks[1, :, : w // 2] = 0.8  # left half, score 0.6: loses the top-left quarter
        masks[2] = 0.95  # everything, score 0.3: below the run's threshold
        return np.array([0.9, 0.6, 0.3], np.float32), masks

    monkeypatch.setattr(segkit.maskrcnn, "predict_detections", detections)
    pred = predict.load_predictor(run, torch.device("cpu"))
    assert (pred.kind, pred.task, pred.params) == ("instance", "maskrcnn", params)
    assert main_predict(run, [images / "odd.png"], tmp_path / "out", probs=True) == 0
    assert seen == [False]  # eval mode
    h, w = SIZES["odd"]
    expected = np.zeros((h, w), np.uint8)
    expected[:, : w // 2] = 2
    expected[: h // 2] = 1
    labels = np.asarray(Image.open(tmp_path / "out" / "odd_instances.png"))
    np.testing.assert_array_equal(labels, expected)
    prob = np.load(tmp_path / "out" / "odd_probs.npy").astype(np.float32)  # (1, H, W)
    want = np.where(expected == 1, 0.9, np.where(expected == 2, 0.8, 0.0))
    np.testing.assert_allclose(prob[0], want, atol=1e-3)
