"""The center-loss family (contrastive-center, ring, island, triplet-center, git) against
brute-force loops over samples, classes and pairs of centers: values in float32 and float64,
the gradients of the features and of every parameter against the loop's own autograd,
gradcheck, coincident points, a batch of one class, and their predictions."""
import math

import pytest
import torch

import losses
from losses import (ContrastiveCenterLoss, GitLoss, IslandLoss, RingLoss, TripletCenterLoss,
                    build_objective)
from test_losses import CENTERS, FEATURES, LABELS

FAMILY = ("contrastive-center", "ring", "island", "triplet-center", "git")


def sq(a, b):
    return sum((a[k] - b[k]) ** 2 for k in range(len(a)))


def mean(values):
    return sum(values) / len(values)


def xent(x, y, head):
    """The cross-entropy of the linear head, sample by sample."""
    w, b = head.weight, head.bias
    out = []
    for i in range(len(x)):
        z = [x[i] @ w[k] + b[k] for k in range(len(b))]
        out.append(torch.log(sum(torch.exp(zk) for zk in z)) - z[y[i]])
    return mean(out)


def half_intra(x, y, c):
    return mean([sq(x[i], c[y[i]]) / 2 for i in range(len(x))])


# ----------------------------------------------------------------------------- the loops

def loop_contrastive_center(x, y, obj):
    c = obj.centers
    ratios = []
    for i in range(len(x)):
        others = sum(sq(x[i], c[j]) for j in range(len(c)) if j != y[i])
        ratios.append(sq(x[i], c[y[i]]) / (obj.delta + others))
    terms = {"contrastive_center": obj.weight_ctc * mean(ratios) / 2}
    if obj.head is not None:
        terms["xent"] = obj.weight_xent * xent(x, y, obj.head)
    return terms


def loop_ring(x, y, obj):
    ring = mean([(x[i].norm() - obj.radius) ** 2 for i in range(len(x))]) / 2
    return {"xent": xent(x, y, obj.head), "ring": obj.weight_ring * ring}


def loop_island(x, y, obj):
    c = obj.centers
    island = 0
    for j in range(len(c)):
        for k in range(len(c)):
            if j != k:
                island = island + c[j] @ c[k] / (c[j].norm() * c[k].norm()) + 1
    return {"xent": xent(x, y, obj.head), "center": obj.weight_cent * half_intra(x, y, c),
            "island": obj.weight_cent * obj.island_lambda * island}


def loop_triplet_center(x, y, obj):
    c, hinges = obj.centers, []
    for i in range(len(x)):
        own = sq(x[i], c[y[i]]) / 2
        nearest = min((sq(x[i], c[j]) / 2 for j in range(len(c)) if j != y[i]),
                      key=lambda d: d.detach().item())
        hinges.append(torch.clamp_min(own + obj.margin - nearest, 0))
    return {"xent": xent(x, y, obj.head), "triplet_center": obj.weight_tc * mean(hinges)}


def loop_git(x, y, obj):
    c = obj.centers
    push = mean([sum(1 / (1 + sq(x[i], c[j])) for j in range(len(c)) if j != y[i])
                 for i in range(len(x))])
    return {"xent": xent(x, y, obj.head), "center": obj.weight_cent * half_intra(x, y, c),
            "git": obj.weight_git * push}


def ring_at(radius, **kw):
    obj = RingLoss(3, 2, **kw)
    obj.radius.data.fill_(radius)
    obj.radius_ready.fill_(True)
    return obj


def with_centers(obj, centers=CENTERS):
    obj.center_loss.centers.data = torch.tensor(centers)
    return obj


CASES = {  # name -> (objective on 3 classes in 2-D, its loop)
    "contrastive-center": (lambda: with_centers(ContrastiveCenterLoss(3, 2, weight_ctc=0.7)),
                           loop_contrastive_center),
    "contrastive-center-alone": (
        lambda: with_centers(ContrastiveCenterLoss(3, 2, weight_xent=0.0, delta=1e-3)),
        loop_contrastive_center),
    "contrastive-center-weighted": (
        lambda: with_centers(ContrastiveCenterLoss(3, 2, weight_ctc=2.0, weight_xent=0.3, delta=0.5)),
        loop_contrastive_center),
    # sample 0 sits at the origin: the norm's gradient there is torch's subgradient, 0
    "ring": (lambda: ring_at(1.5, weight_ring=0.3), loop_ring),
    "island": (lambda: with_centers(IslandLoss(3, 2, weight_cent=0.2, island_lambda=3.0)), loop_island),
    "island-paper": (lambda: with_centers(IslandLoss(3, 2)), loop_island),
    "island-coincident-centers": (
        lambda: with_centers(IslandLoss(3, 2, weight_cent=0.5), [[0.5, 0.0], [0.5, 0.0], [-1.0, 1.0]]),
        loop_island),
    "triplet-center": (lambda: with_centers(TripletCenterLoss(3, 2, weight_tc=0.6, tc_margin=1.0)),
                       loop_triplet_center),
    "triplet-center-paper": (lambda: with_centers(TripletCenterLoss(3, 2)), loop_triplet_center),
    "git": (lambda: with_centers(GitLoss(3, 2, weight_cent=0.3, weight_git=0.8)), loop_git),
    "git-paper": (lambda: with_centers(GitLoss(3, 2)), loop_git),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_loop(case, dtype):
    torch.manual_seed(0)  # the heads' initial weights
    build, loop = CASES[case]
    objective = build().to(dtype)
    params = list(objective.parameters())
    x = torch.tensor(FEATURES, dtype=dtype, requires_grad=True)
    out = objective(x, torch.tensor(LABELS))
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


def test_triplet_center_case_takes_both_sides_of_the_hinge():
    objective = CASES["triplet-center"][0]()
    d = torch.cdist(torch.tensor(FEATURES), objective.centers.detach()) ** 2 / 2
    own = d[range(len(LABELS)), LABELS]
    other = d.scatter(1, torch.tensor(LABELS).unsqueeze(1), math.inf).min(1).values
    active = own + objective.margin - other > 0
    assert active.any() and not active.all()


def test_hand_computed_values():
    # one feature at (0, 0), centers (1, 0) [own] and (0, 2): ratio 1 / (1 + 4), halved
    ctc = with_centers(ContrastiveCenterLoss(2, 2, weight_xent=0.0), [[1.0, 0.0], [0.0, 2.0]])
    x, y = torch.zeros(1, 2), torch.tensor([0])
    assert ctc(x, y)["loss"].item() == pytest.approx(0.1)
    # triplet-center: D own 1/2, D other 2: max(0, 0.5 + 5 - 2) = 3.5
    tc = with_centers(TripletCenterLoss(2, 2, weight_tc=1.0), [[1.0, 0.0], [0.0, 2.0]])
    assert tc(x, y)["triplet_center"].item() == pytest.approx(3.5)
    # git: 1 / (1 + 4) for the other center
    git = with_centers(GitLoss(2, 2, weight_git=1.0), [[1.0, 0.0], [0.0, 2.0]])
    assert git(x, y)["git"].item() == pytest.approx(0.2)
    # island: two orthogonal centers, ordered pairs (0, 1) and (1, 0), each cos 0 + 1
    island = with_centers(IslandLoss(2, 2, weight_cent=1.0, island_lambda=1.0), [[1.0, 0.0], [0.0, 2.0]])
    assert island(x, y)["island"].item() == pytest.approx(2.0)
    # ring: norms 3 and 5 around R = 4: (1/2) mean(1, 1) = 0.5
    ring = ring_at(4.0, weight_ring=1.0)
    assert ring(torch.tensor([[3.0, 0.0], [0.0, 5.0]]), torch.tensor([0, 1]))["ring"].item() == 0.5


@pytest.mark.parametrize("name,hyper", [
    ("contrastive-center", dict(weight_ctc=0.8, ctc_delta=0.3)),
    ("contrastive-center", dict(weight_xent=0.0)),
    ("ring", dict(weight_ring=0.5)),
    ("island", dict(weight_cent=0.3, island_lambda=2.0)),
    ("triplet-center", dict(weight_tc=0.5, margin=1.0)),
    ("git", dict(weight_cent=0.4, weight_git=0.7)),
])
def test_gradcheck(name, hyper):
    torch.manual_seed(1)
    objective = build_objective(name, 3, 2, **hyper).double()
    x = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    objective(x, y)  # ring: R takes its start from the first batch
    params = list(objective.parameters())
    assert torch.autograd.gradcheck(lambda x, *_: objective(x, y)["loss"], (x, *params))


@pytest.mark.parametrize("name", FAMILY)
def test_coincident_points_and_one_class(name):
    """Every feature at the same point, on a center, in a batch of one class; and two
    classes whose centers coincide: every term and gradient finite."""
    torch.manual_seed(0)
    objective = build_objective(name, 3, 2)
    if objective.centers is not None:
        objective.centers.data = torch.tensor([[1.0, 1.0], [1.0, 1.0], [-2.0, 0.5]])
    for points in ([[1.0, 1.0]] * 4, [[0.0, 0.0]] * 4):
        x = torch.tensor(points, requires_grad=True)
        out = objective(x, torch.tensor([1, 1, 1, 1]))
        out["loss"].backward()
        assert all(torch.isfinite(v).all() for v in out.values()), (name, points)
        assert torch.isfinite(x.grad).all()
        assert all(torch.isfinite(p.grad).all() for p in objective.parameters() if p.grad is not None)
        objective.zero_grad()


def test_triplet_center_with_a_single_class_is_zero():
    objective = TripletCenterLoss(1, 2)
    x = torch.randn(3, 2, requires_grad=True)
    out = objective(x, torch.zeros(3, dtype=torch.long))
    assert out["triplet_center"].item() == 0.0
    out["loss"].backward()
    assert torch.isfinite(x.grad).all()


def test_ring_radius_starts_at_the_first_batch_mean_norm_and_is_kept():
    ring = RingLoss(3, 2)
    first = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    ring(first, torch.tensor([0, 1]))
    assert ring.radius.item() == pytest.approx(3.0) and bool(ring.radius_ready)
    ring(torch.tensor([[30.0, 40.0]]), torch.tensor([2]))
    assert ring.radius.item() == pytest.approx(3.0)
    # a checkpoint keeps R and that it was started: a resumed run does not restart it
    resumed = RingLoss(3, 2)
    resumed.load_state_dict(ring.state_dict())
    resumed(torch.tensor([[30.0, 40.0]]), torch.tensor([2]))
    assert resumed.radius.item() == pytest.approx(3.0)
    # the radius is learned: its gradient is weight_ring * (R - mean norm)
    ring.radius.data.fill_(1.0)
    out = ring(first, torch.tensor([0, 1]))
    (grad,) = torch.autograd.grad(out["ring"], [ring.radius])
    assert grad.item() == pytest.approx(0.01 * (1.0 - 3.0))


def test_predictions():
    torch.manual_seed(0)
    centers = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]
    x = torch.tensor([[1.0, 1.0], [9.0, -1.0], [-1.0, 7.0], [5.1, 0.0], [4.9, 0.0]])
    alone = with_centers(ContrastiveCenterLoss(3, 2, weight_xent=0.0), centers)
    assert alone.head is None and alone.predict(x).tolist() == [0, 1, 2, 1, 0]
    assert set(alone(x, torch.tensor([0, 1, 2, 1, 0]))) == {"loss", "contrastive_center"}
    head = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    probe = torch.tensor([[2.0, 1.0], [0.0, 3.0], [-1.0, -1.0]])
    for objective in (ContrastiveCenterLoss(3, 2), RingLoss(3, 2), IslandLoss(3, 2),
                      TripletCenterLoss(3, 2), GitLoss(3, 2)):
        objective.head.weight.data, objective.head.bias.data = head.clone(), torch.zeros(3)
        assert objective.predict(probe).tolist() == [0, 1, 2], type(objective).__name__
    assert RingLoss(3, 2).centers is None
    assert GitLoss(3, 2).centers.shape == (3, 2)


def test_contrastive_center_rejects_a_zero_delta():
    with pytest.raises(ValueError, match="delta"):
        ContrastiveCenterLoss(3, 2, delta=0.0)


# ----------------------------------------------------------------------------- the registry

NEW = FAMILY + ("contrastive", "triplet", "multi-similarity", "supcon", "proxy-anchor",
                "proxy-nca", "normface", "sphereface")
STRUCTURAL = ("pml_args", "pml_miner")  # what pml:NAME trains, not how much: no search range


def test_every_hyperparameter_has_a_search_range():
    for loss, objective in [*losses.OBJECTIVES.items(), ("pml:NAME", losses.Entry(None, losses.PML_HYPERS))]:
        for h in objective.hypers:
            if h.name in STRUCTURAL:
                assert h.search is None
                continue
            assert h.search is not None, (loss, h.name)
            if h.type is str:
                assert set(h.search) <= set(h.choices or h.search), (loss, h.name)
                continue
            low, high = h.search
            assert low < high, (loss, h.name)
            assert h.minimum is None or low >= h.minimum, (loss, h.name)
            assert h.maximum is None or high <= h.maximum, (loss, h.name)
            assert not (h.positive or h.log) or low > 0, (loss, h.name)


@pytest.mark.parametrize("name", NEW)
def test_new_names_build_with_defaults_and_log_their_terms(name):
    assert name in losses.OBJECTIVES and losses.is_objective(name)
    objective = build_objective(name, 4, 3)
    x = torch.randn(8, 3, requires_grad=True)
    out = objective(x, torch.tensor([0, 1, 2, 3] * 2))
    assert "loss" in out and len(out) >= 2
    assert out["loss"].item() == pytest.approx(sum(v.item() for k, v in out.items() if k != "loss"),
                                               rel=1e-6)
    assert objective.predict(x.detach()).shape == (8,)
    values = losses.resolve_hypers(name, {})
    assert losses.hyper_problems(name, values) == []
    assert losses.describe_hypers(name, values) != ""
