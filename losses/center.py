import math

import torch
from torch import nn


def spread_centers(num_classes, feat_dim, radius):
    """Starting centers all at `radius` from the origin, spread out: in 2-D evenly around
    the circle (neighbours 2 r sin(pi / classes) apart) with the classes in a random order;
    above 2-D random directions (near-orthogonal in high dimension). The order and the
    directions come from torch's global generator, so the seed fixes them."""
    if feat_dim == 2:
        angles = 2 * math.pi * torch.randperm(num_classes).double() / num_classes
        points = torch.stack([angles.cos(), angles.sin()], dim=1).float()
    else:
        points = nn.functional.normalize(torch.randn(num_classes, feat_dim), dim=1)
    return radius * points


class CenterLoss(nn.Module):
    """Center loss of Wen et al., "A Discriminative Feature Learning Approach for Deep Face
    Recognition", ECCV 2016: the mean squared distance of each feature to its class center,

        L_intra = (1/m) * sum_i ||x_i - c_{y_i}||^2      (no 1/2, as in the reference runs)

    The centers are a learnable parameter, updated by the optimizer like any weight. They
    start at N(0, 1) as in the reference runs (radius 0), or spread at `radius` from the
    origin (`spread_centers`).
    """

    def __init__(self, num_classes, feat_dim, radius=0.0):
        super().__init__()
        start = (spread_centers(num_classes, feat_dim, radius) if radius > 0 else
                 torch.randn(num_classes, feat_dim))
        self.centers = nn.Parameter(start)

    def forward(self, features, labels):
        return (features - self.centers[labels]).pow(2).sum(dim=1).mean()
