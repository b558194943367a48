"""The objectives added beside xent, cent and standalone (center-push, center-softmax, margin,
cosface, arcface, and the focal / hinge / label-smoothed heads of xent and cent) against
brute-force loops over samples, pairs and classes: values in float32 and float64, and the
gradients of the features and of every parameter against the loop's own autograd."""
import math

import pytest
import torch

from losses import (ArcFaceLoss, CenterPushLoss, CenterSoftmaxLoss, CosFaceLoss, MarginLoss,
                    OBJECTIVES, SoftmaxLoss, build_objective)
from test_losses import CENTERS, FEATURES, LABELS

# For the cosine losses: no feature at the origin (where normalising has a gradient of
# 1/eps), none aligned with its class weight (acos' gradient is infinite at 1); a coincident
# pair of one class (0, 3) and of two classes (1, 4); sample 4 sits nearly opposite its
# class weight, so that ArcFace's theta + m > pi.
COS_FEATURES = [[1.0, 0.5], [2.0, -1.0], [-1.0, 0.2], [1.0, 0.5], [2.0, -1.0], [0.3, -2.0]]
COS_WEIGHTS = [[1.0, 0.1], [0.2, -1.0], [-1.0, 0.3]]


def sq(a, b):
    return sum((a[k] - b[k]) ** 2 for k in range(len(a)))


def mean(values):
    return sum(values) / len(values)


def cross_entropy(logits, y):
    return torch.log(sum(torch.exp(z) for z in logits)) - logits[y]


def loop_intra(x, y, c):
    return mean([sq(x[i], c[y[i]]) for i in range(len(x))])


# ----------------------------------------------------------------------------- the loops

def loop_center_push(x, y, obj):
    c, n_c = obj.centers, len(obj.centers)
    intra = mean([torch.exp(obj.alpha * sq(x[i], c[y[i]])) for i in range(len(x))])
    inter = -sum(torch.log(obj.delta + sq(c[k], c[l]))
                 for k in range(n_c) for l in range(n_c) if k != l) / n_c
    return {"intra": obj.weight_intra * intra, "inter": obj.weight_inter * inter}


def loop_center_softmax(x, y, obj):
    c = obj.centers
    xent = mean([cross_entropy([-obj.gamma * sq(x[i], c[k]) for k in range(len(c))], y[i])
                 for i in range(len(x))])
    terms = {"xent": xent}
    if obj.weight_intra:
        terms["intra"] = obj.weight_intra * loop_intra(x, y, c)
    return terms


def loop_margin(x, y, obj):
    m = len(x)
    inter = sum(torch.clamp_min(obj.margin - sq(x[i], x[j]), 0)
                for i in range(m) for j in range(m) if i != j and y[i] != y[j]) / m
    return {"intra": obj.weight_intra * loop_intra(x, y, obj.centers),
            "inter": obj.weight_inter * inter}


def loop_cosines(x, w):
    return [[(x[i] / x[i].norm()) @ (w[k] / w[k].norm()) for k in range(len(w))]
            for i in range(len(x))]


def loop_cosface(x, y, obj):
    cos = loop_cosines(x, obj.weight)
    return {"cosface": mean([cross_entropy([obj.scale * (cos[i][k] - obj.margin * (k == y[i]))
                                            for k in range(len(cos[i]))], y[i])
                             for i in range(len(x))])}


def loop_arcface(x, y, obj):
    cos, m = loop_cosines(x, obj.weight), obj.margin
    total = []
    for i in range(len(x)):
        theta = torch.acos(cos[i][y[i]])
        target = (torch.cos(theta + m) if theta.item() + m <= math.pi
                  else cos[i][y[i]] - m * math.sin(m))
        total.append(cross_entropy([obj.scale * (target if k == y[i] else cos[i][k])
                                    for k in range(len(cos[i]))], y[i]))
    return {"arcface": mean(total)}


def loop_head(x, y, obj):
    """The classification terms of SoftmaxLoss (+ its center term) over samples and classes."""
    w, b = obj.head.weight, obj.head.bias
    C, out = len(b), []
    for i in range(len(x)):
        z = [x[i] @ w[k] + b[k] for k in range(C)]
        log_p = [zk - torch.log(sum(torch.exp(zj) for zj in z)) for zk in z]
        if obj.head_loss == "focal":
            out.append(-(1 - torch.exp(log_p[y[i]])) ** obj.focal_gamma * log_p[y[i]])
        elif obj.head_loss == "hinge":
            out.append(sum(torch.clamp_min(1 - z[y[i]] + z[j], 0) for j in range(C) if j != y[i]) / C)
        else:
            eps = obj.label_smoothing
            out.append(-sum(((1 - eps) * (k == y[i]) + eps / C) * log_p[k] for k in range(C)))
    terms = {{"ce": "xent"}.get(obj.head_loss, obj.head_loss): mean(out)}
    if obj.center_loss is not None:
        terms["center"] = obj.weight_cent * loop_intra(x, y, obj.centers)
    return terms


def with_centers(obj, centers=CENTERS):
    obj.centers.data = torch.tensor(centers)  # CenterPushLoss's own, or the CenterLoss's
    return obj


CASES = {  # name -> (objective on 3 classes in 2-D with set parameters, loop, features)
    "center-push": (lambda: with_centers(CenterPushLoss(3, 2, weight_intra=0.7, weight_inter=0.4,
                                                        delta=1.0, alpha=0.3)),
                    loop_center_push, FEATURES),
    "center-push-tiny-delta": (lambda: with_centers(CenterPushLoss(3, 2, delta=1e-6, alpha=0.05)),
                               loop_center_push, FEATURES),
    "center-push-coincident-centers": (
        lambda: with_centers(CenterPushLoss(3, 2, delta=1.0), [[0.5, 0.0], [0.5, 0.0], [-1.0, 1.0]]),
        loop_center_push, FEATURES),
    "center-softmax": (lambda: with_centers(CenterSoftmaxLoss(3, 2, gamma=0.5)),
                       loop_center_softmax, FEATURES),
    "center-softmax-intra": (lambda: with_centers(CenterSoftmaxLoss(3, 2, gamma=2.0, weight_intra=0.3)),
                             loop_center_softmax, FEATURES),
    "margin": (lambda: with_centers(MarginLoss(3, 2, weight_intra=0.8, weight_inter=0.3, margin=6.0)),
               loop_margin, FEATURES),
    "cosface": (lambda: CosFaceLoss(3, 2, scale=4.0), loop_cosface, COS_FEATURES),
    "arcface": (lambda: ArcFaceLoss(3, 2, scale=4.0), loop_arcface, COS_FEATURES),
    "arcface-paper-scale": (lambda: ArcFaceLoss(3, 2), loop_arcface, COS_FEATURES),
    "focal": (lambda: SoftmaxLoss(3, 2, head_loss="focal", focal_gamma=2.0), loop_head, FEATURES),
    "focal-gamma-0.5": (lambda: SoftmaxLoss(3, 2, head_loss="focal", focal_gamma=0.5), loop_head, FEATURES),
    "cent-hinge": (lambda: with_centers(SoftmaxLoss(3, 2, weight_cent=0.2, head_loss="hinge")),
                   loop_head, FEATURES),
    "label-smoothing": (lambda: SoftmaxLoss(3, 2, label_smoothing=0.2), loop_head, FEATURES),
}


def build_case(case, dtype):
    torch.manual_seed(0)  # the softmax heads' initial weights
    objective, loop, features = CASES[case]
    objective = objective()
    if isinstance(objective, (CosFaceLoss, ArcFaceLoss)):
        objective.weight.data = torch.tensor(COS_WEIGHTS)
    return objective.to(dtype), loop, features


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_loop(case, dtype):
    objective, loop, features = build_case(case, dtype)
    params = list(objective.parameters())
    x = torch.tensor(features, dtype=dtype, requires_grad=True)
    y = torch.tensor(LABELS)
    out = objective(x, y)
    expected = loop(x, LABELS, objective)
    assert set(out) == {"loss", *expected}
    tol = dict(rel=1e-5, abs=1e-6) if dtype == torch.float32 else dict(rel=1e-12, abs=1e-12)
    for name, value in expected.items():
        assert out[name].dtype == dtype
        assert out[name].item() == pytest.approx(value.item(), **tol), name
    assert out["loss"].item() == pytest.approx(sum(v.item() for v in expected.values()), **tol)

    grads = torch.autograd.grad(out["loss"], [x, *params])
    loop_grads = torch.autograd.grad(sum(expected.values()), [x, *params], allow_unused=True)
    for g, e in zip(grads, loop_grads):
        e = torch.zeros_like(g) if e is None else e
        assert torch.isfinite(g).all()
        if dtype == torch.float64:
            torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-10)
        else:
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


def test_arcface_case_takes_both_branches():
    objective, _, features = build_case("arcface", torch.float64)
    cos = objective.cosines(torch.tensor(features, dtype=torch.float64))
    theta = torch.acos(cos.gather(1, torch.tensor(LABELS).unsqueeze(1)))
    assert (theta + 0.5 > math.pi).any() and (theta + 0.5 < math.pi).any()


GRADCHECK = {
    "center-push": dict(weight_inter=0.5, inter_delta=0.5, alpha=0.2),
    "center-softmax": dict(center_gamma=0.7, weight_intra=0.1),
    "margin": dict(margin=1.0, weight_inter=0.3),
    "cosface": dict(scale=3.0),
    "arcface": dict(scale=3.0),
    "xent": dict(head_loss="focal", focal_gamma=1.5),
    "cent": dict(head_loss="hinge", weight_cent=0.5),
}


@pytest.mark.parametrize("name,hyper", [(n, h) for n, h in GRADCHECK.items()] + [
    ("xent", dict(label_smoothing=0.3))])
def test_gradcheck(name, hyper):
    torch.manual_seed(1)
    objective = build_objective(name, 3, 2, **hyper).double()
    x = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    params = list(objective.parameters())
    assert torch.autograd.gradcheck(lambda x, *_: objective(x, y)["loss"], (x, *params))


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_a_batch_of_one_class(name):
    """All pairs are of one class: pairwise terms are 0; every term and gradient is finite,
    with coincident points in the batch."""
    torch.manual_seed(0)
    objective = build_objective(name, 3, 2, inter_delta=1e-9)
    x = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 2.0], [0.5, -1.0]], requires_grad=True)
    out = objective(x, torch.tensor([2, 2, 2, 2]))
    if name in ("standalone", "margin"):
        assert out["inter"].item() == 0.0
    out["loss"].backward()
    assert all(torch.isfinite(v).all() for v in out.values())
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in objective.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", ["cosface", "arcface"])
def test_cosine_losses_at_the_origin_and_their_prediction(name):
    """A zero feature has cosine 0 with every class: finite loss and gradient. Prediction is
    the argmax of the cosine, whatever the feature's length."""
    objective = build_objective(name, 3, 2)
    objective.weight.data = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    x = torch.tensor([[0.0, 0.0], [3.0, 0.1]], requires_grad=True)
    out = objective(x, torch.tensor([0, 1]))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and torch.isfinite(x.grad).all()
    x = torch.tensor([[2.0, 1.0], [0.01, 0.03], [-100.0, -90.0], [0.0, -5.0]])
    assert objective.predict(x).tolist() == [0, 1, 2, 2]
    assert objective.centers is None


def test_center_based_predictions_are_the_nearest_center():
    centers = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]
    x = torch.tensor([[1.0, 1.0], [9.0, -1.0], [-1.0, 7.0], [5.1, 0.0], [4.9, 0.0]])
    for objective in (CenterPushLoss(3, 2), CenterSoftmaxLoss(3, 2), MarginLoss(3, 2)):
        with_centers(objective, centers)
        assert objective.predict(x).tolist() == [0, 1, 2, 1, 0]
    # center-softmax: the nearest center is the argmax of its logits
    cs = with_centers(CenterSoftmaxLoss(3, 2, gamma=0.3), centers)
    assert cs.logits(x).argmax(1).tolist() == [0, 1, 2, 1, 0]


def test_focal_with_gamma_0_is_the_cross_entropy():
    torch.manual_seed(0)
    x, y = torch.randn(9, 2), torch.randint(0, 3, (9,))
    focal = SoftmaxLoss(3, 2, head_loss="focal", focal_gamma=0.0)
    ce = SoftmaxLoss(3, 2)
    ce.load_state_dict(focal.state_dict())
    assert focal(x, y)["focal"].item() == pytest.approx(ce(x, y)["xent"].item(), rel=1e-6)


def test_label_smoothing_only_with_ce():
    with pytest.raises(ValueError, match="label smoothing"):
        SoftmaxLoss(3, 2, head_loss="hinge", label_smoothing=0.1)
    with pytest.raises(ValueError, match="ce, focal, hinge"):
        SoftmaxLoss(3, 2, head_loss="svm")
