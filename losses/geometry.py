"""Distances in the feature space: squared distances, the pairs of a (global) batch,
nearest-center prediction, class means, and the geometry statistics of a split."""
import torch
import torch.distributed as dist
# the differentiable all-gather (torch >= 2.3; torch.distributed.nn.functional.all_gather is
# deprecated in its favour, and all_gather_single is autograd-aware only in newer releases)
from torch.distributed._functional_collectives import all_gather_tensor_autograd


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
    all_features = all_gather_tensor_autograd(features, 0, dist.group.WORLD)
    all_labels = [torch.empty_like(labels) for _ in range(dist.get_world_size())]
    dist.all_gather(all_labels, labels)
    return all_features, torch.cat(all_labels)


def batch_pairs(features, labels):
    """Squared distances of this rank's samples (rows) to the global batch (columns), and
    the mask of the pairs of different classes (which excludes i == j)."""
    all_features, all_labels = gather_batch(features, labels)
    d2 = squared_distances(features, all_features)
    return d2, labels.unsqueeze(1) != all_labels.unsqueeze(0)


def geometry_metrics(features, labels, centers=None):
    """The shape of a split's features, as plain floats (computed on the device, in float64):

    - center_ratio: the mean distance between the centers of two different classes over the
      mean distance of a sample to its own center (samples weigh the same); the given
      `centers` (classes, dim), or the class means if None. NaN with fewer than 2 classes.
    - nc1: tr(Sigma_W Sigma_B^+) / C, the within-class variability collapse of Papyan, Han &
      Donoho ("Prevalence of neural collapse during the terminal phase of deep learning
      training", PNAS 2020): Sigma_W the covariance of the samples around their class mean,
      averaged over samples; Sigma_B the covariance of the C class means around the global
      mean (of all samples); + the pseudo-inverse. It uses the class means whatever
      `centers` are. 0 when every class has collapsed to its mean.
    - norm_mean, norm_std: of the features' lengths (population std).
    - min_center_angle: the smallest angle, in degrees, between two centers (or class means)
      seen as vectors from the origin.

    Classes absent from `labels` are left out of every statistic (and their centers)."""
    x = features.double()
    num_classes = centers.shape[0] if centers is not None else int(labels.max()) + 1
    counts = torch.bincount(labels, minlength=num_classes)
    present = counts > 0
    means = class_means(x, labels, num_classes)
    c = means if centers is None else centers.detach().double()
    kept = c[present]
    n_kept = kept.shape[0]

    spread = (x - c[labels]).norm(dim=1).mean()
    pairs = ~torch.eye(n_kept, dtype=torch.bool, device=x.device)
    between = squared_distances(kept, kept).sqrt()[pairs]
    center_ratio = (between.mean() / spread).item() if n_kept > 1 else float("nan")

    mu = means[present]
    within = x - means[labels]
    sigma_w = within.T @ within / x.shape[0]
    spread_b = mu - x.mean(dim=0)
    sigma_b = spread_b.T @ spread_b / n_kept
    nc1 = (torch.trace(sigma_w @ torch.linalg.pinv(sigma_b)) / n_kept).item()

    norms = x.norm(dim=1)
    unit = torch.nn.functional.normalize(kept, dim=1)
    cosines = (unit @ unit.T)[pairs].clamp(-1, 1)
    angle = torch.rad2deg(torch.acos(cosines.max())).item() if n_kept > 1 else float("nan")
    return {"center_ratio": center_ratio, "nc1": nc1, "norm_mean": norms.mean().item(),
            "norm_std": norms.std(unbiased=False).item(), "min_center_angle": angle}
