"""torchvision datasets as whole uint8 tensors on the training device, batched per-sample
augmentation on the device, and the batch iterators of training and evaluation.

An epoch's order and every augmentation draw come from a generator seeded by (seed, epoch):
the same on every rank and after a resume, so neither changes what a run computes.
"""
import math
import os
import pickle
import shutil
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from utils import UserError

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]

class CIFAR10(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR-10, checking that the extracted files exist rather than their MD5
    sums: the sums guard the download (torchvision still checks the archive's), and a file
    that is not a valid pickled batch fails while loading anyway. This also lets the tests
    run on small generated files in the real on-disk format."""

    def _check_integrity(self):
        names = [f for f, _ in self.train_list + self.test_list] + [self.meta["filename"]]
        return all(os.path.isfile(os.path.join(self.root, self.base_folder, f)) for f in names)

    def _load_meta(self):
        with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


# name -> (torchvision class, class names, augmentation of REFERENCE.md)
DATASETS = {
    "mnist": (torchvision.datasets.MNIST, MNIST_CLASSES, dict(rotate=5.0)),
    "fashion-mnist": (torchvision.datasets.FashionMNIST, FASHION_CLASSES, dict(rotate=5.0, flip=True)),
    "cifar10": (CIFAR10, CIFAR10_CLASSES, dict(flip=True, pad=4)),
}
ALIASES = {"cifar-10": "cifar10", "fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
           "fmnist": "fashion-mnist"}

# Files each loader reads, to tell an offline user what to put where.
_EXPECTED_FILES = {
    "mnist": ("MNIST/raw", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                            "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    "fashion-mnist": ("FashionMNIST/raw", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    "cifar10": ("cifar-10-batches-py", ["data_batch_1", "...", "data_batch_5", "test_batch",
                                        "batches.meta"]),
}


def canonical_name(name):
    name = name.lower()
    return ALIASES.get(name, name)


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W) on the device
    labels: torch.Tensor  # int64 (N,) on the device
    classes: list

    def __len__(self):
        return len(self.labels)


def _open(cls, root, train, download):
    try:
        return cls(root, train=train, download=False)
    except RuntimeError:
        if not download:
            raise
    return cls(root, train=train, download=True)


def load_split(name, root, train, device, subset=None, download=True):
    """One split of a dataset as a Split on `device`. subset: keep at most that many
    samples, a fixed random choice (the same for every seed, so runs stay comparable)."""
    name = canonical_name(name)
    cls, classes, _ = DATASETS[name]
    existed = os.path.isdir(root)
    try:
        ds = _open(cls, root, train, download)
    except Exception as e:  # offline, or files missing or damaged
        if not existed and os.path.isdir(root) and not any(files for _, _, files in os.walk(root)):
            shutil.rmtree(root)  # an empty folder left by the failed download
        folder, files = _EXPECTED_FILES[name]
        raise UserError(
            f"{name} {'train' if train else 'test'} data not found in {root} and could not be "
            f"downloaded ({type(e).__name__}); put {', '.join(files)} in "
            f"{os.path.join(root, folder)} (or pass --data-dir to where they are)") from None
    images = torch.as_tensor(np.asarray(ds.data))
    if images.ndim == 3:  # MNIST-like (N, H, W)
        images = images.unsqueeze(1)
    else:  # CIFAR-10 (N, H, W, C)
        images = images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    if subset is not None and subset < len(labels):
        keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:subset]
        keep = keep.sort().values
        images, labels = images[keep], labels[keep]
    return Split(images.contiguous().to(device), labels.to(device), list(classes))


def augmentation(name):
    return DATASETS[canonical_name(name)][2]


def draw_augmentation(n, spec, generator):
    """Per-sample random parameters for n samples (on the CPU generator): rotation angle in
    radians, horizontal flip sign, integer shifts of a pad-and-crop."""
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(spec.get("rotate", 0.0))
    flip = torch.ones(n)
    if spec.get("flip"):
        flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    pad = spec.get("pad", 0)
    shift = torch.randint(-pad, pad + 1, (n, 2), generator=generator).float()
    return {"angle": angle, "flip": flip, "shift": shift}


def augment(x, params, spec):
    """Apply per-sample rotation, flip and pad-and-crop to a float batch in one
    affine_grid + grid_sample call. Rotation is bilinear; without rotation, sampling is
    nearest at exact pixel centers, so flips and crops copy pixels exactly. Outside the
    image is 0, as with torchvision's fill=0 and zero padding."""
    if not spec:
        return x
    n, _, h, w = x.shape
    cos, sin = params["angle"].cos(), params["angle"].sin()
    flip = params["flip"]
    # Output pixel p samples the input at theta @ [p, 1] (normalized coordinates): rotate,
    # mirror x, then shift by whole pixels (2/w per pixel in normalized units). A shift of
    # s is the crop at offset pad + s of the zero-padded image.
    theta = torch.stack([
        torch.stack([cos * flip, -sin, params["shift"][:, 0] * 2 / w], dim=1),
        torch.stack([sin * flip, cos, params["shift"][:, 1] * 2 / h], dim=1),
    ], dim=1).to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    mode = "bilinear" if spec.get("rotate") else "nearest"
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def to_float(images, memory_format=torch.contiguous_format):
    """uint8 -> float in [0, 1] (no normalisation, as in the reference runs)."""
    return images.to(dtype=torch.float32, memory_format=memory_format).div_(255)


def epoch_plan(n, batch_size, seed, epoch, spec):
    """The order and augmentation draws of one epoch, the same on every rank: a permutation
    of n cut into full batches (the last incomplete one is dropped), and per-position
    augmentation parameters."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    steps = n // batch_size
    perm = torch.randperm(n, generator=g)[:steps * batch_size]
    return perm, draw_augmentation(len(perm), spec, g)


def train_batches(split, batch_size, seed, epoch, spec, rank=0, world_size=1,
                  memory_format=torch.contiguous_format):
    """Yield (images, labels, indices) of one training epoch. batch_size is the global batch;
    under torchrun each rank gets its contiguous share of every global batch."""
    perm, params = epoch_plan(len(split), batch_size, seed, epoch, spec)
    device = split.labels.device
    perm = perm.to(device)
    params = {k: v.to(device) for k, v in params.items()}
    local = batch_size // world_size
    for start in range(0, len(perm), batch_size):
        sl = slice(start + rank * local, start + (rank + 1) * local)
        idx = perm[sl]
        x = to_float(split.images[idx], memory_format)
        x = augment(x, {k: v[sl] for k, v in params.items()}, spec)
        yield x, split.labels[idx], idx


def eval_batches(split, batch_size=1024, rank=0, world_size=1, memory_format=torch.contiguous_format):
    """Yield (images, labels, indices) of this rank's contiguous shard, unaugmented."""
    shard = math.ceil(len(split) / world_size)
    lo, hi = rank * shard, min(len(split), (rank + 1) * shard)
    for start in range(lo, hi, batch_size):
        idx = torch.arange(start, min(hi, start + batch_size), device=split.labels.device)
        yield to_float(split.images[idx], memory_format), split.labels[idx], idx

