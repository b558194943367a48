import torch
import torch.nn.functional as F
from torch import nn

from .base import Objective
from .center import CenterLoss
from .geometry import squared_distances


class TripletCenterLoss(Objective):
    """Softmax plus Triplet-center loss (He et al., "Triplet-Center Loss for Multi-View 3D
    Object Retrieval", CVPR 2018): each feature must be nearer its own center than the
    nearest other center by a margin,

        D(x, c) = (1/2) * ||x - c||^2
        L_tc    = (1/m) * sum_i max(0, D(x_i, c_{y_i}) + margin - min_{j != y_i} D(x_i, c_j))
        L       = CE(W x + b, y) + weight_tc * L_tc

    D is the paper's: half the squared Euclidean distance (the authors' released code uses
    the plain distance instead). The paper sums over the batch; here the sum is divided by
    m, as that code and this repo's center loss do. The logged `triplet_center` is weighted.
    Costs batch x classes distances; with a single class there is no other center and the
    term is 0. The centers get the gradient of their own class (pulled) and of the nearest
    other class (pushed). Prediction: the argmax of the head.
    """

    def __init__(self, num_classes, feat_dim, weight_tc=1.0, tc_margin=5.0):
        super().__init__(num_classes, feat_dim, with_centers=False)
        self.head = nn.Linear(feat_dim, num_classes)  # before the centers, as in SoftmaxLoss
        self.center_loss = CenterLoss(num_classes, feat_dim)
        self.weight_tc, self.margin = weight_tc, tc_margin

    def triplet_center(self, features, labels):
        d = squared_distances(features, self.centers) / 2
        own = F.one_hot(labels, d.shape[1]).bool()
        if d.shape[1] < 2:
            return d.sum() * 0
        nearest_other = d.masked_fill(own, torch.inf).min(dim=1).values
        return torch.relu(d[own] + self.margin - nearest_other).mean()

    def forward(self, features, labels):
        xent = F.cross_entropy(self.head(features), labels)
        tc = self.weight_tc * self.triplet_center(features, labels)
        return {"loss": xent + tc, "xent": xent, "triplet_center": tc}

    def predict(self, features):
        return self.head(features).argmax(dim=1)
