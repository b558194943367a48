import torch.nn.functional as F
from torch import nn

from .base import Objective
from .center import CenterLoss

HEAD_LOSSES = ("ce", "focal", "hinge")
TERM = {"ce": "xent", "focal": "focal", "hinge": "hinge"}  # the name the log gives the term


def focal_loss(logits, labels, gamma):
    """Multi-class focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV
    2017) without the class weight alpha: mean_i -(1 - p_t)^gamma * log p_t, p_t the softmax
    probability of the true class. gamma = 0 is the cross-entropy."""
    log_pt = F.log_softmax(logits, dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
    one_minus_pt = -log_pt.expm1()  # 1 - p_t without the cancellation of 1 - exp(log p_t)
    return -(one_minus_pt.pow(gamma) * log_pt).mean()


class SoftmaxLoss(Objective):
    """A linear softmax head on the features with a classification loss (`xent`),
    optionally plus weight_cent times the center loss (`cent`, Wen et al., ECCV 2016):

        L = head_loss(W x + b, y) [+ weight_cent * (1/m) * sum_i ||x_i - c_{y_i}||^2]

    head_loss: `ce`, the cross-entropy (with `label_smoothing` eps: targets
    (1 - eps) * onehot + eps / C, as F.cross_entropy); `focal`, the focal loss with
    `focal_gamma`; `hinge`, the multi-class hinge loss of Weston and Watkins as
    torch.nn.MultiMarginLoss: mean_i (1/C) * sum_{j != y_i} max(0, 1 - z_{y_i} + z_j).
    The term is logged as `xent`, `focal` or `hinge`. Prediction is the argmax of the logits.
    """

    def __init__(self, num_classes, feat_dim, weight_cent=None, head_loss="ce", focal_gamma=2.0,
                 label_smoothing=0.0):
        super().__init__(num_classes, feat_dim, with_centers=False)
        if head_loss not in HEAD_LOSSES:
            raise ValueError(f"unknown head loss {head_loss!r}; choose from {', '.join(HEAD_LOSSES)}")
        if label_smoothing and head_loss != "ce":
            raise ValueError(f"label smoothing applies to the ce head loss, not {head_loss}")
        self.head = nn.Linear(feat_dim, num_classes)
        if weight_cent is not None:  # after the head: the seed gives the runs' initial weights
            self.center_loss = CenterLoss(num_classes, feat_dim)
        self.weight_cent = weight_cent
        self.head_loss, self.focal_gamma, self.label_smoothing = head_loss, focal_gamma, label_smoothing

    def classification(self, logits, labels):
        if self.head_loss == "focal":
            return focal_loss(logits, labels, self.focal_gamma)
        if self.head_loss == "hinge":
            return F.multi_margin_loss(logits, labels, p=1, margin=1.0)
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)

    def forward(self, features, labels):
        head = self.classification(self.head(features), labels)
        terms = {"loss": head, TERM[self.head_loss]: head}
        if self.center_loss is not None:
            center = self.weight_cent * self.pull(features, labels)
            terms.update(loss=head + center, center=center)
        return terms

    def predict(self, features):
        return self.head(features).argmax(dim=1)
