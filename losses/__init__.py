"""Objectives: each owns every learnable part besides the feature extractor (softmax head,
centers) and offers forward(features, labels) -> dict of named scalar terms (`loss` is the
one back-propagated), predict(features) -> labels, and `centers` (None where it has none).

Adding an objective: one module, one entry in OBJECTIVES: its builder and the
hyperparameters it declares (Hyper: name, flags, default, help, bounds). main.py's parser,
args.json and the results table's weights column read them from here.
"""
from typing import Callable, NamedTuple

from .center import CenterLoss
from .center_push import CenterPushLoss
from .center_softmax import CenterSoftmaxLoss
from .geometry import accuracy, center_statistics, class_means, nearest_center, squared_distances
from .base import Objective
from .hyper import SHARED, Hyper
from .margin import MarginLoss
from .margin_softmax import ArcFaceLoss, CosFaceLoss
from .retrieval import retrieval_metrics
from .softmax import HEAD_LOSSES, SoftmaxLoss
from .standalone import StandaloneCenterLoss


class Entry(NamedTuple):
    build: Callable  # build(num_classes, feat_dim, **{h.name: value for h in hypers})
    hypers: tuple    # the Hyper records it declares


# Hyperparameters more than one objective declares; each objective may give its own default
# and help with .but(default=..., help=...).
WEIGHT_INTRA = Hyper("weight_intra", ("--weight-intra", "--weight_intra"), 1.0,
                     "weight of the intra (center) term", minimum=0, label="w_intra")
WEIGHT_INTER = Hyper("weight_inter", ("--weight-inter", "--weight_inter"), 0.1,
                     "weight of the log-inter term", minimum=0, label="w_inter")
DELTA = Hyper("inter_delta", ("--inter-delta", "--inter_delta", "--delta"), 1.0,
              "log(delta + d^2); 1 as in the reference runs, tiny for the formula as printed",
              minimum=0, label="delta")
CENTER_RADIUS = Hyper("center_radius", ("--center-radius", "--center_radius"), 0.0,
                      "0: the centers start at N(0, 1); r > 0: spread at distance r from the "
                      "origin (2-D: evenly around the circle)", minimum=0, label="radius",
                      quiet=0.0)
MARGIN = Hyper("margin", ("--margin",), 100.0, "", minimum=0)
SCALE = Hyper("scale", ("--scale",), 64.0, "logits are scale * cosines (the paper's s)",
              positive=True)
HEAD = (
    Hyper("head_loss", ("--head-loss", "--head_loss"), "ce", "the classification loss of the "
          "softmax head: cross-entropy, focal loss, or multi-class hinge (MultiMarginLoss)",
          type=str, choices=HEAD_LOSSES, label="head", quiet="ce"),
    Hyper("focal_gamma", ("--focal-gamma", "--focal_gamma"), 2.0,
          "--head-loss focal: -(1 - p_t)^gamma log p_t", minimum=0, only_if=("head_loss", "focal")),
    Hyper("label_smoothing", ("--label-smoothing", "--label_smoothing"), 0.0,
          "--head-loss ce: targets (1 - eps) onehot + eps / classes", minimum=0, maximum=1,
          label="smoothing", quiet=0.0, only_if=("head_loss", "ce")),
)

OBJECTIVES = {
    "xent": Entry(SoftmaxLoss, HEAD),
    "cent": Entry(SoftmaxLoss, (
        Hyper("weight_cent", ("--weight-cent", "--weight_cent"), 1.0,
              "weight of the center loss", minimum=0, label="w_cent"), *HEAD)),
    "standalone": Entry(
        lambda num_classes, feat_dim, inter_delta, **w: StandaloneCenterLoss(
            num_classes, feat_dim, delta=inter_delta, **w),
        (WEIGHT_INTRA, WEIGHT_INTER, DELTA, CENTER_RADIUS)),
    "center-push": Entry(
        lambda num_classes, feat_dim, inter_delta, **w: CenterPushLoss(
            num_classes, feat_dim, delta=inter_delta, **w),
        (WEIGHT_INTRA.but(help="weight of the exp intra term"),
         WEIGHT_INTER.but(default=1.0, help="weight of the log term between the centers"),
         DELTA.but(help="log(delta + ||c_k - c_l||^2); 0 is the formula as printed"),
         Hyper("alpha", ("--alpha",), 0.01, "intra term exp(alpha * d^2); the default keeps "
               "it finite for distances up to 94 (float32)", positive=True))),
    "center-softmax": Entry(
        lambda num_classes, feat_dim, center_gamma, **w: CenterSoftmaxLoss(
            num_classes, feat_dim, gamma=center_gamma, **w),
        (Hyper("center_gamma", ("--center-gamma", "--center_gamma"), 1.0,
               "logits -gamma * ||x - c_k||^2", positive=True, label="gamma"),
         WEIGHT_INTRA.but(default=0.0, help="weight of the intra term added to the "
                          "cross-entropy (Yang et al.'s prototype loss)"))),
    "margin": Entry(MarginLoss, (
        WEIGHT_INTRA, WEIGHT_INTER.but(help="weight of the margin-inter term"),
        MARGIN.but(help="inter term max(0, margin - ||x_i - x_j||^2), on squared distances"))),
    "cosface": Entry(CosFaceLoss, (
        SCALE, MARGIN.but(default=0.35, help="cosine margin: s * (cos - m) for the true class"))),
    "arcface": Entry(ArcFaceLoss, (
        SCALE, MARGIN.but(default=0.5, help="angular margin in radians: s * cos(theta + m) "
                          "for the true class"))),
}


def declared():
    """{name: [(loss, Hyper), ...]} over the registry, in order of first declaration. The
    declarations of one name must agree on everything but default and help (one flag)."""
    out = {}
    for loss, objective in OBJECTIVES.items():
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


def hypers_of(loss):
    if loss not in OBJECTIVES:
        raise ValueError(f"unknown loss {loss!r}; choose from {', '.join(OBJECTIVES)}")
    return OBJECTIVES[loss].hypers


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
    if loss not in OBJECTIVES:
        return "-"
    values = {h.name: values.get(h.name) if values.get(h.name) is not None else h.default
              for h in OBJECTIVES[loss].hypers}
    shown = [h.show(values[h.name]) for h in OBJECTIVES[loss].hypers
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
    return OBJECTIVES[name].build(num_classes, feat_dim, **chosen)


__all__ = ["CenterLoss", "StandaloneCenterLoss", "SoftmaxLoss", "CenterPushLoss",
           "CenterSoftmaxLoss", "MarginLoss", "CosFaceLoss", "ArcFaceLoss", "Hyper", "Objective", "Entry",
           "OBJECTIVES", "build_objective", "declared", "flag_help", "resolve_hypers", "hyper_problems",
           "describe_hypers", "retrieval_metrics", "accuracy", "center_statistics",
           "class_means", "nearest_center", "squared_distances"]
