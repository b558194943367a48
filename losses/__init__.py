"""Objectives: each owns every learnable part besides the feature extractor (softmax head,
centers) and offers forward(features, labels) -> dict of named scalar terms (`loss` is the
one back-propagated), predict(features) -> labels, and `centers` (None where it has none).

Adding an objective: one module, one entry in OBJECTIVES.
"""
from .center import CenterLoss
from .evaluate import accuracy, center_statistics, class_means, nearest_center, squared_distances
from .softmax import SoftmaxLoss
from .standalone import StandaloneCenterLoss

OBJECTIVES = {
    "xent": lambda num_classes, feat_dim, **w: SoftmaxLoss(
        num_classes, feat_dim, label_smoothing=w.get("label_smoothing", 0.0)),
    "cent": lambda num_classes, feat_dim, **w: SoftmaxLoss(
        num_classes, feat_dim, weight_cent=w.get("weight_cent", 1.0),
        label_smoothing=w.get("label_smoothing", 0.0)),
    "standalone": lambda num_classes, feat_dim, **w: StandaloneCenterLoss(
        num_classes, feat_dim, weight_intra=w.get("weight_intra", 1.0),
        weight_inter=w.get("weight_inter", 0.1), delta=w.get("delta", 1.0)),
}


def build_objective(name, num_classes, feat_dim, **weights):
    """weights: weight_cent, weight_intra, weight_inter, delta (each objective takes its own)."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name](num_classes, feat_dim, **weights)


__all__ = ["CenterLoss", "StandaloneCenterLoss", "SoftmaxLoss", "OBJECTIVES", "build_objective",
           "accuracy", "center_statistics", "class_means", "nearest_center", "squared_distances"]
