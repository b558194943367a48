"""The objectives against brute-force loops over samples and pairs, their gradients, and
nearest-center prediction and accuracy."""
import math

import pytest
import torch

from losses import (CenterLoss, SoftmaxLoss, StandaloneCenterLoss, build_objective,
                    center_statistics, class_means, hyper_problems, nearest_center)

# Six 2-D features of three classes, two of them identical (a coincident pair of different
# classes: index 1 and 4) and one pair of the same class coinciding (index 0 and 3).
FEATURES = [[0.0, 0.0], [1.0, 2.0], [-1.5, 0.5], [0.0, 0.0], [1.0, 2.0], [3.0, -1.0]]
LABELS = [0, 1, 2, 0, 2, 1]
CENTERS = [[0.5, 0.0], [1.0, 1.0], [-1.0, 1.0]]


def loop_intra(x, y, c):
    total = 0.0
    for i in range(len(x)):
        total += sum((x[i][k] - c[y[i]][k]) ** 2 for k in range(len(x[i])))
    return total / len(x)


def loop_inter(x, y, delta):
    total = 0.0
    for i in range(len(x)):
        for j in range(len(x)):
            if i != j and y[i] != y[j]:
                d2 = sum((x[i][k] - x[j][k]) ** 2 for k in range(len(x[i])))
                total += math.log(delta + d2)
    return -total / len(x)


def standalone(dtype, delta, w_intra=1.0, w_inter=0.1):
    loss = StandaloneCenterLoss(3, 2, weight_intra=w_intra, weight_inter=w_inter, delta=delta)
    loss.center_loss.centers.data = torch.tensor(CENTERS)
    return loss.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("delta", [1.0, 1e-6])
def test_standalone_matches_loops(dtype, delta):
    x, y = torch.tensor(FEATURES, dtype=dtype), torch.tensor(LABELS)
    out = standalone(dtype, delta, w_intra=0.7, w_inter=0.3)(x, y)
    intra = 0.7 * loop_intra(FEATURES, LABELS, CENTERS)
    inter = 0.3 * loop_inter(FEATURES, LABELS, delta)
    tol = dict(rel=1e-5) if dtype == torch.float32 else dict(rel=1e-12)
    assert out["intra"].item() == pytest.approx(intra, **tol)
    assert out["inter"].item() == pytest.approx(inter, **tol)
    assert out["loss"].item() == pytest.approx(intra + inter, **tol)
    assert out["loss"].dtype == dtype


def test_inter_hand_computed_value():
    # Two points of different classes at distance 2: ordered pairs (0,1) and (1,0), each
    # log(1 + 4), divided by m = 2.
    loss = StandaloneCenterLoss(2, 2, weight_inter=1.0)
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    assert loss.inter(x, torch.tensor([0, 1])).item() == pytest.approx(-math.log(5.0))


def test_inter_is_zero_when_the_batch_has_one_class():
    loss = StandaloneCenterLoss(3, 2, delta=1e-12)
    x = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 2.0]], requires_grad=True)
    out = loss(x, torch.tensor([2, 2, 2]))
    assert out["inter"].item() == 0.0
    out["loss"].backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("delta", [1.0, 1e-6])
def test_standalone_gradient_matches_loops(delta):
    """Autograd gradient of the features against the analytic gradient of the loop formula,
    with coincident points of different classes in the batch (finite for delta > 0)."""
    x = torch.tensor(FEATURES, dtype=torch.float64, requires_grad=True)
    loss = standalone(torch.float64, delta, w_intra=1.0, w_inter=1.0)
    loss(x, torch.tensor(LABELS))["loss"].backward()
    m = len(FEATURES)
    expected = torch.zeros(m, 2, dtype=torch.float64)
    xs, c = torch.tensor(FEATURES, dtype=torch.float64), torch.tensor(CENTERS, dtype=torch.float64)
    for i in range(m):
        expected[i] += 2 * (xs[i] - c[LABELS[i]]) / m
        for j in range(m):
            if LABELS[i] != LABELS[j]:
                diff = xs[i] - xs[j]
                # d/dx_i of -(1/m) log(delta + d2), counted for (i, j) and (j, i)
                expected[i] -= 2 * (2 * diff / (delta + diff @ diff)) / m
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad, expected)


@pytest.mark.parametrize("name", ["xent", "cent", "standalone"])
def test_gradcheck(name):
    torch.manual_seed(0)
    objective = build_objective(name, 3, 2, weight_cent=0.5, weight_intra=1.0, weight_inter=0.2,
                                inter_delta=0.5).double()
    x = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    params = [p for p in objective.parameters()]
    assert torch.autograd.gradcheck(lambda x, *_: objective(x, y)["loss"], (x, *params))


def test_center_loss_matches_loop():
    x, y = torch.tensor(FEATURES), torch.tensor(LABELS)
    loss = CenterLoss(3, 2)
    loss.centers.data = torch.tensor(CENTERS)
    assert loss(x, y).item() == pytest.approx(loop_intra(FEATURES, LABELS, CENTERS), rel=1e-6)


def test_centers_start_spread_on_a_circle_in_2d():
    num_classes, radius = 10, 7.0
    torch.manual_seed(3)
    c = CenterLoss(num_classes, 2, radius=radius).centers.detach().double()
    assert c.norm(dim=1) == pytest.approx([radius] * num_classes, rel=1e-6)
    # evenly around the circle: sorted angles 2 pi / classes apart, each center's nearest
    # neighbour at the chord 2 r sin(pi / classes)
    angles = sorted(math.atan2(py, px) % (2 * math.pi) for px, py in c.tolist())
    gaps = [b - a for a, b in zip(angles, angles[1:])] + [angles[0] + 2 * math.pi - angles[-1]]
    assert gaps == pytest.approx([2 * math.pi / num_classes] * num_classes, abs=1e-6)
    d = torch.cdist(c, c) + torch.eye(num_classes) * 1e9
    chord = 2 * radius * math.sin(math.pi / num_classes)
    assert d.min(dim=1).values.tolist() == pytest.approx([chord] * num_classes, rel=1e-6)
    # the classes' order around the circle comes from the seed
    torch.manual_seed(3)
    assert torch.equal(CenterLoss(num_classes, 2, radius=radius).centers, c.float())
    torch.manual_seed(4)
    assert not torch.equal(CenterLoss(num_classes, 2, radius=radius).centers, c.float())


def test_centers_start_spread_above_2d_and_at_random_with_radius_0():
    torch.manual_seed(0)
    c = CenterLoss(10, 128, radius=3.0).centers.detach()
    assert c.norm(dim=1).tolist() == pytest.approx([3.0] * 10, rel=1e-5)
    torch.manual_seed(0)
    expected = torch.randn(10, 128)
    torch.manual_seed(0)
    assert torch.equal(CenterLoss(10, 128).centers.detach(), expected)  # the reference start
    s = build_objective("standalone", 10, 2, center_radius=5.0)
    assert s.centers.detach().norm(dim=1).tolist() == pytest.approx([5.0] * 10, rel=1e-6)
    assert hyper_problems("standalone", {"center_radius": -1.0}) == [
        "--center-radius must not be negative, got -1.0"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softmax_objectives_match_loops(dtype):
    torch.manual_seed(0)
    x, y = torch.tensor(FEATURES, dtype=dtype), torch.tensor(LABELS)
    cent = SoftmaxLoss(3, 2, weight_cent=0.25).to(dtype)
    cent.center_loss.centers.data = torch.tensor(CENTERS, dtype=dtype)
    w, b = cent.head.weight.tolist(), cent.head.bias.tolist()
    xent = 0.0
    for i, f in enumerate(FEATURES):
        logits = [sum(w[k][d] * f[d] for d in range(2)) + b[k] for k in range(3)]
        xent += math.log(sum(math.exp(z) for z in logits)) - logits[LABELS[i]]
    xent /= len(FEATURES)
    out = cent(x, y)
    tol = dict(rel=1e-5) if dtype == torch.float32 else dict(rel=1e-12)
    assert out["xent"].item() == pytest.approx(xent, **tol)
    assert out["center"].item() == pytest.approx(0.25 * loop_intra(FEATURES, LABELS, CENTERS), **tol)
    assert out["loss"].item() == pytest.approx(out["xent"].item() + out["center"].item(), **tol)
    plain = SoftmaxLoss(3, 2).to(dtype)
    assert set(plain(x, y)) == {"loss", "xent"} and plain.centers is None


def test_nearest_center_and_predictions():
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.tensor([[1.0, 1.0], [9.0, -1.0], [-1.0, 7.0], [5.1, 0.0], [4.9, 0.0]])
    assert nearest_center(x, centers).tolist() == [0, 1, 2, 1, 0]
    loss = StandaloneCenterLoss(3, 2)
    loss.center_loss.centers.data = centers
    assert loss.predict(x).tolist() == [0, 1, 2, 1, 0]
    head = SoftmaxLoss(3, 2)
    head.head.weight.data = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    head.head.bias.data.zero_()
    assert head.predict(torch.tensor([[2.0, 1.0], [0.0, 3.0], [-1.0, -1.0]])).tolist() == [0, 1, 2]


def test_accuracy_over_a_split_with_a_small_last_batch():
    """10 samples in batches of 4, 4, 2: 7 correct -> 0.7, whereas the mean of the per-batch
    accuracies (3/4, 4/4, 0/2) would be 0.583."""
    from engine import extract_features
    from utils import Dist
    from datasets import Split

    centers = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    # "images" whose mean pixel is the feature: class 1 -> bright, class 0 -> dark
    pixels = torch.tensor([0, 0, 255, 0, 255, 255, 255, 255, 0, 0], dtype=torch.uint8)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    split = Split(pixels.view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous(), labels, ["a", "b"])

    class MeanPixel(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(1, 2, 3)).unsqueeze(1).expand(-1, 2)

    features = extract_features(MeanPixel(), split, Dist(), 2, batch_size=4)
    predictions = nearest_center(features, centers)
    assert predictions.tolist() == [0, 0, 1, 0, 1, 1, 1, 1, 0, 0]
    from losses import accuracy
    assert accuracy(predictions, labels) == pytest.approx(0.7)


def test_class_means_and_center_statistics():
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, 5.0]])
    y = torch.tensor([0, 0, 1, 1])
    means = class_means(x, y, 3)
    torch.testing.assert_close(means, torch.tensor([[1.0, 0.0], [0.0, 4.0], [0.0, 0.0]]))
    stats = center_statistics(x, y, means[:2])
    assert stats["dist_to_center_mean"] == pytest.approx([1.0, 1.0])
    assert stats["dist_to_center_std"] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert stats["center_distances"][0][1] == pytest.approx(math.hypot(1.0, 4.0))
    assert stats["center_distances"][1][1] == 0.0


def test_registry():
    assert set(build_objective("xent", 10, 2)(torch.zeros(4, 2), torch.arange(4))) == {"loss", "xent"}
    assert set(build_objective("cent", 10, 2)(torch.zeros(4, 2), torch.arange(4))) == {
        "loss", "xent", "center"}
    s = build_objective("standalone", 10, 2, weight_intra=2.0, weight_inter=0.5, inter_delta=0.1)
    assert (s.weight_intra, s.weight_inter, s.delta) == (2.0, 0.5, 0.1)
    with pytest.raises(ValueError, match="xent, cent, standalone, center-push"):
        build_objective("softmax", 10, 2)

