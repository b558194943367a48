import torch
import torch.nn.functional as F
from torch import nn

from .base import Objective
from .geometry import gather_batch


class RingLoss(Objective):
    """Softmax plus Ring loss (Zheng, Pal & Savvides, "Ring loss: Convex Feature
    Normalization for Face Recognition", CVPR 2018): a soft normalisation that pulls every
    feature's norm to one radius R, learned with the network,

        L = CE(W x + b, y) + (weight_ring / 2m) * sum_i (||x_i|| - R)^2

    weight_ring is the paper's lambda (0.01 worked best there). The paper learns R but does
    not fix its start; here R starts at the mean feature norm of the first training batch
    (over the global batch under torchrun, so every rank starts at the same R), as the
    common PyTorch implementation does: a start at 1 would leave R, whose gradient is
    weight_ring * (R - mean norm), far from the features for thousands of steps. The
    buffer `radius_ready` records that the start was taken, so a resumed run keeps its R
    (a checkpoint is loaded before the first step).
    The norm's gradient at a zero feature is 0 (torch's subgradient), not NaN. No centers;
    prediction is the argmax of the head.
    """

    def __init__(self, num_classes, feat_dim, weight_ring=0.01):
        super().__init__(num_classes, feat_dim, with_centers=False)
        self.head = nn.Linear(feat_dim, num_classes)
        self.radius = nn.Parameter(torch.ones(()))
        self.register_buffer("radius_ready", torch.tensor(False))
        self.weight_ring = weight_ring
        self.checked = False  # the buffer is read once, not at every step (a host sync on GPU)

    def ring(self, features, labels):
        norms = features.norm(dim=1)
        if not self.checked:
            if not self.radius_ready:
                with torch.no_grad():
                    everyone, _ = gather_batch(features.detach(), labels)
                    self.radius.copy_(everyone.norm(dim=1).mean())
                    self.radius_ready.fill_(True)
            self.checked = True
        return (norms - self.radius).pow(2).mean() / 2

    def forward(self, features, labels):
        xent = F.cross_entropy(self.head(features), labels)
        ring = self.weight_ring * self.ring(features, labels)
        return {"loss": xent + ring, "xent": xent, "ring": ring}

    def predict(self, features):
        return self.head(features).argmax(dim=1)
