"""geometry_metrics: the center distance ratio, NC1 (Papyan, Han & Donoho), the feature norms
and the smallest angle between centers, on hand-built features with known answers and
against numpy."""
import math

import numpy as np
import pytest
import torch

from losses import geometry_metrics


def numpy_metrics(x, y, centers=None):
    """The same statistics, written out with numpy and loops over classes and pairs."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y)
    classes = sorted(set(y.tolist()))
    means = {k: x[y == k].mean(axis=0) for k in classes}
    c = means if centers is None else {k: np.asarray(centers[k], dtype=np.float64) for k in classes}
    spread = np.mean([np.linalg.norm(x[i] - c[y[i]]) for i in range(len(x))])
    between = [np.linalg.norm(c[j] - c[k]) for j in classes for k in classes if j != k]
    within = sum(np.outer(x[i] - means[y[i]], x[i] - means[y[i]]) for i in range(len(x))) / len(x)
    g = x.mean(axis=0)
    sigma_b = sum(np.outer(means[k] - g, means[k] - g) for k in classes) / len(classes)
    nc1 = np.trace(within @ np.linalg.pinv(sigma_b)) / len(classes)
    norms = np.linalg.norm(x, axis=1)
    angles = [math.degrees(math.acos(np.clip(c[j] @ c[k] / np.linalg.norm(c[j]) / np.linalg.norm(c[k]),
                                             -1, 1)))
              for j in classes for k in classes if j != k]
    return {"center_ratio": np.mean(between) / spread, "nc1": nc1, "norm_mean": norms.mean(),
            "norm_std": norms.std(), "min_center_angle": min(angles)}


def test_known_answers():
    # two classes around (-2, 0) and (2, 0), each spread along the diagonal (1, -1):
    # every sample sqrt(2) from its mean, the means 4 apart; Sigma_W = [[1, -1], [-1, 1]],
    # Sigma_B = [[4, 0], [0, 0]], so tr(Sigma_W Sigma_B^+) / 2 = (1/4) / 2
    x = torch.tensor([[-3.0, 1.0], [-1.0, -1.0], [1.0, 1.0], [3.0, -1.0]])
    y = torch.tensor([0, 0, 1, 1])
    m = geometry_metrics(x, y)
    assert m["center_ratio"] == pytest.approx(4 / math.sqrt(2))
    assert m["nc1"] == pytest.approx(1 / 8)
    assert m["min_center_angle"] == pytest.approx(180.0)
    assert m["norm_mean"] == pytest.approx((2 * math.sqrt(10) + 2 * math.sqrt(2)) / 4)
    assert all(isinstance(v, float) for v in m.values())
    # collapsed classes: no within-class variability
    m = geometry_metrics(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0, 1]))
    assert m["nc1"] == pytest.approx(0.0, abs=1e-12)
    assert m["center_ratio"] == math.inf
    assert m["min_center_angle"] == pytest.approx(90.0)
    assert (m["norm_mean"], m["norm_std"]) == pytest.approx((4 / 3, math.sqrt(2 / 9)))


def test_given_centers_and_absent_classes():
    """With centers, the ratio and the angle use them (NC1 stays on the class means); a class
    absent from the labels (1 here) is left out, its center too."""
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 4.0], [0.0, 6.0]])
    y = torch.tensor([0, 0, 2, 2])
    centers = torch.tensor([[2.0, 1.0], [100.0, 100.0], [0.0, 5.0]])
    m = geometry_metrics(x, y, centers)
    spread = (2 * math.sqrt(2) + 2 * 1.0) / 4
    assert m["center_ratio"] == pytest.approx(math.hypot(2.0, 4.0) / spread)
    assert m["min_center_angle"] == pytest.approx(math.degrees(math.atan2(2.0, 1.0)))
    assert m["nc1"] == pytest.approx(geometry_metrics(x, y)["nc1"])
    expected = numpy_metrics(x.tolist(), y.tolist(), centers.tolist())
    assert m == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("dim", [2, 5, 16])
def test_against_numpy(dim):
    g = torch.Generator().manual_seed(dim)
    y = torch.randint(0, 6, (200,), generator=g)
    y[y == 4] = 5  # class 4 absent
    x = torch.randn(200, dim, generator=g) + 3 * torch.randn(6, dim, generator=g)[y]
    centers = torch.randn(6, dim, generator=g)
    assert geometry_metrics(x, y) == pytest.approx(numpy_metrics(x.tolist(), y.tolist()), rel=1e-6)
    assert geometry_metrics(x, y, centers) == pytest.approx(
        numpy_metrics(x.tolist(), y.tolist(), centers.tolist()), rel=1e-6)


def test_a_single_class():
    m = geometry_metrics(torch.tensor([[1.0, 1.0], [2.0, 0.0]]), torch.tensor([3, 3]))
    assert math.isnan(m["center_ratio"]) and math.isnan(m["min_center_angle"])
    assert m["nc1"] == 0.0  # Sigma_B is 0: its pseudo-inverse too
