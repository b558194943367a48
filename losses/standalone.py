import torch
import torch.distributed as dist
# the autograd all-gather that torch.distributed.nn.functional.all_gather now defers to
from torch.distributed._functional_collectives import all_gather_single
from torch import nn

from .center import CenterLoss
from .evaluate import nearest_center, squared_distances


def gather_batch(features, labels):
    """Features and labels of the whole (global) batch when running under torchrun: the
    features through a differentiable all-gather, so the gradient of a pair reaches both
    of its samples, on whichever rank they live. One process: the inputs themselves."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features, labels
    all_features = all_gather_single(features, 0, dist.group.WORLD)
    all_labels = [torch.empty_like(labels) for _ in range(dist.get_world_size())]
    dist.all_gather(all_labels, labels)
    return all_features, torch.cat(all_labels)


class StandaloneCenterLoss(nn.Module):
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
        super().__init__()
        self.center_loss = CenterLoss(num_classes, feat_dim, radius=center_radius)
        self.weight_intra = weight_intra
        self.weight_inter = weight_inter
        self.delta = delta

    @property
    def centers(self):
        return self.center_loss.centers

    @staticmethod
    def pairs(features, labels):
        """Squared distances of this rank's samples (rows) to the global batch (columns), and
        the mask of the pairs of different classes (which excludes i == j)."""
        all_features, all_labels = gather_batch(features, labels)
        d2 = squared_distances(features, all_features)
        return d2, labels.unsqueeze(1) != all_labels.unsqueeze(0)

    def inter(self, features, labels):
        d2, different = self.pairs(features, labels)
        # The log is taken of masked entries made harmless (1), then dropped: with delta = 0
        # a same-class or diagonal d^2 of 0 would otherwise give -inf and a NaN gradient.
        safe = torch.where(different, d2, torch.ones_like(d2))
        logs = torch.where(different, torch.log(self.delta + safe), torch.zeros_like(d2))
        return -logs.sum() / features.shape[0]

    def forward(self, features, labels):
        intra = self.weight_intra * self.center_loss(features, labels)
        inter = self.weight_inter * self.inter(features, labels)
        return {"loss": intra + inter, "intra": intra, "inter": inter}

    def predict(self, features):
        return nearest_center(features, self.centers)
