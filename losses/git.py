import torch.nn.functional as F
from torch import nn

from .base import Objective
from .center import CenterLoss
from .geometry import squared_distances


class GitLoss(Objective):
    """Softmax plus Git loss (Calefati et al., "Git Loss for Deep Face Recognition", BMVC
    2018): the center loss, plus a push of each feature away from the centers of the other
    classes that fades with distance,

        L_C = (1/2m) * sum_i ||x_i - c_{y_i}||^2
        L_G = (1/m)  * sum_i sum_{j != y_i} 1 / (1 + ||x_i - c_j||^2)
        L   = CE(W x + b, y) + lambda_c * L_C + lambda_g * L_G

    lambda_c is `weight_cent`, lambda_g is `weight_git`; the defaults 0.01 and 0.1 are the
    authors' MNIST setting. L_C keeps Wen et al.'s 1/2 (this repo's `cent` drops it), and
    both batch sums are divided by m (the paper prints sums; the authors' code takes means).
    The authors' code keeps its centers out of the optimizer and moves them by Wen et al.'s
    update rule; here they are learned by the optimizer like the other objectives' centers,
    so L_G also pushes the other centers away from the feature. Each push term lies in
    (0, 1]: finite for coincident points. Costs batch x classes distances. The logged
    `center` and `git` are weighted. Prediction: the argmax of the head.
    """

    def __init__(self, num_classes, feat_dim, weight_cent=0.01, weight_git=0.1):
        super().__init__(num_classes, feat_dim, with_centers=False)
        self.head = nn.Linear(feat_dim, num_classes)  # before the centers, as in SoftmaxLoss
        self.center_loss = CenterLoss(num_classes, feat_dim)
        self.weight_cent, self.weight_git = weight_cent, weight_git

    def git(self, features, labels):
        push = 1 / (1 + squared_distances(features, self.centers))
        own = F.one_hot(labels, push.shape[1]).bool()
        return push.masked_fill(own, 0).sum(dim=1).mean()

    def forward(self, features, labels):
        xent = F.cross_entropy(self.head(features), labels)
        center = self.weight_cent * 0.5 * self.pull(features, labels)
        git = self.weight_git * self.git(features, labels)
        return {"loss": xent + center + git, "xent": xent, "center": center, "git": git}

    def predict(self, features):
        return self.head(features).argmax(dim=1)
