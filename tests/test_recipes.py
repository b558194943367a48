"""The --recipe presets, and the pieces of the fast recipe: per-step schedule, weight decay
groups, the weight average."""
import json
import math
import multiprocessing
import os

import pytest
import torch
from torch import nn

import datasets
import flags
import main
import optim
import recipes
from losses import build_objective
from models import build_model


def parse(*argv):
    return flags.parse_args(list(argv))[0]


def test_reference_is_the_parsers_defaults():
    assert recipes.RECIPES["reference"] == {}
    args = parse()
    assert (args.recipe, args.epochs, args.lr, args.scheduler, args.ema_decay) == \
        ("reference", 100, 0.01, "plateau", None)


def test_fast_preset_resolves_and_typed_flags_override_it():
    fast = recipes.settings("fast", "xent")
    assert "objectives" not in fast and fast["lr"] == recipes.RECIPES["fast"]["lr"]
    args = parse("--recipe", "fast", "--loss", "xent")
    for key, value in fast.items():
        assert getattr(args, key) == value, key
    assert fast["epochs"] <= 10
    # what the user types wins, whatever its position and spelling
    args = parse("--lr", "0.2", "--recipe", "fast", "--max_epoch", "3", "--ema-decay", "0",
                 "--no-nesterov")
    assert (args.lr, args.epochs, args.ema_decay, args.nesterov) == (0.2, 3, 0.0, False)
    assert args.scheduler == fast["scheduler"]  # the rest still comes from the preset


def test_a_preset_sets_a_datasets_own_values_for_that_dataset_only(monkeypatch):
    monkeypatch.setitem(recipes.RECIPES, "own", {"epochs": 5, "lr": 0.3, "datasets": {
        "fashion-mnist": {"epochs": 10, "lr": 0.2, "objectives": {"cosface": {"lr": 0.05}}}},
        "objectives": {"xent": {"lr": 0.1}, "cosface": {"lr": 0.07, "scale": 8.0}}})
    assert (parse("--recipe", "own", "--dataset", "mnist", "--loss", "cent").epochs,
            parse("--recipe", "own", "--dataset", "mnist", "--loss", "cent").lr) == (5, 0.3)
    args = parse("--recipe", "own", "--dataset", "fashion_mnist", "--loss", "cent")  # an alias
    assert (args.epochs, args.lr) == (10, 0.2)
    # the loss's own value beats the dataset's; what the user types beats both
    assert parse("--recipe", "own", "--dataset", "fashion-mnist", "--loss", "xent").lr == 0.1
    args = parse("--epochs", "3", "--recipe", "own", "--dataset", "fashion-mnist")
    assert (args.epochs, args.lr) == (3, 0.2)
    # a loss's own value on one dataset beats the loss's and the dataset's
    args = parse("--recipe", "own", "--dataset", "fashion-mnist", "--loss", "cosface")
    assert (args.epochs, args.lr, args.scale) == (10, 0.05, 8.0)
    assert parse("--recipe", "own", "--dataset", "mnist", "--loss", "cosface").lr == 0.07
    assert parse("--recipe", "own", "--dataset", "fashion-mnist", "--loss", "cosface",
                 "--lr", "0.5").lr == 0.5
    # the fast recipe: every dataset within the 10 epochs asked of it
    for name in datasets.DATASETS:
        assert parse("--recipe", "fast", "--dataset", name).epochs <= 10
    assert parse("--recipe", "fast", "--dataset", "fashion-mnist").epochs == 10
    args = parse("--recipe", "fast", "--dataset", "fashion-mnist", "--loss", "standalone")
    assert (args.lr, args.lr_cent, args.batch_size) == (0.05, 0.005, 256)
    args = parse("--recipe", "fast", "--dataset", "mnist", "--loss", "standalone")
    assert (args.lr, args.lr_cent, args.batch_size) == (0.1, None, 128)
    assert parse("--recipe", "fast", "--dataset", "fashion-mnist", "--loss", "cent").batch_size == 128
    assert parse("--recipe", "fast", "--dataset", "fashion-mnist", "--loss", "standalone",
                 "--batch-size", "64").batch_size == 64
    assert parse("--recipe", "fast", "--dataset", "fashion-mnist", "--loss", "xent").lr == 0.05
    assert parse("--recipe", "fast", "--dataset", "mnist", "--loss", "xent").lr == 0.05
    assert parse("--recipe", "fast", "--dataset", "mnist", "--loss", "standalone",
                 "--lr", "0.02").lr == 0.02


def test_a_preset_sets_an_objectives_hyperparameter_only_where_the_loss_uses_it(monkeypatch):
    monkeypatch.setitem(recipes.RECIPES, "smooth", {"label_smoothing": 0.2, "lr": 0.3})
    assert parse("--recipe", "smooth", "--loss", "xent").label_smoothing == 0.2
    assert parse("--recipe", "smooth", "--loss", "standalone").label_smoothing is None
    assert parse("--recipe", "smooth", "--loss", "cent", "--head-loss", "focal").label_smoothing == 0.0
    assert parse("--recipe", "smooth", "--loss", "standalone").lr == 0.3


def test_a_preset_sets_an_objectives_own_values_for_that_objective_only(monkeypatch):
    monkeypatch.setitem(recipes.RECIPES, "own", {"lr": 0.3, "objectives": {
        "cosface": {"scale": 8.0, "margin": 0.2}, "center-push": {"weight_intra": 5.0}}})
    args = parse("--recipe", "own", "--loss", "cosface")
    assert (args.scale, args.margin, args.lr) == (8.0, 0.2, 0.3)
    args = parse("--recipe", "own", "--loss", "arcface")  # not listed: the paper's values
    assert (args.scale, args.margin, args.lr) == (64.0, 0.5, 0.3)
    assert parse("--recipe", "own", "--loss", "center-push").weight_intra == 5.0
    assert parse("--recipe", "own", "--loss", "standalone").weight_intra == 1.0
    assert parse("--recipe", "own", "--loss", "xent").scale is None
    # what the user types still wins
    args = parse("--margin", "0.05", "--recipe", "own", "--loss", "cosface")
    assert (args.scale, args.margin) == (8.0, 0.05)


def test_args_json_records_the_resolved_values(tmp_path, data_dir):
    run_dir = main.train(*flags.parse_args([
        "--recipe", "fast", "--epochs", "1", "--lr", "0.001", "--data-dir", data_dir,
        "--no-download", "--log-dir", str(tmp_path), "--no-plots", "--no-progress",
        "--batch-size", "64", "--model", "lenet"]))
    with open(os.path.join(run_dir, "args.json")) as f:
        saved = json.load(f)
    expected = dict(recipes.settings("fast", saved["loss"], saved["dataset"]), epochs=1, lr=0.001, recipe="fast")
    assert {k: saved[k] for k in expected} == expected


def test_warmup_cosine_is_stepped_per_batch():
    args = parse("--recipe", "fast", "--epochs", "3", "--warmup-epochs", "1", "--lr", "0.1")
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=args.lr)
    steps = 10
    sched = optim.build_scheduler(args, opt, steps)
    lrs = []
    for _ in range(3 * steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # linear warm-up from lr/10 towards lr over the first 10 steps, then cosine over 20 to 0
    assert lrs[:10] == pytest.approx([0.1 * (0.1 + 0.9 * k / 10) for k in range(10)])
    assert lrs[10:] == pytest.approx([0.05 * (1 + math.cos(math.pi * k / 20)) for k in range(20)])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("optimizer, kind", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_weight_decay_exempts_batchnorm_biases_and_centers(optimizer, kind):
    args = parse("--loss", "cent", "--weight-decay", "1e-3", "--wd-exempt", "--lr-cent", "0.5",
                 "--optimizer", optimizer)
    model = build_model("resnet", 2, 1, 28)
    objective = build_objective("cent", 10, 2)
    opt = optim.build_optimizer(args, model, objective)
    assert type(opt) is kind
    decay_of = {id(p): (g["weight_decay"], g["lr"]) for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    named.update({"objective." + n: p for n, p in objective.named_parameters()})
    assert len(decay_of) == len(named)
    for name, p in named.items():
        wd, lr = decay_of[id(p)]
        if name.endswith("centers"):
            assert (wd, lr) == (0.0, 0.5), name
        elif isinstance(p, nn.Parameter) and p.ndim > 1:  # conv and linear weights
            assert (wd, lr) == (1e-3, args.lr), name
        else:  # BatchNorm weights and biases, every bias
            assert (wd, lr) == (0.0, args.lr), name
    # a first step with zero gradients is the decay alone, for SGD and AdamW alike
    before = {name: p.detach().clone() for name, p in named.items()}
    for p in named.values():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in named.items():
        wd, lr = decay_of[id(p)]
        torch.testing.assert_close(p.detach(), before[name] * (1 - lr * wd), msg=name)
    # without --wd-exempt every parameter decays, as torch's SGD does
    args = parse("--loss", "cent", "--weight-decay", "1e-3")
    opt = optim.build_optimizer(args, model, objective)
    assert {g["weight_decay"] for g in opt.param_groups} == {1e-3}


@pytest.mark.parametrize("loss, learned", [("proxy-anchor", "loss_fn.proxies"),
                                           ("normface", None), ("triplet", None)])
def test_proxies_get_the_centers_learning_rate_and_class_weights_the_nets(loss, learned):
    pytest.importorskip("pytorch_metric_learning")
    args = parse("--loss", loss, "--lr", "0.01", "--lr-cent", "0.5", "--weight-decay", "1e-3",
                 "--wd-exempt")
    objective = build_objective(loss, 10, 2)
    opt = optim.build_optimizer(args, build_model("lenet", 2, 1, 28), objective)
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    for name, p in objective.named_parameters():
        g = group_of[id(p)]
        expected = ("centers", 0.5, 0.0) if name == learned else ("model", 0.01, 1e-3)
        assert (g["name"], g["lr"], g["weight_decay"]) == expected, name
    assert [n for n, _ in optim.center_parameters(objective)] == ([learned] if learned else [])


def test_weight_average_warms_up_its_decay():
    net = nn.Linear(1, 1, bias=False)
    averaged = optim.build_averaged(net, decay=0.9)
    values = [1.0, 2.0, 4.0, 8.0, 16.0]
    expected = None
    for n, v in enumerate(values):
        with torch.no_grad():
            net.weight.fill_(v)
        averaged.update_parameters(net)
        # first update copies; then decay min(0.9, (1 + n) / (10 + n)) for the n-th update
        d = min(0.9, (1 + n) / (10 + n))
        expected = v if expected is None else d * expected + (1 - d) * v
        assert averaged.module.weight.item() == pytest.approx(expected, rel=1e-6)
    assert averaged.n_averaged.device.type == "cpu"


def test_weight_average_updates_as_averaged_model_does():
    """optim.WeightAverage against swa_utils.AveragedModel with the same update function,
    bit for bit: parameters, BatchNorm's running statistics and counts, n_averaged; also
    after a state_dict round trip (a resume)."""
    def ema(averaged, current, n):  # WeightAverage's update, as AveragedModel's multi_avg_fn
        d = torch.clamp((1 + n) / (10 + n), max=0.9).to(averaged[0].device)
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1 - d)
        else:
            for a, c in zip(averaged, current):
                a.copy_(c)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(12, 2))
    ours = optim.build_averaged(net, decay=0.9)
    theirs = torch.optim.swa_utils.AveragedModel(net, multi_avg_fn=ema, use_buffers=True)

    def step_and_compare(ours, theirs):
        net(torch.randn(4, 1, 4, 4))  # BatchNorm's buffers move
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        ours.update_parameters(net)
        theirs.update_parameters(net)
        a, b = ours.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    for _ in range(6):
        step_and_compare(ours, theirs)
    assert ours.n_averaged.item() == 6 and ours.module[1].num_batches_tracked.item() == 6
    assert not torch.equal(ours.module[3].weight, net[3].weight)  # averaged, not copied
    resumed = optim.build_averaged(net, decay=0.9)
    resumed.load_state_dict(ours.state_dict())
    for _ in range(3):
        step_and_compare(resumed, theirs)


def _write_entries(path, name, start):
    start.wait()
    for i in range(150):
        recipes.write_tuned(path, f"{name}{i}", "mnist", 2, {"lr": i}, {"trials": 1})


def test_tuners_writing_at_once_keep_each_others_entries(tmp_path):
    """Two studies (say two chains of sweep.py --tune) finishing together write the same
    tuned.json: each write reads the file, adds its entry and replaces it, so without a lock
    one writer's replace drops the other's entry."""
    path = str(tmp_path / "tuned.json")
    context = multiprocessing.get_context("fork")
    start = context.Barrier(2)
    writers = [context.Process(target=_write_entries, args=(path, name, start)) for name in "ab"]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=120)
    assert [w.exitcode for w in writers] == [0, 0]
    written = recipes.read_tuned(path)["mnist"]["2"]
    assert sorted(written) == sorted(f"{name}{i}" for name in "ab" for i in range(150))
    assert written["b7"] == {"settings": {"lr": 7}, "source": {"trials": 1}}
