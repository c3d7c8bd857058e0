import numpy as np
import torch

from segkit.baseline import simple_predict, simple_train


def _loader(labels, batch):
    for i in range(0, len(labels), batch):
        yield torch.zeros(len(labels[i : i + batch]), 3, 2, 3), labels[i : i + batch]


def test_frequencies_independent_of_batch_size():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (7, 2, 3), generator=g)
    expected = np.stack([(labels.numpy() == c).mean(0) for c in range(4)])  # (C, H, W)
    for batch in (1, 3, 7):
        freq = simple_train(4, _loader(labels, batch))
        assert freq.shape == (4, 2, 3)
        np.testing.assert_allclose(freq.numpy(), expected, atol=1e-7)


def test_predict_shapes():
    labels = torch.randint(0, 4, (5, 2, 3))
    freq = simple_train(4, _loader(labels, 2))
    gts, preds = simple_predict(_loader(labels, 2), freq)
    assert gts.shape == (5, 1, 2, 3) and preds.shape == (5, 4, 2, 3)
    np.testing.assert_array_equal(gts[:, 0], labels.numpy())
    np.testing.assert_allclose(preds[3], freq.numpy())


def test_real_val_baseline_matches_the_course(real_data):
    """The course's per-pixel baseline on the real val split: mean AP about 0.24-0.25."""
    from segkit.experiment import run_baseline

    m = run_baseline(str(real_data), "val")["metrics"]
    assert 0.24 <= m["mean_ap"] <= 0.26  # course "voc" AP (write-up: 0.24)
    assert abs(m["mean_ap_step"] - m["mean_ap"]) < 0.01
    assert 0.13 < m["miou"] < 0.16 and 0.40 < m["pixel_acc"] < 0.46
