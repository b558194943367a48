"""The base of every objective: the centers, where it has them, and nearest-center prediction.

An objective is an nn.Module that owns every learnable part besides the feature extractor
and offers forward(features, labels) -> {"loss": ..., <term>: ...}, predict(features) ->
labels and `centers` ((classes, feat_dim) or None). A loss file holds only its math.
"""
from torch import nn

from .center import CenterLoss
from .geometry import nearest_center


class Objective(nn.Module):
    """with_centers: learnable centers in a CenterLoss (its `pull` is the center loss of Wen
    et al.), started at N(0, 1) or spread at `radius` from the origin. predict() is the
    nearest center; objectives without centers override it."""

    def __init__(self, num_classes, feat_dim, with_centers=True, radius=0.0):
        super().__init__()
        self.num_classes, self.feat_dim = num_classes, feat_dim
        self.center_loss = CenterLoss(num_classes, feat_dim, radius=radius) if with_centers else None
        self._register_load_state_dict_pre_hook(self._old_center_key)

    @property
    def centers(self):
        return None if self.center_loss is None else self.center_loss.centers

    def pull(self, features, labels):
        """(1/m) sum_i ||x_i - c_{y_i}||^2."""
        return self.center_loss(features, labels)

    def predict(self, features):
        return nearest_center(features, self.centers)

    def observe(self, features, labels):
        """Called at each evaluation with the (clean) training features: objectives that
        predict from class means (pair losses) keep them here. Default: nothing."""

    @staticmethod
    def _old_center_key(state_dict, prefix, *_):
        # checkpoints made before the centers lived in a CenterLoss stored them as `centers`
        old, new = prefix + "centers", prefix + "center_loss.centers"
        if old in state_dict and new not in state_dict:
            state_dict[new] = state_dict.pop(old)
