import torch.nn.functional as F
from torch import nn

from .base import Objective
from .center import CenterLoss
from .geometry import squared_distances


class ContrastiveCenterLoss(Objective):
    """Contrastive-center loss (Qi & Su, "Contrastive-center loss for deep neural networks",
    ICIP 2017, arXiv 1707.07391): the distance of each feature to its own center over the
    sum of its distances to the other centers,

        L_ctc = (1/2m) * sum_i ||x_i - c_{y_i}||^2 / (delta + sum_{j != y_i} ||x_i - c_j||^2)
        L     = weight_xent * CE(W x + b, y) + weight_ctc * L_ctc

    The paper sums over the batch; here it is divided by the batch size m, as the center
    loss is in this repo (and as the reimplementations do), so the weight does not depend on
    the batch. delta = 1 is the paper's, there to keep the denominator away from 0; it must
    be positive. The paper trains it beside a softmax (weight_xent = 1, prediction the
    argmax of the head); weight_xent = 0 trains it alone, without a head, and predicts the
    nearest center. It costs batch x classes distances. Under torchrun each rank averages
    over its own samples, and DistributedDataParallel's mean of the gradients is the
    one-process gradient.
    """

    def __init__(self, num_classes, feat_dim, weight_ctc=1.0, weight_xent=1.0, delta=1.0):
        super().__init__(num_classes, feat_dim, with_centers=False)
        if not delta > 0:
            raise ValueError(f"the contrastive-center delta must be positive, got {delta}")
        # the head before the centers, as in SoftmaxLoss: the seed gives the same head
        self.head = nn.Linear(feat_dim, num_classes) if weight_xent > 0 else None
        self.center_loss = CenterLoss(num_classes, feat_dim)
        self.weight_ctc, self.weight_xent, self.delta = weight_ctc, weight_xent, delta

    def contrastive_center(self, features, labels):
        d2 = squared_distances(features, self.centers)
        own = F.one_hot(labels, d2.shape[1]).bool()
        # a masked sum, not the row sum minus the own distance, which loses the small
        # distances to rounding when the own one is large; the denominator is >= delta > 0
        others = d2.masked_fill(own, 0).sum(dim=1)
        return 0.5 * (d2[own] / (self.delta + others)).mean()

    def forward(self, features, labels):
        ctc = self.weight_ctc * self.contrastive_center(features, labels)
        if self.head is None:
            return {"loss": ctc, "contrastive_center": ctc}
        xent = self.weight_xent * F.cross_entropy(self.head(features), labels)
        return {"loss": xent + ctc, "xent": xent, "contrastive_center": ctc}

    def predict(self, features):
        if self.head is None:
            return super().predict(features)
        return self.head(features).argmax(dim=1)

