import torch.nn.functional as F
from .base import Objective
from .geometry import squared_distances


class CenterSoftmaxLoss(Objective):
    """The second alternative of the standalone-center-loss study: a softmax over the
    centers instead of a linear layer, i.e. the distance-based cross-entropy of
    convolutional prototype learning (Yang et al., "Robust Classification with
    Convolutional Prototype Learning", CVPR 2018):

        z_k = -gamma * ||x - c_k||^2
        L   = CE(z, y) + weight_intra * (1/m) * sum_i ||x_i - c_{y_i}||^2

    (the intra term is Yang et al.'s prototype loss; off by default). It costs classes x
    batch distances, not batch x batch pairs. Prediction: the nearest center, which is the
    argmax of z.
    """

    def __init__(self, num_classes, feat_dim, gamma=1.0, weight_intra=0.0):
        super().__init__(num_classes, feat_dim)
        self.gamma, self.weight_intra = gamma, weight_intra

    def logits(self, features):
        return -self.gamma * squared_distances(features, self.centers)

    def forward(self, features, labels):
        xent = F.cross_entropy(self.logits(features), labels)
        if not self.weight_intra:
            return {"loss": xent, "xent": xent}
        intra = self.weight_intra * self.pull(features, labels)
        return {"loss": xent + intra, "xent": xent, "intra": intra}
