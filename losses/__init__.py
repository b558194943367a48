"""Objectives: each owns every learnable part besides the feature extractor (softmax head,
centers) and offers forward(features, labels) -> dict of named scalar terms (`loss` is the
one back-propagated), predict(features) -> labels, and `centers` (None where it has none).

Adding an objective: one module, one entry in OBJECTIVES: its builder and the
hyperparameters it declares (Hyper: name, flags, default, help, bounds, search range). main.py's
parser, args.json and the results table's weights column read them from here. Besides the
registry's names, `pml:NAME` is any loss class NAME of pytorch-metric-learning (entry()).
"""
from typing import Callable, NamedTuple

from utils import UserError

from .center import CenterLoss
from .center_push import CenterPushLoss
from .center_softmax import CenterSoftmaxLoss
from .contrastive_center import ContrastiveCenterLoss
from .geometry import (accuracy, center_statistics, class_means, geometry_metrics, nearest_center,
                       squared_distances)
from .base import Objective
from .git import GitLoss
from .hyper import SHARED, Hyper
from .island import IslandLoss
from .margin import MarginLoss
from .margin_softmax import ArcFaceLoss, CosFaceLoss
from .pml import MetricLearningLoss, curated, generic, loss_names
from .retrieval import retrieval_metrics
from .ring import RingLoss
from .softmax import HEAD_LOSSES, SoftmaxLoss
from .standalone import StandaloneCenterLoss
from .triplet_center import TripletCenterLoss


class Entry(NamedTuple):
    build: Callable  # build(num_classes, feat_dim, **{h.name: value for h in hypers})
    hypers: tuple    # the Hyper records it declares


# Hyperparameters more than one objective declares; each objective may give its own default
# and help with .but(default=..., help=...).
# A search range is the tuner's (sweep.py); the learning rates and weight decay are tuned there.
WEIGHT_INTRA = Hyper("weight_intra", ("--weight-intra", "--weight_intra"), 1.0,
                     "weight of the intra (center) term", minimum=0, label="w_intra",
                     search=(0.1, 10.0), log=True)
WEIGHT_INTER = Hyper("weight_inter", ("--weight-inter", "--weight_inter"), 0.1,
                     "weight of the log-inter term", minimum=0, label="w_inter",
                     search=(0.01, 1.0), log=True)
DELTA = Hyper("inter_delta", ("--inter-delta", "--inter_delta", "--delta"), 1.0,
              "log(delta + d^2); 1 as in the reference runs, tiny for the formula as printed",
              minimum=0, label="delta", search=(1e-3, 10.0), log=True)
CENTER_RADIUS = Hyper("center_radius", ("--center-radius", "--center_radius"), 0.0,
                      "0: the centers start at N(0, 1); r > 0: spread at distance r from the "
                      "origin (2-D: evenly around the circle)", minimum=0, label="radius",
                      quiet=0.0, search=(0.0, 20.0))
MARGIN = Hyper("margin", ("--margin",), 100.0, "", minimum=0)
SCALE = Hyper("scale", ("--scale",), 64.0, "logits are scale * cosines (the paper's s)",
              positive=True, search=(4.0, 64.0), log=True)
HEAD = (
    Hyper("head_loss", ("--head-loss", "--head_loss"), "ce", "the classification loss of the "
          "softmax head: cross-entropy, focal loss, or multi-class hinge (MultiMarginLoss)",
          type=str, choices=HEAD_LOSSES, label="head", quiet="ce", search=HEAD_LOSSES),
    Hyper("focal_gamma", ("--focal-gamma", "--focal_gamma"), 2.0,
          "--head-loss focal: -(1 - p_t)^gamma log p_t", minimum=0, only_if=("head_loss", "focal"),
          search=(0.5, 5.0)),
    Hyper("label_smoothing", ("--label-smoothing", "--label_smoothing"), 0.0,
          "--head-loss ce: targets (1 - eps) onehot + eps / classes", minimum=0, maximum=1,
          label="smoothing", quiet=0.0, only_if=("head_loss", "ce"), search=(0.0, 0.3)),
)
WEIGHT_CENT = Hyper("weight_cent", ("--weight-cent", "--weight_cent"), 1.0,
                    "weight of the center loss", minimum=0, label="w_cent",
                    search=(0.01, 10.0), log=True)
ALPHA = Hyper("alpha", ("--alpha",), 0.01, "", positive=True)
TEMPERATURE = Hyper("temperature", ("--temperature",), 0.1, "", positive=True)
# `pml:NAME`, any loss class of pytorch-metric-learning: its arguments and its miner. They
# change what is trained, not how much of it: no search range.
PML = "pml:"
PML_HYPERS = (
    Hyper("pml_args", ("--pml-args", "--pml_args"), None,
          "keyword arguments of the loss, key=value ... (a Python literal, or a pml distance, "
          "reducer or regularizer such as distance=LpDistance(power=2)); miner.key=value for "
          "the miner", type=str, nargs="*", label="args"),
    Hyper("pml_miner", ("--pml-miner", "--pml_miner"), None,
          "a miner class of pytorch_metric_learning.miners (none: every pair / triplet)",
          type=str, label="miner"),
)


def sphereface(num_classes, feat_dim, margin, scale):
    """pml's SphereFaceLoss, whose margin is the integer m of cos(m theta)."""
    if round(margin) < 1:
        raise UserError(f"--loss sphereface takes an integer --margin of at least 1 (the m of "
                        f"cos(m theta)), got {margin:g}")
    return curated("SphereFaceLoss", "sphereface")(num_classes, feat_dim, margin=int(round(margin)),
                                                  scale=scale)


OBJECTIVES = {
    "xent": Entry(SoftmaxLoss, HEAD),
    "cent": Entry(SoftmaxLoss, (WEIGHT_CENT, *HEAD)),
    "standalone": Entry(
        lambda num_classes, feat_dim, inter_delta, **w: StandaloneCenterLoss(
            num_classes, feat_dim, delta=inter_delta, **w),
        (WEIGHT_INTRA, WEIGHT_INTER, DELTA, CENTER_RADIUS)),
    "center-push": Entry(
        lambda num_classes, feat_dim, inter_delta, **w: CenterPushLoss(
            num_classes, feat_dim, delta=inter_delta, **w),
        (WEIGHT_INTRA.but(help="weight of the exp intra term"),
         WEIGHT_INTER.but(default=1.0, help="weight of the log term between the centers",
                          search=(0.1, 10.0)),
         DELTA.but(help="log(delta + ||c_k - c_l||^2); 0 is the formula as printed"),
         ALPHA.but(help="intra term exp(alpha * d^2); the default keeps it finite for "
                   "distances up to 94 (float32)", search=(1e-3, 0.1), log=True))),
    "center-softmax": Entry(
        lambda num_classes, feat_dim, center_gamma, **w: CenterSoftmaxLoss(
            num_classes, feat_dim, gamma=center_gamma, **w),
        (Hyper("center_gamma", ("--center-gamma", "--center_gamma"), 1.0,
               "logits -gamma * ||x - c_k||^2", positive=True, label="gamma",
               search=(0.01, 10.0), log=True),
         WEIGHT_INTRA.but(default=0.0, help="weight of the intra term added to the "
                          "cross-entropy (Yang et al.'s prototype loss)", search=(0.0, 1.0),
                          log=False))),
    "margin": Entry(MarginLoss, (
        WEIGHT_INTRA, WEIGHT_INTER.but(help="weight of the margin-inter term"),
        MARGIN.but(help="inter term max(0, margin - ||x_i - x_j||^2), on squared distances",
                   search=(1.0, 1000.0), log=True))),
    "cosface": Entry(CosFaceLoss, (
        SCALE, MARGIN.but(default=0.35, help="cosine margin: s * (cos - m) for the true class",
                          search=(0.05, 0.5)))),
    "arcface": Entry(ArcFaceLoss, (
        SCALE, MARGIN.but(default=0.5, help="angular margin in radians: s * cos(theta + m) "
                          "for the true class", search=(0.1, 0.8)))),
    # the center-loss family
    "contrastive-center": Entry(
        lambda num_classes, feat_dim, ctc_delta, **w: ContrastiveCenterLoss(
            num_classes, feat_dim, delta=ctc_delta, **w),
        (Hyper("weight_ctc", ("--weight-ctc", "--weight_ctc"), 1.0, "weight of the "
               "contrastive-center term (the paper's lambda)", minimum=0, label="w_ctc",
               search=(0.01, 10.0), log=True),
         Hyper("weight_xent", ("--weight-xent", "--weight_xent"), 1.0, "weight of the softmax "
               "head's cross-entropy; 0: no head, the contrastive-center loss alone, predicting "
               "the nearest center", minimum=0, label="w_xent", search=(0.0, 1.0)),
         Hyper("ctc_delta", ("--ctc-delta", "--ctc_delta"), 1.0, "the delta that keeps the "
               "denominator delta + sum_{j != y} ||x - c_j||^2 from 0 (the paper's 1)",
               positive=True, label="delta_ctc", search=(0.01, 10.0), log=True))),
    "ring": Entry(RingLoss, (
        Hyper("weight_ring", ("--weight-ring", "--weight_ring"), 0.01, "the paper's lambda: "
              "weight of (1/2m) sum_i (||x_i|| - R)^2, R learned", minimum=0, label="w_ring",
              search=(1e-3, 1.0), log=True),)),
    "island": Entry(IslandLoss, (
        WEIGHT_CENT.but(default=0.01, help="the paper's lambda: weight of the island loss, the "
                        "center loss (with Wen et al.'s 1/2) + lambda_1 * the island term",
                        search=(1e-3, 1.0)),
        Hyper("island_lambda", ("--island-lambda", "--island_lambda"), 10.0, "the paper's "
              "lambda_1: weight of sum_{j != k} (cos(c_j, c_k) + 1) inside the island loss",
              minimum=0, label="lambda_1", search=(0.1, 100.0), log=True))),
    "triplet-center": Entry(
        lambda num_classes, feat_dim, margin, **w: TripletCenterLoss(
            num_classes, feat_dim, tc_margin=margin, **w),
        (Hyper("weight_tc", ("--weight-tc", "--weight_tc"), 1.0, "weight of the "
               "triplet-center term (the paper's lambda)", minimum=0, label="w_tc",
               search=(0.01, 10.0), log=True),
         MARGIN.but(default=5.0, help="max(0, D(x, c_y) + margin - min_{j != y} D(x, c_j)), "
                    "D half the squared distance", search=(0.5, 50.0), log=True))),
    "git": Entry(GitLoss, (
        WEIGHT_CENT.but(default=0.01, help="the paper's lambda_c: weight of the center loss "
                        "(with Wen et al.'s 1/2)", search=(1e-3, 1.0)),
        Hyper("weight_git", ("--weight-git", "--weight_git"), 0.1, "the paper's lambda_g: "
              "weight of the push sum_{j != y} 1 / (1 + ||x - c_j||^2)", minimum=0,
              label="w_git", search=(1e-3, 1.0), log=True))),
    # pytorch-metric-learning's losses (an optional dependency) with their defaults, under
    # short names; pml:NAME reaches the others (see entry())
    "contrastive": Entry(curated("ContrastiveLoss", "contrastive"), (
        Hyper("pos_margin", ("--pos-margin", "--pos_margin"), 0.0, "positive pairs pay for a "
              "distance above it (pml's default distance: Euclidean between normalised "
              "features, in [0, 2])", minimum=0, search=(0.0, 0.5)),
        Hyper("neg_margin", ("--neg-margin", "--neg_margin"), 1.0, "negative pairs pay for a "
              "distance below it", minimum=0, search=(0.2, 2.0)))),
    "triplet": Entry(curated("TripletMarginLoss", "triplet", miner="BatchHardMiner"), (
        MARGIN.but(default=0.05, help="d(a, p) - d(a, n) + margin on normalised features, "
                   "over the batch-hard triplets (BatchHardMiner)", search=(0.01, 1.0),
                   log=True),)),
    "multi-similarity": Entry(
        curated("MultiSimilarityLoss", "multi-similarity", miner="MultiSimilarityMiner",
                ms_beta="beta", ms_base="base", ms_epsilon="miner.epsilon"),
        (ALPHA.but(default=2.0, help="the weight of the positive pairs' similarities",
                   search=(0.1, 20.0), log=True),
         Hyper("ms_beta", ("--ms-beta", "--ms_beta"), 50.0, "the weight of the negative "
               "pairs' similarities", positive=True, label="beta", search=(1.0, 100.0), log=True),
         Hyper("ms_base", ("--ms-base", "--ms_base"), 0.5, "the similarity (cosine) that "
               "separates the pairs' pull from their push", minimum=-1, maximum=1, label="base",
               search=(0.0, 1.0)),
         Hyper("ms_epsilon", ("--ms-epsilon", "--ms_epsilon"), 0.1, "the miner's margin: pairs "
               "within epsilon of the hardest of the other kind", minimum=0, label="epsilon",
               search=(0.01, 0.5), log=True))),
    "supcon": Entry(curated("SupConLoss", "supcon"), (
        TEMPERATURE.but(default=0.1, help="softmax temperature of the cosines",
                        search=(0.01, 1.0), log=True),)),
    "proxy-anchor": Entry(curated("ProxyAnchorLoss", "proxy-anchor"), (
        MARGIN.but(default=0.1, help="cosine margin between the features and their proxies",
                   search=(0.0, 0.5)),
        ALPHA.but(default=32.0, help="the scale of the cosines", search=(4.0, 64.0), log=True))),
    "proxy-nca": Entry(curated("ProxyNCALoss", "proxy-nca"), (
        Hyper("softmax_scale", ("--softmax-scale", "--softmax_scale"), 1.0, "the scale of the "
              "negative squared distances (of normalised vectors) in the softmax over proxies",
              positive=True, search=(1.0, 64.0), log=True),)),
    "normface": Entry(curated("NormalizedSoftmaxLoss", "normface"), (
        TEMPERATURE.but(default=0.05, help="logits are cosines / temperature",
                        search=(0.01, 0.5), log=True),)),
    "sphereface": Entry(sphereface,
        (MARGIN.but(default=4.0, help="the angular margin m of cos(m theta), rounded to an "
                    "integer", search=(1.0, 4.0)),
         SCALE.but(default=1.0, help="logits are scale * ||x|| * cos(m theta) (the paper's: 1)",
                   search=(0.5, 16.0)))),
}


def declared():
    """{name: [(loss, Hyper), ...]} over the registry (and pml:NAME), in order of first
    declaration. The declarations of one name must agree on everything but default and help
    (one flag)."""
    out = {}
    for loss, objective in [*OBJECTIVES.items(), (PML + "NAME", Entry(None, PML_HYPERS))]:
        for h in objective.hypers:
            decls = out.setdefault(h.name, [])
            differ = [f for f in SHARED if decls and getattr(decls[0][1], f) != getattr(h, f)]
            if differ:
                raise ValueError(f"objective {loss!r} declares {h.name!r} with another "
                                 f"{', '.join(differ)} than {decls[0][0]!r}")
            decls.append((loss, h))
    return out


def flag_help(decls):
    """The --help text of one flag from its declarations: each use with its default, the
    objectives that share both grouped."""
    groups = {}
    for loss, h in decls:
        groups.setdefault((h.help, h.default), []).append(loss)
    return "; ".join(f"{', '.join(losses)}: {text} (default {default:g})"
                     if isinstance(default, float) else
                     f"{', '.join(losses)}: {text} (default {default})"
                     for (text, default), losses in groups.items())


def entry(name):
    """The Entry of an objective: a registry name, or `pml:NAME` for the loss class NAME of
    pytorch-metric-learning. An unknown name is a ValueError that lists the valid ones. If
    pytorch-metric-learning is not installed, pml:NAME is not checked here: building it
    raises UserError with how to install it."""
    if name in OBJECTIVES:
        return OBJECTIVES[name]
    if isinstance(name, str) and name.startswith(PML) and len(name) > len(PML):
        class_name = name[len(PML):]
        try:
            names = loss_names()
        except UserError:
            names = None
        if names is not None and class_name not in names:
            raise ValueError(f"unknown loss {name!r}: pytorch-metric-learning has no loss "
                             f"{class_name!r}; its losses: {', '.join(names)}")
        return Entry(generic(class_name), PML_HYPERS)
    raise ValueError(f"unknown loss {name!r}; choose from {', '.join(OBJECTIVES)}, or pml:NAME "
                     "for a loss class NAME of pytorch-metric-learning")


def is_objective(name):
    """Whether `name` is a loss one can ask for (--loss)."""
    try:
        entry(name)
    except ValueError:
        return False
    return True


def hypers_of(loss):
    return entry(loss).hypers


def resolve_hypers(loss, values):
    """Every declared hyperparameter's value for a run of `loss`: the value in `values` where
    it is given (not None), else the loss's own default, else None (the loss does not use
    it; a value given for another loss's hyperparameter is kept, and ignored)."""
    own = {h.name: h.default for h in hypers_of(loss)}
    return {name: values[name] if values.get(name) is not None else own.get(name)
            for name in declared()}


def hyper_problems(loss, values):
    """One line per value that is out of bounds, and per hyperparameter of `loss` set to
    something else than its default where it does not apply (--label-smoothing with
    --head-loss focal)."""
    problems = []
    for name, decls in declared().items():
        if values.get(name) is not None:
            problems.append(decls[0][1].problem(values[name]))
    for h in hypers_of(loss):
        value = values.get(h.name)
        if value is not None and value != h.default and not h.applies(values):
            problems.append(f"{h.flag} applies only with --{h.only_if[0].replace('_', '-')} "
                            f"{h.only_if[1]}")
    return [p for p in problems if p is not None]


def describe_hypers(loss, values):
    """The weights column: `label=value` of each hyperparameter of `loss` that applies and is
    not at its quiet value, "-" for none. Missing values (runs older than a hyperparameter)
    read as the default; an unknown loss gives "-"."""
    try:
        hypers = entry(loss).hypers
    except ValueError:
        return "-"
    values = {h.name: values.get(h.name) if values.get(h.name) is not None else h.default
              for h in hypers}
    shown = [h.show(values[h.name]) for h in hypers
             if h.applies(values) and values[h.name] != h.quiet]
    return ", ".join(shown) or "-"


def build_objective(name, num_classes, feat_dim, **hyper):
    """The objective `name` with its own hyperparameters taken from `hyper` (None or missing:
    its default). Hyperparameters of other objectives are ignored; a name no objective
    declares is an error."""
    unknown = set(hyper) - set(declared())
    if unknown:
        raise TypeError(f"no objective has the hyperparameter(s) {', '.join(sorted(unknown))}")
    chosen = {h.name: hyper[h.name] if hyper.get(h.name) is not None else h.default
              for h in hypers_of(name)}
    return entry(name).build(num_classes, feat_dim, **chosen)


__all__ = ["CenterLoss", "StandaloneCenterLoss", "SoftmaxLoss", "CenterPushLoss",
           "CenterSoftmaxLoss", "MarginLoss", "CosFaceLoss", "ArcFaceLoss", "Hyper", "Objective", "Entry",
           "OBJECTIVES", "build_objective", "declared", "flag_help", "resolve_hypers", "hyper_problems",
           "describe_hypers", "retrieval_metrics", "accuracy", "center_statistics",
           "class_means", "nearest_center", "squared_distances",
           "ContrastiveCenterLoss", "RingLoss", "IslandLoss", "TripletCenterLoss", "GitLoss",
           "MetricLearningLoss", "entry", "is_objective", "hypers_of", "geometry_metrics"]
