import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import Objective


class CosineMarginLoss(Objective):
    """Softmax over the cosines between the feature and each class weight (both L2-normalised),
    scaled by s, with a margin on the true class; the two margins below. Prediction: the argmax
    of the cosine.

    centers is None: the class weights are directions, not points in the feature space, and
    the nearest normalised weight is the argmax of the cosine (||x - w||^2 = ||x||^2 + 1 -
    2 x.w), so it would only repeat the prediction. As for xent, the run's nearest-center
    metrics and pictures use the class means of the train features.
    """
    term = None

    def __init__(self, num_classes, feat_dim, scale=64.0, margin=0.5):
        super().__init__(num_classes, feat_dim, with_centers=False)
        self.weight = nn.Parameter(torch.randn(num_classes, feat_dim))
        self.scale, self.margin = scale, margin

    def cosines(self, features):
        return F.normalize(features, dim=1) @ F.normalize(self.weight, dim=1).T

    def target_logit(self, cos_y):
        raise NotImplementedError

    def forward(self, features, labels):
        cos = self.cosines(features)
        target = labels.unsqueeze(1)
        cos = cos.scatter(1, target, self.target_logit(cos.gather(1, target)))
        loss = F.cross_entropy(self.scale * cos, labels)
        return {"loss": loss, self.term: loss}

    def predict(self, features):
        return self.cosines(features).argmax(dim=1)


class CosFaceLoss(CosineMarginLoss):
    """CosFace / AM-Softmax (Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face
    Recognition", CVPR 2018): logits s * (cos(theta_j) - m * [j == y]); s = 64, m = 0.35."""
    term = "cosface"

    def __init__(self, num_classes, feat_dim, scale=64.0, margin=0.35):
        super().__init__(num_classes, feat_dim, scale, margin)

    def target_logit(self, cos_y):
        return cos_y - self.margin


class ArcFaceLoss(CosineMarginLoss):
    """ArcFace (Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face
    Recognition", CVPR 2019): logits s * cos(theta_y + m) for the true class, s * cos(theta_j)
    otherwise; s = 64, m = 0.5 radians. cos(theta + m) = cos(theta) cos(m) - sin(theta) sin(m)
    (no acos, whose gradient is infinite at +-1). Where theta + m > pi, cos(theta + m) would
    grow again with theta; there (cos(theta) <= cos(pi - m)) the target logit is
    cos(theta) - m sin(m) instead, the fallback of the authors' code: a CosFace-like margin
    that keeps the logit decreasing in theta (with a small step down at the switch).
    """
    term = "arcface"

    def __init__(self, num_classes, feat_dim, scale=64.0, margin=0.5):
        super().__init__(num_classes, feat_dim, scale, margin)

    def target_logit(self, cos_y):
        # sin(theta) >= 0 for theta in [0, pi]; clamped so that the sqrt's gradient stays finite
        sin_y = (1 - cos_y * cos_y).clamp_min(1e-12).sqrt()
        shifted = cos_y * math.cos(self.margin) - sin_y * math.sin(self.margin)
        return torch.where(cos_y > math.cos(math.pi - self.margin), shifted,
                           cos_y - self.margin * math.sin(self.margin))
