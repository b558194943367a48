"""Distances in the feature space: squared distances, the pairs of a (global) batch,
nearest-center prediction, class means, and the geometry statistics of a split."""
import torch
import torch.distributed as dist
# the autograd all-gather that torch.distributed.nn.functional.all_gather now defers to
from torch.distributed._functional_collectives import all_gather_single


def squared_distances(a, b):
    """||a_i - b_j||^2 for all i, j, as ||a||^2 + ||b||^2 - 2 a.b (one matmul), clamped at 0
    against rounding. Its gradient is finite where two points coincide (unlike ||a - b||)."""
    d2 = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2 * a @ b.T
    return d2.clamp_min(0)


def nearest_center(features, centers):
    """Index of the nearest center in squared Euclidean distance."""
    return squared_distances(features, centers).argmin(dim=1)


def class_means(features, labels, num_classes):
    """The mean feature of each class (used as centers for objectives without any).
    A class absent from `labels` gets a mean of 0."""
    sums = torch.zeros(num_classes, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=num_classes).clamp_min(1)
    return sums / counts.unsqueeze(1).to(features.dtype)


def accuracy(predictions, labels):
    """Fraction of correct predictions over the whole split (every sample weighs the same,
    whatever batch it came from)."""
    return (predictions == labels).double().mean().item()


def center_statistics(features, labels, centers):
    """Per class: mean and std of the distance of its samples to its center; and the
    center-to-center distance matrix. Plain lists, ready for JSON."""
    num_classes = centers.shape[0]
    dist = (features - centers[labels]).norm(dim=1).double()
    counts = torch.bincount(labels, minlength=num_classes).double()
    s1 = torch.zeros(num_classes, dtype=torch.float64, device=dist.device).index_add_(0, labels, dist)
    s2 = torch.zeros_like(s1).index_add_(0, labels, dist * dist)
    mean = s1 / counts.clamp_min(1)
    std = (s2 / counts.clamp_min(1) - mean * mean).clamp_min(0).sqrt()
    between = squared_distances(centers.double(), centers.double()).sqrt()
    return {"dist_to_center_mean": mean.tolist(), "dist_to_center_std": std.tolist(),
            "center_distances": between.tolist()}


def gather_batch(features, labels):
    """Features and labels of the whole (global) batch when running under torchrun: the
    features through a differentiable all-gather, so the gradient of a pair reaches both
    of its samples, on whichever rank they live. One process: the inputs themselves."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features, labels
    all_features = all_gather_single(features, 0, dist.group.WORLD)
    all_labels = [torch.empty_like(labels) for _ in range(dist.get_world_size())]
    dist.all_gather(all_labels, labels)
    return all_features, torch.cat(all_labels)


def batch_pairs(features, labels):
    """Squared distances of this rank's samples (rows) to the global batch (columns), and
    the mask of the pairs of different classes (which excludes i == j)."""
    all_features, all_labels = gather_batch(features, labels)
    d2 = squared_distances(features, all_features)
    return d2, labels.unsqueeze(1) != all_labels.unsqueeze(0)
