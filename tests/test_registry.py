"""The objective registry: each objective declares its hyperparameters (flag, default, help,
bounds) and main.py's parser, its checks, args.json and the results table read them from
there, so adding an objective is one module and one entry."""
import pytest
import torch
from torch import nn

import losses
import engine
import flags
import report
from losses import OBJECTIVES, Entry, Hyper, build_objective, describe_hypers


def parse(*argv):
    args, _ = flags.parse_args(list(argv))
    return args


def test_each_objective_declares_consistent_hyperparameters():
    decls = losses.declared()  # raises if two declarations of one name disagree
    for loss, objective in OBJECTIVES.items():
        names = [h.name for h in objective.hypers]
        assert len(names) == len(set(names)), loss
        built = build_objective(loss, 4, 3)  # all defaults
        assert isinstance(built, nn.Module) and hasattr(built, "predict") and hasattr(built, "centers")
    declared_flags = [f for d in decls.values() for f in d[0][1].flags]
    assert len(declared_flags) == len(set(declared_flags))
    parser_flags = {f for a in flags.build_parser()._actions for f in a.option_strings}
    assert set(declared_flags) <= parser_flags


def test_the_old_flags_keep_their_spellings():
    args = parse("--loss", "cent", "--weight_cent", "2", "--weight_intra", "3", "--weight_inter",
                 "0.5", "--delta", "0.25")
    assert (args.weight_cent, args.weight_intra, args.weight_inter, args.inter_delta) == (2, 3, 0.5, 0.25)
    args = parse("--weight-cent", "2", "--inter_delta", "0.5")
    assert (args.weight_cent, args.inter_delta) == (2, 0.5)


def test_shared_flag_resolves_to_each_loss_default():
    assert (parse("--loss", "cosface").margin, parse("--loss", "cosface").scale) == (0.35, 64)
    assert parse("--loss", "arcface").margin == 0.5
    assert parse("--loss", "margin").margin == 100.0
    assert parse("--loss", "arcface", "--margin", "0.2").margin == 0.2
    # the defaults of the chosen loss; hyperparameters it does not declare are None
    args = parse("--loss", "center-softmax")
    assert (args.weight_intra, args.center_gamma, args.weight_cent, args.margin) == (0.0, 1.0, None, None)
    args = parse("--loss", "standalone")
    assert (args.weight_intra, args.weight_inter, args.inter_delta) == (1.0, 0.1, 1.0)
    assert parse("--loss", "center-push").weight_inter == 1.0
    assert (parse().head_loss, parse("--loss", "xent").head_loss) == (None, "ce")


def test_build_net_without_resolved_hyperparameters():
    """Args that never went through check_args (bench/train_step.py) or an old run's args.json without
    the newer names: build_net gives the objective its defaults."""
    args = flags.build_parser().parse_args(["--loss", "cent", "--model", "lenet"])
    assert not hasattr(args, "weight_cent")
    net, _ = engine.build_net(args, 10, 1, 28, "cpu")
    assert (net.objective.weight_cent, net.objective.head_loss) == (1.0, "ce")


def test_build_objective_takes_its_own_and_ignores_the_others():
    o = build_objective("arcface", 5, 3, margin=0.3, scale=None, weight_cent=7.0)
    assert (o.margin, o.scale) == (0.3, 64.0)
    o = build_objective("margin", 5, 3, margin=None, weight_intra=2.0)
    assert (o.margin, o.weight_intra) == (100.0, 2.0)
    with pytest.raises(TypeError, match="wieght_cent"):
        build_objective("cent", 5, 3, wieght_cent=1.0)


def test_bounds_and_contradictions():
    assert losses.hyper_problems("xent", losses.resolve_hypers("xent", {})) == []
    problems = losses.hyper_problems("xent", losses.resolve_hypers(
        "xent", {"head_loss": "focal", "label_smoothing": 0.1, "scale": 0.0}))
    assert problems == ["--scale must be positive, got 0.0",
                        "--label-smoothing applies only with --head-loss ce"]


def test_weights_column_reads_the_registry():
    assert report.weights({"loss": "xent"}) == "-"  # an old run: defaults
    assert report.weights({"loss": "cent", "weight_cent": 1.0}) == "w_cent=1"
    assert report.weights({"loss": "xent", "head_loss": "focal", "focal_gamma": 2.0,
                              "label_smoothing": 0.0}) == "head=focal, focal_gamma=2"
    assert report.weights({"loss": "xent", "label_smoothing": 0.1}) == "smoothing=0.1"
    assert report.weights({"loss": "standalone", "weight_intra": 1.0, "weight_inter": 0.1,
                              "inter_delta": 1.0, "weight_cent": 1.0}) == "w_intra=1, w_inter=0.1, delta=1"
    assert report.weights({"loss": "arcface", "scale": 16.0, "margin": 0.5}) == "scale=16, margin=0.5"
    assert report.weights({"loss": "center-softmax"}) == "gamma=1, w_intra=0"
    assert report.weights({"loss": "removed-since"}) == "-"


class Toy(nn.Module):
    def __init__(self, num_classes, feat_dim, pull=1.0, margin=0.0):
        super().__init__()
        self.centers = nn.Parameter(torch.zeros(num_classes, feat_dim))
        self.pull, self.margin = pull, margin

    def forward(self, features, labels):
        loss = self.pull * (features - self.centers[labels]).pow(2).sum(1).mean()
        return {"loss": loss, "pull": loss}

    def predict(self, features):
        return losses.nearest_center(features, self.centers)


def test_adding_an_objective_is_one_entry(monkeypatch):
    """A new entry brings its flag (and shares --margin), its checks, its default in args,
    the weights column and build_net, without a line of main.py."""
    monkeypatch.setitem(OBJECTIVES, "toy", Entry(Toy, (
        Hyper("pull", ("--pull",), 0.5, "weight of the pull", minimum=0),
        losses.MARGIN.but(default=3.0, help="unused"))))
    args = parse("--loss", "toy")
    assert (args.pull, args.margin) == (0.5, 3.0)
    assert parse("--loss", "cosface").pull is None
    assert parse("--loss", "toy", "--pull", "2").pull == 2.0
    with pytest.raises(SystemExit):
        parse("--loss", "toy", "--pull", "-1")
    net, _ = engine.build_net(parse("--loss", "toy", "--pull", "2", "--model", "lenet"), 10, 1, 28, "cpu")
    assert isinstance(net.objective, Toy) and (net.objective.pull, net.objective.margin) == (2.0, 3.0)
    assert describe_hypers("toy", vars(args)) == "pull=0.5, margin=3"
    with pytest.raises(ValueError, match="toy"):  # a shared name must keep its flag and bounds
        monkeypatch.setitem(OBJECTIVES, "toy", Entry(Toy, (losses.MARGIN.but(minimum=None),)))
        losses.declared()
