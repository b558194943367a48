import torch
import torch.nn.functional as F
from torch import nn

from .base import Objective
from .center import CenterLoss


class IslandLoss(Objective):
    """Softmax plus Island loss (Cai et al., "Island Loss for Learning Discriminative
    Features in Facial Expression Recognition", FG 2018): the center loss, plus a push of
    every pair of centers apart in angle,

        L_C  = (1/2m) * sum_i ||x_i - c_{y_i}||^2
        L_IL = L_C + lambda_1 * sum_{j} sum_{k != j} (cos(c_j, c_k) + 1)
        L    = CE(W x + b, y) + lambda * L_IL

    The island term runs over ordered pairs of all the centers (each unordered pair twice),
    as printed; each of its terms lies in [0, 2] and vanishes for opposite centers. Unlike
    the formula "softmax + center loss + lambda_1 * island" one may write for short, the
    paper weights the island term by lambda * lambda_1: lambda is `weight_cent`
    (0.01 in the paper), lambda_1 is `island_lambda` (10 in the paper). L_C keeps the 1/2
    of Wen et al.'s formula, which this repo's `cent` drops: island's weight_cent w pulls as
    hard as cent's w / 2. The batch sum is divided by m, as in Wen et al.'s released code.
    The logged terms are the weighted `center` (lambda * L_C) and `island`
    (lambda * lambda_1 * the sum). Centers of zero length have no direction: their cosine
    is taken against a vector normalised with eps (F.normalize), so stays finite.
    Prediction: the argmax of the head.
    """

    def __init__(self, num_classes, feat_dim, weight_cent=0.01, island_lambda=10.0):
        super().__init__(num_classes, feat_dim, with_centers=False)
        self.head = nn.Linear(feat_dim, num_classes)  # before the centers, as in SoftmaxLoss
        self.center_loss = CenterLoss(num_classes, feat_dim)
        self.weight_cent, self.island_lambda = weight_cent, island_lambda

    def island(self):
        unit = F.normalize(self.centers, dim=1)
        cos = unit @ unit.T
        other = ~torch.eye(len(cos), dtype=torch.bool, device=cos.device)
        return (cos + 1)[other].sum()

    def forward(self, features, labels):
        xent = F.cross_entropy(self.head(features), labels)
        center = self.weight_cent * 0.5 * self.pull(features, labels)
        island = self.weight_cent * self.island_lambda * self.island()
        return {"loss": xent + center + island, "xent": xent, "center": center, "island": island}

    def predict(self, features):
        return self.head(features).argmax(dim=1)
