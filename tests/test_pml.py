"""The pytorch-metric-learning adapter: the loss and its gradients equal calling the package
directly; learnable parts are the objective's; prediction by nearest mean, proxy or class
weight; --pml-args and --pml-miner; the memory check; a missing package; two ranks."""
import re
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import losses
from conftest import ROOT
from losses import MetricLearningLoss, build_objective
from utils import UserError

try:  # an optional dependency: without it, only the tests of its absence run
    from pytorch_metric_learning import distances, losses as pml_losses, miners
except ImportError:
    distances = pml_losses = miners = None
needs_pml = pytest.mark.skipif(pml_losses is None, reason="pytorch-metric-learning is not installed")

# 2-D features of 3 classes with a coincident pair of two classes (1, 4) and of one (0, 3)
FEATURES = [[1.0, 0.5], [2.0, -1.0], [-1.0, 0.2], [1.0, 0.5], [2.0, -1.0], [0.3, -2.0],
            [-0.5, -0.7], [0.1, 1.2]]
LABELS = [0, 1, 2, 0, 2, 1, 2, 0]


def direct(name):
    """The pml loss (and miner) built by hand, as a user of the package would."""
    if name == "contrastive":
        return pml_losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0), None
    if name == "triplet":
        return pml_losses.TripletMarginLoss(margin=0.05), miners.BatchHardMiner()
    if name == "multi-similarity":
        return (pml_losses.MultiSimilarityLoss(alpha=2.0, beta=50.0, base=0.5),
                miners.MultiSimilarityMiner(epsilon=0.1))
    if name == "proxy-anchor":
        return pml_losses.ProxyAnchorLoss(3, 2, margin=0.1, alpha=32), None
    raise KeyError(name)


@needs_pml
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["contrastive", "triplet", "multi-similarity", "proxy-anchor"])
def test_adapter_equals_calling_pml(name, dtype):
    torch.manual_seed(0)
    objective = build_objective(name, 3, 2).to(dtype)
    loss_fn, miner = direct(name)
    loss_fn.load_state_dict(objective.loss_fn.state_dict())  # the same proxies
    loss_fn.to(dtype)
    x = torch.tensor(FEATURES, dtype=dtype, requires_grad=True)
    y = torch.tensor(LABELS)
    out = objective(x, y)
    assert set(out) == {"loss", name} and out["loss"] is out[name]
    expected = loss_fn(x, y, miner(x, y)) if miner is not None else loss_fn(x, y)
    assert out["loss"].dtype == dtype
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert out["loss"].item() > 0
    params, theirs = list(objective.parameters()), list(loss_fn.parameters())
    grads = torch.autograd.grad(out["loss"], [x, *params])
    expected_grads = torch.autograd.grad(expected, [x, *theirs])
    assert any(g.abs().sum() > 0 for g in grads)
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e)


@needs_pml
def test_generic_name_with_arguments_and_miner():
    x, y = torch.tensor(FEATURES, requires_grad=True), torch.tensor(LABELS)
    objective = build_objective("pml:ContrastiveLoss", 3, 2, pml_args=[
        "pos_margin=0.25", "neg_margin=1.5", "distance=LpDistance(normalize_embeddings=False)"])
    assert set(objective(x, y)) == {"loss", "contrastiveloss"}
    loss_fn = pml_losses.ContrastiveLoss(pos_margin=0.25, neg_margin=1.5,
                                         distance=distances.LpDistance(normalize_embeddings=False))
    assert objective(x, y)["loss"].item() == pytest.approx(loss_fn(x, y).item(), rel=1e-6)
    # one string (as argparse gives without nargs), a miner and its own arguments
    objective = build_objective("pml:TripletMarginLoss", 3, 2, pml_args="margin=0.3 miner.margin=0.2",
                                pml_miner="TripletMarginMiner")
    assert (objective.loss_fn.margin, objective.miner.margin) == (0.3, 0.2)
    miner = miners.TripletMarginMiner(margin=0.2)
    expected = pml_losses.TripletMarginLoss(margin=0.3)(x, y, miner(x, y))
    assert objective(x, y)["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert losses.describe_hypers("pml:TripletMarginLoss", {
        "pml_args": ["margin=0.3"], "pml_miner": "TripletMarginMiner"}) == (
        "args=margin=0.3, miner=TripletMarginMiner")
    assert losses.describe_hypers("pml:NTXentLoss", {}) == "-"


@needs_pml
def test_bad_names_and_arguments():
    with pytest.raises(ValueError, match="no loss 'Contrastive'.*ContrastiveLoss, CosFaceLoss"):
        losses.entry("pml:Contrastive")
    with pytest.raises(ValueError, match="unknown loss 'softmax'; choose from xent, cent.*pml:NAME"):
        losses.hypers_of("softmax")
    assert losses.is_objective("pml:NTXentLoss") and losses.is_objective("triplet")
    assert not losses.is_objective("pml:NTXent") and not losses.is_objective("pml:")
    assert not losses.is_objective("softmax")
    with pytest.raises(ValueError, match="no miner 'Hard'.*BatchHardMiner"):
        build_objective("pml:TripletMarginLoss", 3, 2, pml_miner="Hard")
    for args, message in ((["margin"], "key=value"), (["marign=0.1"], "marign"),
                          (["miner.margin=0.1"], "without a miner")):
        with pytest.raises(UserError, match=message) as e:
            build_objective("pml:TripletMarginLoss", 3, 2, pml_args=args)
        assert "\n" not in str(e.value)


@needs_pml
def test_learnable_parts_are_the_objectives():
    torch.manual_seed(0)
    anchor = build_objective("proxy-anchor", 4, 3)
    assert [n for n, _ in anchor.named_parameters()] == ["loss_fn.proxies"]
    normface = build_objective("normface", 4, 3)
    assert [n for n, _ in normface.named_parameters()] == ["loss_fn.W"]
    assert list(build_objective("triplet", 4, 3).parameters()) == []
    # checkpointed like the centers: a fresh objective loads them
    state = anchor.state_dict()
    fresh = build_objective("proxy-anchor", 4, 3)
    assert not torch.equal(fresh.loss_fn.proxies, anchor.loss_fn.proxies)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.loss_fn.proxies, anchor.loss_fn.proxies)
    # and an optimizer over the objective's parameters moves them
    optimizer = torch.optim.SGD(anchor.parameters(), lr=0.1)
    before = anchor.loss_fn.proxies.detach().clone()
    anchor(torch.randn(8, 3), torch.tensor([0, 1, 2, 3] * 2))["loss"].backward()
    optimizer.step()
    assert not torch.equal(before, anchor.loss_fn.proxies)


@needs_pml
def test_nearest_mean_prediction_by_hand():
    """A pair loss predicts the nearest class mean of the features observe() saw, in the
    loss's distance (cosine-like for pml's defaults: the nearest direction)."""
    objective = build_objective("contrastive", 3, 2)
    train = torch.tensor([[10.0, 0.0], [12.0, 0.0], [0.0, 5.0], [0.0, 7.0], [-3.0, -3.0]])
    objective.observe(train, torch.tensor([0, 0, 1, 1, 2]))
    torch.testing.assert_close(objective.centers, torch.tensor([[11.0, 0.0], [0.0, 6.0], [-3.0, -3.0]]))
    # (0.1, 0.0) is nearer the mean of class 2 in plain distance, but points along class 0
    probe = torch.tensor([[1.0, 0.1], [0.2, 30.0], [-1.0, -0.8], [0.1, 0.0]])
    assert objective.predict(probe).tolist() == [0, 1, 2, 0]
    # a distance that keeps the lengths: the plainly nearest mean
    plain = build_objective("pml:ContrastiveLoss", 3, 2,
                            pml_args=["distance=LpDistance(normalize_embeddings=False)"])
    plain.observe(train, torch.tensor([0, 0, 1, 1, 2]))
    assert plain.predict(probe).tolist() == [2, 1, 2, 2]
    # a class absent from the observed features is never predicted
    objective.observe(train[:4], torch.tensor([0, 0, 1, 1]))
    assert objective.predict(torch.tensor([[-1.0, -1.0]])).item() in (0, 1)
    assert objective.observed.tolist() == [True, True, False]
    # the means are buffers: saved in the checkpoint, restored on resume
    fresh = build_objective("contrastive", 3, 2)
    fresh.load_state_dict(objective.state_dict())
    torch.testing.assert_close(fresh.centers, objective.centers)
    assert fresh.observed.tolist() == [True, True, False]
    with torch.inference_mode():  # as the evaluation calls it
        fresh.observe(train, torch.tensor([0, 0, 1, 1, 2]))
    assert fresh.observed.all()


@needs_pml
def test_proxy_and_class_weight_prediction():
    x = torch.tensor([[2.0, 0.1], [0.1, 0.01], [-0.3, 5.0], [-4.0, -4.5]])
    anchor = build_objective("proxy-anchor", 3, 2)
    anchor.loss_fn.proxies.data = torch.tensor([[10.0, 0.0], [0.0, 0.2], [-1.0, -1.0]])
    assert anchor.predict(x).tolist() == [0, 0, 1, 2]  # the largest cosine, whatever the lengths
    assert anchor.centers is None  # proxies compared in angle are directions, not points
    nca = build_objective("proxy-nca", 3, 2)
    nca.loss_fn.proxies.data = anchor.loss_fn.proxies.data.clone()
    assert nca.predict(x).tolist() == [0, 0, 1, 2]
    euclid = build_objective("pml:ProxyAnchorLoss", 3, 2,
                             pml_args=["distance=LpDistance(normalize_embeddings=False)"])
    euclid.loss_fn.proxies.data = anchor.loss_fn.proxies.data.clone()
    assert euclid.centers is euclid.loss_fn.proxies
    assert euclid.predict(x).tolist() == [1, 1, 1, 2]  # now the nearest point
    for name in ("normface", "sphereface"):
        objective = build_objective(name, 3, 2)
        objective.loss_fn.W.data = torch.tensor([[10.0, 0.0, -1.0], [0.0, 0.2, -1.0]])
        assert objective.predict(x).tolist() == [0, 0, 1, 2], name
        assert objective.centers is None


@needs_pml
def test_check_batch_bounds_the_memory_of_the_heavy_losses():
    heavy = build_objective("pml:NTXentLoss", 10, 2)
    with pytest.raises(UserError, match=r"pml:NTXentLoss on a batch of 256 needs about (\S+) GiB "
                       r".*lower --batch-size \(at most about \d+\)") as e:
        heavy.check_batch(256, "cpu", budget=2**30)
    assert "\n" not in str(e.value)
    assert float(re.search(r"about (\S+) GiB", str(e.value)).group(1)) > 2  # batch^4 / classes
    light = build_objective("triplet", 10, 2)
    assert light.check_batch(256, "cpu", budget=2**30) < 100 * 2**20
    assert 0 < light.check_batch(32, "cpu") < 2**20  # measured as it is
    # the check runs on a copy: the learnable parts and their gradients are untouched
    anchor = build_objective("proxy-anchor", 10, 2)
    before = anchor.loss_fn.proxies.detach().clone()
    anchor.check_batch(300, "cpu")
    assert torch.equal(before, anchor.loss_fn.proxies) and anchor.loss_fn.proxies.grad is None


def test_missing_package_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_metric_learning", None)
    for name, hyper in (("pml:ContrastiveLoss", {}), ("contrastive", {}), ("proxy-anchor", {})):
        with pytest.raises(UserError) as e:
            build_objective(name, 3, 2, **hyper)
        assert str(e.value) == ("pytorch-metric-learning is not installed: "
                                "pip install pytorch-metric-learning")
    # names and hyperparameters of pml:NAME are still known (for the flags, old runs' tables)
    assert losses.is_objective("pml:AnyLoss")
    assert [h.name for h in losses.hypers_of("pml:AnyLoss")] == ["pml_args", "pml_miner"]
    assert build_objective("xent", 3, 2) is not None


def test_losses_imports_without_the_package():
    code = ("import sys; sys.modules['pytorch_metric_learning'] = None\n"
            "import losses, torch\n"
            "out = losses.build_objective('standalone', 3, 2)(torch.zeros(2, 2), torch.tensor([0, 1]))\n"
            "print(sorted(out))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['inter', 'intra', 'loss']"


# ----------------------------------------------------------------------------- two ranks

B = 4  # per rank


def batch():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2 * B, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 2, 0])
    return x, y


def step(name, x, y, wrap=None):
    """A linear feature extractor and the objective: the loss and every gradient."""
    torch.manual_seed(0)
    net = torch.nn.ModuleDict({"model": torch.nn.Linear(5, 3), "objective": build_objective(name, 3, 3)})
    net = net.double()

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x, y):
            return self.net["objective"](self.net["model"](x), y)["loss"]

    module = wrap(Net()) if wrap else Net()
    loss = module(x, y)
    loss.backward()
    return loss.item(), {k: p.grad.clone() for k, p in net.named_parameters()}


def worker(rank, world_size, init_file, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size)
    x, y = batch()
    mine = slice(rank * B, (rank + 1) * B)
    results = {name: step(name, x[mine], y[mine], torch.nn.parallel.DistributedDataParallel)
               for name in ("triplet", "proxy-anchor", "supcon")}
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


@needs_pml
def test_two_ranks_see_the_global_batch(tmp_path):
    """Each rank computes the loss of the whole global batch; DDP's averaged gradients are
    those of one process with both halves."""
    out = str(tmp_path / "ranks.pt")
    mp.spawn(worker, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    ranks = torch.load(out)
    x, y = batch()
    for name, (loss, grads) in ranks.items():
        one_loss, one_grads = step(name, x, y)
        assert loss == pytest.approx(one_loss, rel=1e-12), name
        for key, g in grads.items():
            torch.testing.assert_close(g, one_grads[key], rtol=1e-10, atol=1e-12, msg=name + key)


@needs_pml
def test_objective_class_is_exported():
    assert isinstance(build_objective("supcon", 3, 2), MetricLearningLoss)


@needs_pml
def test_generic_names_go_through_every_registry_function():
    name = "pml:ContrastiveLoss"
    values = losses.resolve_hypers(name, {"pml_args": ["neg_margin=0.5"], "weight_cent": 3.0})
    assert (values["pml_args"], values["pml_miner"], values["weight_cent"]) == (["neg_margin=0.5"], None, 3.0)
    assert losses.hyper_problems(name, values) == []
    assert losses.describe_hypers(name, values) == "args=neg_margin=0.5"
    objective = build_objective(name, 3, 2, **values)
    assert objective.loss_fn.neg_margin == 0.5 and objective.name == name
    assert losses.hypers_of(name) == losses.PML_HYPERS
    assert "pml:NAME" in [loss for loss, _ in losses.declared()["pml_args"]]


@needs_pml
def test_sphereface_margin_is_an_integer():
    assert build_objective("sphereface", 3, 2, margin=2.6).loss_fn.margin == 3
    with pytest.raises(UserError, match="integer --margin of at least 1"):
        build_objective("sphereface", 3, 2, margin=0.35)
