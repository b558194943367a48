import torch

from .base import Objective
from .geometry import squared_distances


class CenterPushLoss(Objective):
    """The first alternative of the standalone-center-loss study: enlarge the centers
    directly instead of pushing samples apart (an exponential pull to the center, a log push
    between centers; the study found it similar on MNIST, failing on Fashion-MNIST and
    CIFAR-10). With n_c learnable centers c_k:

        L_intra = (1/m) * sum_i exp(alpha * ||x_i - c_{y_i}||^2)
        L_inter = -(1/n_c) * sum_{k != l} log(delta + ||c_k - c_l||^2)    (ordered pairs)
        L       = weight_intra * L_intra + weight_inter * L_inter

    The study's formula is delta = 0; delta = 1 keeps it finite where two centers meet.
    exp overflows float32 at alpha * d^2 > 88: the default alpha = 0.01 allows distances to
    the own center up to 94, beyond the 6-30 between centers that the standalone runs reach.
    The inter term depends on the centers only: it is the same on every rank under torchrun.
    Prediction: the nearest center.
    """

    def __init__(self, num_classes, feat_dim, weight_intra=1.0, weight_inter=1.0, delta=1.0,
                 alpha=0.01):
        super().__init__(num_classes, feat_dim)
        self.weight_intra, self.weight_inter = weight_intra, weight_inter
        self.delta, self.alpha = delta, alpha

    def intra(self, features, labels):
        d2 = (features - self.centers[labels]).pow(2).sum(dim=1)
        return torch.exp(self.alpha * d2).mean()

    def inter(self):
        c = self.centers
        d2 = squared_distances(c, c)
        other = ~torch.eye(len(c), dtype=torch.bool, device=c.device)
        # the diagonal's log is taken of a harmless 1 and dropped (delta = 0 would give -inf)
        logs = torch.where(other, torch.log(self.delta + torch.where(other, d2, torch.ones_like(d2))),
                           torch.zeros_like(d2))
        return -logs.sum() / len(c)

    def forward(self, features, labels):
        intra = self.weight_intra * self.intra(features, labels)
        inter = self.weight_inter * self.inter()
        return {"loss": intra + inter, "intra": intra, "inter": inter}
