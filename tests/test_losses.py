import pytest
import torch
import torch.nn.functional as F

from segkit.losses import class_weights, cross_entropy_criterion


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore", [None, 255])
def test_matches_torch_value_and_gradient(weighted, ignore):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 5, (2, 6, 7), generator=g)
    if ignore is not None:
        labels[0, :2] = ignore
    w = torch.rand(5, generator=g, dtype=torch.float64) + 0.1 if weighted else None
    ours = cross_entropy_criterion(logits, labels, w, "cpu", ignore_index=ignore)
    (g1,) = torch.autograd.grad(ours, logits)
    ref = F.cross_entropy(logits, labels, weight=w, ignore_index=-100 if ignore is None else ignore)
    (g2,) = torch.autograd.grad(ref, logits)
    assert abs(ours.item() - ref.item()) < 1e-6
    assert torch.allclose(g1, g2, atol=1e-6)


def test_hand_computed_value_and_assignment_shapes():
    # two pixels, two classes: logits (0, 0) -> p = 0.5, and (log 3, 0) -> p(class 0) = 0.75
    logits = torch.tensor([[[[0.0, torch.log(torch.tensor(3.0))]], [[0.0, 0.0]]]])  # (1, 2, 1, 2)
    labels = torch.tensor([[[[1, 0]]]])  # (1, 1, 1, 2), the assignment's layout
    w = torch.tensor([1.0, 3.0])
    expected = (3 * -torch.log(torch.tensor(0.5)) + 1 * -torch.log(torch.tensor(0.75))) / 4
    assert torch.isclose(cross_entropy_criterion(logits, labels, w), expected, atol=1e-6)


def test_out_of_range_labels_raise():
    with pytest.raises(ValueError, match="labels must lie"):
        cross_entropy_criterion(torch.zeros(1, 3, 2, 2), torch.full((1, 2, 2), 3))


def test_class_weights_inverse_frequency():
    w = class_weights(torch.tensor([50, 25, 25]), normalize=False, cap=None)
    assert torch.allclose(w, torch.tensor([1 / (3 * 0.5), 1 / (3 * 0.25), 1 / (3 * 0.25)]))
    w = class_weights(torch.tensor([1000, 1, 0, 1000]), cap=None)  # raw 1/(4 f): 0.5, 501, 0, 0.5
    assert w[2] == 0
    assert torch.isclose(w[[0, 1, 3]].mean(), torch.tensor(1.0))  # mean 1 over present classes
    assert torch.isclose(w[1] / w[0], torch.tensor(1000.0))
    assert class_weights(torch.tensor([1000, 1, 0, 1000]), cap=2.0)[1] == 2.0


def test_class_weight_policies_hand_computed():
    from segkit.losses import class_weights

    counts = torch.tensor([600, 300, 100, 0])  # frequencies 0.6, 0.3, 0.1 and an absent class
    inv = torch.tensor([1 / 0.6, 1 / 0.3, 1 / 0.1]) / 4  # total / (C * count)
    # "inverse": mean 1 over present classes, then the cap
    w = class_weights(counts, cap=1.5)
    expect = (inv / inv.mean()).clamp(max=1.5)
    torch.testing.assert_close(w[:3], expect.float())
    assert w[3] == 0
    # "sqrt": square root, the cap first, then mean 1 (so the mean stays exactly 1)
    w = class_weights(counts, cap=0.8, power=0.5, cap_first=True)
    s = inv.sqrt().clamp(max=0.8)
    torch.testing.assert_close(w[:3], (s / s.mean()).float())
    assert w[:3].mean().item() == pytest.approx(1.0)


def test_dice_loss_hand_computed_and_ignores_void():
    from segkit.losses import dice_loss

    logits = torch.tensor([[[[10.0, -10.0]], [[-10.0, 10.0]]]])  # (1, 2, 1, 2): predicts 0, 1
    target = torch.tensor([[[0, 1]]])
    assert dice_loss(logits, target, eps=0.0).item() == pytest.approx(0.0, abs=1e-6)
    wrong = torch.tensor([[[1, 0]]])
    assert dice_loss(logits, wrong, eps=0.0).item() == pytest.approx(1.0, abs=1e-6)
    void = torch.tensor([[[0, 255]]])  # the second pixel counts nowhere
    # class 0: P=(1,0) T=(1,0) -> dice 1; class 1: P=0, T=0 -> (0+1)/(0+1) = 1 with eps=1
    assert dice_loss(logits, void, eps=1.0).item() == pytest.approx(0.0, abs=1e-4)
