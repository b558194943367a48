import torch
from torch import nn


class CenterLoss(nn.Module):
    """Center loss of Wen et al., "A Discriminative Feature Learning Approach for Deep Face
    Recognition", ECCV 2016: the mean squared distance of each feature to its class center,

        L_intra = (1/m) * sum_i ||x_i - c_{y_i}||^2      (no 1/2, as in the reference runs)

    The centers are a learnable parameter, updated by the optimizer like any weight.
    """

    def __init__(self, num_classes, feat_dim):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, features, labels):
        return (features - self.centers[labels]).pow(2).sum(dim=1).mean()
