import torch

from .base import Objective
from .geometry import batch_pairs


class MarginLoss(Objective):
    """The third alternative of the standalone-center-loss study: the inter term truncated by
    a margin instead of a log (the study set it aside: the margin is arbitrary). It is the
    contrastive loss's push (Hadsell, Chopra, LeCun, "Dimensionality Reduction by Learning
    an Invariant Mapping", CVPR 2006) on squared distances, with the center loss as the pull:

        L_intra = (1/m) * sum_i ||x_i - c_{y_i}||^2
        L_inter = (1/m) * sum_{i != j, y_i != y_j} max(0, margin - ||x_i - x_j||^2)
        L       = weight_intra * L_intra + weight_inter * L_inter

    over ordered pairs of the batch, divided by the batch size, as standalone's log term:
    pairs of different classes closer than sqrt(margin) are pushed apart with a force that
    grows as they meet; farther pairs are left alone. A batch with a single class has no
    pairs: L_inter = 0. Under torchrun, rows are this rank's samples and columns the global
    batch (see StandaloneCenterLoss). Prediction: the nearest center.
    """

    def __init__(self, num_classes, feat_dim, weight_intra=1.0, weight_inter=0.1, margin=100.0):
        super().__init__(num_classes, feat_dim)
        self.weight_intra, self.weight_inter, self.margin = weight_intra, weight_inter, margin

    def inter(self, features, labels):
        d2, different = batch_pairs(features, labels)
        hinge = torch.relu(self.margin - d2)
        return torch.where(different, hinge, torch.zeros_like(hinge)).sum() / features.shape[0]

    def forward(self, features, labels):
        intra = self.weight_intra * self.pull(features, labels)
        inter = self.weight_inter * self.inter(features, labels)
        return {"loss": intra + inter, "intra": intra, "inter": inter}
