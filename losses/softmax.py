import torch.nn.functional as F
from torch import nn

from .center import CenterLoss


class SoftmaxLoss(nn.Module):
    """A linear softmax head on the features with cross-entropy (`xent`), optionally plus
    weight_cent times the center loss (`cent`, Wen et al., ECCV 2016):

        L = CE(W x + b, y) [+ weight_cent * (1/m) * sum_i ||x_i - c_{y_i}||^2]

    Prediction is the argmax of the logits. label_smoothing: CE against (1 - eps) * onehot +
    eps / classes.
    """

    def __init__(self, num_classes, feat_dim, weight_cent=None, label_smoothing=0.0):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.head = nn.Linear(feat_dim, num_classes)
        self.center_loss = CenterLoss(num_classes, feat_dim) if weight_cent is not None else None
        self.weight_cent = weight_cent

    @property
    def centers(self):
        return None if self.center_loss is None else self.center_loss.centers

    def forward(self, features, labels):
        xent = F.cross_entropy(self.head(features), labels, label_smoothing=self.label_smoothing)
        if self.center_loss is None:
            return {"loss": xent, "xent": xent}
        center = self.weight_cent * self.center_loss(features, labels)
        return {"loss": xent + center, "xent": xent, "center": center}

    def predict(self, features):
        return self.head(features).argmax(dim=1)
