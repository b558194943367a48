import torch

from .base import Objective
from .geometry import batch_pairs


class StandaloneCenterLoss(Objective):
    """Center loss without softmax: pull each feature to its class center, push samples of
    different classes apart, predict the nearest center.

        L_intra = (1/m) * sum_i ||x_i - c_{y_i}||^2                   (Wen et al., ECCV 2016)
        L_inter = -(1/m) * sum_{i != j, y_i != y_j} log(delta + ||x_i - x_j||^2)
        L       = weight_intra * L_intra + weight_inter * L_inter

    The inter sum runs over ordered pairs of the batch (each unordered pair twice) and is
    divided by the batch size m, not by the number of pairs. By the log's gradient,
    2 (x_i - x_j) / (delta + d^2), close pairs of different classes get the largest push and
    the push fades as they separate. delta = 1 reproduces the reference runs; a tiny delta
    is the formula as printed (delta = 0 is -inf for coincident points). A batch with a
    single class has no pairs: L_inter = 0.

    Under torchrun, rows are this rank's samples and columns the global batch, with m the
    local batch size: the mean over ranks is then the one-process loss, and so are the
    gradients that DistributedDataParallel averages.
    """

    def __init__(self, num_classes, feat_dim, weight_intra=1.0, weight_inter=0.1, delta=1.0,
                 center_radius=0.0):
        super().__init__(num_classes, feat_dim, radius=center_radius)
        self.weight_intra = weight_intra
        self.weight_inter = weight_inter
        self.delta = delta

    def inter(self, features, labels):
        d2, different = batch_pairs(features, labels)
        # The log is taken of masked entries made harmless (1), then dropped: with delta = 0
        # a same-class or diagonal d^2 of 0 would otherwise give -inf and a NaN gradient.
        safe = torch.where(different, d2, torch.ones_like(d2))
        logs = torch.where(different, torch.log(self.delta + safe), torch.zeros_like(d2))
        return -logs.sum() / features.shape[0]

    def forward(self, features, labels):
        intra = self.weight_intra * self.pull(features, labels)
        inter = self.weight_inter * self.inter(features, labels)
        return {"loss": intra + inter, "intra": intra, "inter": inter}
