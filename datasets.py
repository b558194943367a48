"""torchvision datasets (and the user's own images in ImageFolder layout) as whole uint8
tensors on the training device; the fixed validation and open-set splits; batched
per-sample augmentation on the device, and the batch iterators of training and evaluation.

An epoch's order and every augmentation draw come from a generator seeded by (seed, epoch):
the same on every rank and after a resume, so neither changes what a run computes.
"""
import argparse
import hashlib
import math
import os
import pickle
import re
import shutil
import uuid
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torchvision.datasets.mnist import read_image_file, read_label_file
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from utils import UserError, available_memory

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
KMNIST_CLASSES = list(torchvision.datasets.KMNIST.classes)
# The meta file's fine_label_names, in label order; a split takes its names from the file
# itself, this copy names the classes where no data is loaded (plots of a finished run).
CIFAR100_CLASSES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm"]
SVHN_CLASSES = [str(i) for i in range(10)]  # torchvision maps SVHN's label 10 to digit 0
EMNIST_BALANCED_CLASSES = list(torchvision.datasets.EMNIST.classes_split_dict["balanced"])


class CIFAR10(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR-10, checking that the extracted files of the split exist rather
    than their MD5 sums: the sums guard the download (torchvision still checks the
    archive's), and a file that is not a valid pickled batch fails while loading anyway.
    This also lets the tests run on small generated files in the real on-disk format."""

    def _check_integrity(self):
        names = [f for f, _ in (self.train_list if self.train else self.test_list)]
        names.append(self.meta["filename"])
        return all(os.path.isfile(os.path.join(self.root, self.base_folder, f)) for f in names)

    def _load_meta(self):
        with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
            self.classes = list(pickle.load(f, encoding="latin1")[self.meta["key"]])
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class CIFAR100(CIFAR10):
    """CIFAR-100 (the 100 fine labels), checked and read as CIFAR10 above."""
    base_folder = torchvision.datasets.CIFAR100.base_folder
    url = torchvision.datasets.CIFAR100.url
    filename = torchvision.datasets.CIFAR100.filename
    tgz_md5 = torchvision.datasets.CIFAR100.tgz_md5
    train_list = torchvision.datasets.CIFAR100.train_list
    test_list = torchvision.datasets.CIFAR100.test_list
    meta = torchvision.datasets.CIFAR100.meta


class SVHN(torchvision.datasets.SVHN):
    """torchvision's SVHN (files in the data folder itself, as torchvision puts them) with
    the train flag of the others, checking that the .mat file exists rather than its MD5 sum
    (the download still checks it)."""

    def __init__(self, root, train=True, download=False):
        super().__init__(root, split="train" if train else "test", download=download)

    def _check_integrity(self):
        return os.path.isfile(os.path.join(self.root, self.filename))


class EMNISTBalanced(torchvision.datasets.EMNIST):
    """EMNIST's balanced split (47 classes: digits, letters, case merged where it looks the
    same), with the train flag of the others."""

    def __init__(self, root, train=True, download=False):
        super().__init__(root, split="balanced", train=train, download=download)

    # torchvision names these folders after the class: EMNIST's, not this subclass's
    @property
    def raw_folder(self):
        return os.path.join(self.root, "EMNIST", "raw")

    @property
    def processed_folder(self):
        return os.path.join(self.root, "EMNIST", "processed")


# name -> (loader class, class names, augmentation). Flips only where the mirror image is of
# the same class: never for digits and characters.
DATASETS = {
    "mnist": (torchvision.datasets.MNIST, MNIST_CLASSES, dict(rotate=5.0)),
    "fashion-mnist": (torchvision.datasets.FashionMNIST, FASHION_CLASSES, dict(rotate=5.0, flip=True)),
    "cifar10": (CIFAR10, CIFAR10_CLASSES, dict(flip=True, pad=4)),
    "kmnist": (torchvision.datasets.KMNIST, KMNIST_CLASSES, dict(rotate=5.0)),
    "cifar100": (CIFAR100, CIFAR100_CLASSES, dict(flip=True, pad=4)),
    # house numbers are cropped loosely around the digit, so a shift keeps the class
    "svhn": (SVHN, SVHN_CLASSES, dict(rotate=5.0, pad=2)),
    "emnist-balanced": (EMNISTBalanced, EMNIST_BALANCED_CLASSES, dict(rotate=5.0)),
}
ALIASES = {"cifar-10": "cifar10", "fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
           "fmnist": "fashion-mnist", "cifar-100": "cifar100", "k-mnist": "kmnist",
           "emnist": "emnist-balanced", "emnist_balanced": "emnist-balanced"}
FOLDER_PREFIX = "folder:"

_IDX = {True: ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"],
        False: ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]}
# name -> (folder under the data directory, {train: files of that split}): what each loader
# reads, to tell damaged files from missing ones.
_SPLIT_FILES = {
    "mnist": ("MNIST/raw", _IDX),
    "fashion-mnist": ("FashionMNIST/raw", _IDX),
    "kmnist": ("KMNIST/raw", _IDX),
    "emnist-balanced": ("EMNIST/raw", {
        t: [f"emnist-balanced-{s}-images-idx3-ubyte", f"emnist-balanced-{s}-labels-idx1-ubyte"]
        for t, s in ((True, "train"), (False, "test"))}),
    "cifar10": ("cifar-10-batches-py", {True: [f"data_batch_{i}" for i in range(1, 6)] + ["batches.meta"],
                                        False: ["test_batch", "batches.meta"]}),
    "cifar100": ("cifar-100-python", {True: ["train", "meta"], False: ["test", "meta"]}),
    "svhn": ("", {True: ["train_32x32.mat"], False: ["test_32x32.mat"]}),
}

# Files each loader reads, to tell an offline user what to put where.
_EXPECTED_FILES = {
    "mnist": ("MNIST/raw", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                            "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    "fashion-mnist": ("FashionMNIST/raw", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    "kmnist": ("KMNIST/raw", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    "emnist-balanced": ("EMNIST/raw", ["emnist-balanced-train-images-idx3-ubyte",
                                       "emnist-balanced-train-labels-idx1-ubyte",
                                       "emnist-balanced-test-images-idx3-ubyte",
                                       "emnist-balanced-test-labels-idx1-ubyte"]),
    "cifar10": ("cifar-10-batches-py", ["data_batch_1", "...", "data_batch_5", "test_batch",
                                        "batches.meta"]),
    "cifar100": ("cifar-100-python", ["train", "test", "meta"]),
    "svhn": ("", ["train_32x32.mat", "test_32x32.mat"]),
}


def canonical_name(name):
    """The registry's name of a dataset; folder:PATH keeps its path as typed."""
    if name[:len(FOLDER_PREFIX)].lower() == FOLDER_PREFIX:
        return FOLDER_PREFIX + name[len(FOLDER_PREFIX):]
    name = name.lower()
    return ALIASES.get(name, name)


def is_folder(name):
    return canonical_name(name).startswith(FOLDER_PREFIX)


def folder_path(name):
    """PATH of folder:PATH, with ~ expanded."""
    return os.path.expanduser(canonical_name(name)[len(FOLDER_PREFIX):])


def short_name(name):
    """A name fit for a run directory: folder:PATH becomes folder-<last part of PATH>."""
    name = canonical_name(name)
    if not name.startswith(FOLDER_PREFIX):
        return name
    base = os.path.basename(os.path.normpath(folder_path(name))) or "root"
    return "folder-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in base)


def dataset_arg(value):
    """argparse type of --dataset: a registered name (or alias), or folder:PATH."""
    name = canonical_name(value)
    if name.startswith(FOLDER_PREFIX):
        if not name[len(FOLDER_PREFIX):]:
            raise argparse.ArgumentTypeError("folder: needs a path, e.g. folder:./my-images")
        return name
    if name not in DATASETS:
        raise argparse.ArgumentTypeError(
            f"unknown dataset {value!r} (choose from {', '.join(DATASETS)}, or folder:PATH)")
    return name


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W) on the device
    labels: torch.Tensor  # int64 (N,) on the device
    classes: list
    # The original dataset's class index of each label, where labels were remapped
    # (split_classes); None where labels are the dataset's own.
    class_index: Optional[list] = None

    def __len__(self):
        return len(self.labels)


# ---------------------------------------------------------------- memory

def _mb(n):
    return f"{n / 2**20:,.1f} MB" if n < 2**30 else f"{n / 2**30:,.2f} GB"


def check_fits(shape_or_nbytes, device, available=None, what="the split", resizable=True):
    """Stop with one line if a split of this shape (N, C, H, W) or byte count would take more
    than half the memory free on `device` (the other half is headroom for the model, its
    activations and the float copy of each batch). available: bytes free, found out when
    None. With a shape, the line proposes the largest --image-size that fits (resizable) or
    a --subset that does."""
    if isinstance(shape_or_nbytes, int):
        shape, nbytes = None, shape_or_nbytes
    else:
        shape = tuple(int(s) for s in shape_or_nbytes)
        nbytes = math.prod(shape)
    if available is None:
        available = available_memory(device)
        if available is None:
            return
    limit = available // 2
    if nbytes <= limit:
        return
    hint = "a smaller --subset"
    if shape is not None and len(shape) == 4 and shape[0] and shape[1]:
        n, c = shape[0], shape[1]
        side = math.isqrt(limit // (n * c))
        if resizable and side >= 8:
            hint = f"--image-size {side}"
        elif limit >= c * shape[2] * shape[3]:
            hint = f"--subset {limit // (c * shape[2] * shape[3])}"
    size = f"{shape[0]} images of {'x'.join(map(str, shape[1:]))}, " if shape and len(shape) == 4 else ""
    raise UserError(f"{what} ({size}{_mb(nbytes)} as uint8) does not fit on {torch.device(device)}: "
                    f"at most {_mb(limit)} fit (half of the {_mb(available)} free); try {hint}")


# ---------------------------------------------------------------- damaged files

class _Damaged(Exception):
    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def _reason(e):
    text = str(e).strip().splitlines()
    text = text[0] if text else ""
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _idx_count(path, ndim):
    """The number of items an IDX file of uint8 with `ndim` dimensions holds, after checking
    its header against its size (torchvision reads a truncated file without noticing, or
    fails with an unrelated message)."""
    size = os.path.getsize(path)
    header = 4 + 4 * ndim
    with open(path, "rb") as f:
        head = f.read(header)
    if len(head) < header:
        raise _Damaged(path, f"{size} bytes, shorter than an IDX header")
    if head[:2] != b"\0\0" or head[2] != 0x08 or head[3] != ndim:
        raise _Damaged(path, f"not an IDX file of uint8 with {ndim} dimension{'s' * (ndim > 1)} "
                             f"(it starts with {head[:4].hex()})")
    dims = [int.from_bytes(head[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    expected = header + math.prod(dims)
    if size < expected:
        raise _Damaged(path, f"truncated: {size} bytes where its header promises {expected}")
    if size > expected:
        raise _Damaged(path, f"{size} bytes where its header promises {expected}")
    return dims[0]


def _check_idx_pair(images, labels):
    n = _idx_count(images, 3)
    m = _idx_count(labels, 1)
    if n != m:
        raise _Damaged(labels, f"{m} labels for the {n} images of {os.path.basename(images)}")


def _diagnose(name, paths):
    """The first of a split's files that does not read in its format, as _Damaged, or None."""
    for path in paths:
        base = os.path.basename(path)
        try:
            if base.endswith(".mat"):
                import scipy.io
                mat = scipy.io.loadmat(path)
                x, y = mat["X"], mat["y"]
                if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != y.size:
                    raise ValueError(f"X of shape {x.shape} with {y.size} labels")
            elif "idx" not in base:
                with open(path, "rb") as f:
                    entry = pickle.load(f, encoding="latin1")
                if base in ("batches.meta", "meta"):
                    key = DATASETS[name][0].meta["key"]
                    if key not in entry:
                        raise KeyError(key)
                    continue
                data = np.asarray(entry["data"])
                labels = entry["labels"] if "labels" in entry else entry["fine_labels"]
                if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
                    raise ValueError(f"data of shape {data.shape} with {len(labels)} labels")
        except Exception as e:
            return _Damaged(path, _reason(e))
    return None


# ---------------------------------------------------------------- torchvision datasets

def split_files(name, root, train):
    """Paths of the files one split of a registered dataset reads."""
    folder, files = _SPLIT_FILES[canonical_name(name)]
    return [os.path.join(root, folder, f) for f in files[train]]


def _to_nchw(name, data):
    images = torch.as_tensor(np.asarray(data))
    if images.ndim == 3:  # MNIST-like (N, H, W)
        if name == "emnist-balanced":
            # EMNIST's files hold each image transposed; torchvision returns them so
            images = images.transpose(1, 2)
        return images.unsqueeze(1)
    if name == "svhn":  # torchvision already gives (N, C, H, W)
        return images
    return images.permute(0, 3, 1, 2)  # CIFAR (N, H, W, C)


def _load_registered(name, root, train, download):
    """(images uint8 NCHW, labels int64, class names) of a torchvision dataset on the CPU.
    Files that are there are read, never downloaded again; a file that does not read is
    reported as damaged, by name."""
    cls, classes, _ = DATASETS[name]
    which = "train" if train else "test"
    paths = split_files(name, root, train)
    try:
        if all(os.path.isfile(p) for p in paths):
            if "idx" in os.path.basename(paths[0]):
                _check_idx_pair(*paths)
            try:
                if "idx" in os.path.basename(paths[0]):
                    # read this split's files only: torchvision's MNIST classes insist on both
                    # splits' files, and a tuning run must work with no test files at all
                    images = _to_nchw(name, read_image_file(paths[0]))
                    labels = read_label_file(paths[1]).to(torch.int64)
                else:
                    ds = cls(root, train=train, download=False)
                    images = _to_nchw(name, ds.data)
                    targets = ds.targets if hasattr(ds, "targets") else ds.labels  # SVHN: labels
                    labels = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
            except Exception as e:
                raise _diagnose(name, paths) or _Damaged(", ".join(paths), _reason(e)) from None
            if name == "cifar100":
                classes = list(ds.classes)
            if len(labels) != len(images):
                raise _diagnose(name, paths) or _Damaged(
                    ", ".join(paths), f"{len(labels)} labels for {len(images)} images")
            if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
                bad = int(labels.max() if labels.max() >= len(classes) else labels.min())
                label_file = next((p for p in paths if "labels" in os.path.basename(p)), None)
                raise _Damaged(label_file or ", ".join(paths),
                               f"label {bad} outside the {len(classes)} classes")
            return images, labels, list(classes)
    except _Damaged as d:
        raise UserError(f"{name} {which}: {d.path} is damaged or truncated ({d.reason}); "
                        f"replace it") from None
    folder, files = _EXPECTED_FILES[name]
    advice = (f"put {', '.join(files)} in {os.path.join(root, folder)} (or pass --data-dir to "
              f"where they are)")
    if not download:
        raise UserError(f"{name} {which} data not found in {root} (--no-download); {advice}")
    existed = os.path.isdir(root)
    try:
        cls(root, train=train, download=True)
    except Exception as e:  # offline, or the download failed
        if not existed and os.path.isdir(root) and not any(files for _, _, files in os.walk(root)):
            shutil.rmtree(root)  # an empty folder left by the failed download
        raise UserError(f"{name} {which} data not found in {root} and could not be downloaded "
                        f"({type(e).__name__}); {advice}") from None
    if not all(os.path.isfile(p) for p in paths):
        raise UserError(f"{name} {which}: the download did not leave {', '.join(paths)}; {advice}")
    return _load_registered(name, root, train, download=False)  # read through the checks above


def _subset_indices(n, subset):
    """A fixed random choice of `subset` of n indices, sorted (the same for every seed, so
    runs stay comparable), or None for all."""
    if subset is None or subset >= n:
        return None
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:subset]
    return keep.sort().values


def load_split(name, root, train, device, subset=None, download=True, *, image_size=None,
               channels=None, cache=True, available=None):
    """One split of a dataset as a Split on `device`. subset: keep at most that many
    samples, a fixed random choice (the same for every seed, so runs stay comparable).

    name is a registered dataset (files under `root`, downloaded when missing and
    `download`) or folder:PATH (the user's images, see load_folder: image_size, channels and
    cache apply to it). available: bytes free on the device, found out when None; a split
    that takes more than half stops with one line."""
    name = canonical_name(name)
    if name.startswith(FOLDER_PREFIX):
        return load_folder(folder_path(name), train, device, subset=subset, image_size=image_size,
                           channels=channels, cache=cache, cache_root=root, available=available)
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r} (choose from {', '.join(DATASETS)}, or folder:PATH)")
    images, labels, classes = _load_registered(name, root, train, download)
    keep = _subset_indices(len(labels), subset)
    if keep is not None:
        images, labels = images[keep], labels[keep]
    if torch.device(device).type != "cpu" or available is not None:
        check_fits(tuple(images.shape), device, available,
                   what=f"{name} {'train' if train else 'test'}", resizable=False)
    return Split(images.contiguous().to(device), labels.to(device), classes)


def augmentation(name, image_size=None):
    """The augmentation spec of a dataset. The user's own images get a small shift only (an
    eighth of the side): a flip or a rotation may change what their class means."""
    name = canonical_name(name)
    if name.startswith(FOLDER_PREFIX):
        return dict(pad=max(1, round((image_size or 32) / 8)))
    return DATASETS[name][2]


# ---------------------------------------------------------------- the user's own images

_CACHE_VERSION = 1


def _list_folder(path, train):
    """(files [(path, label)], class names) of PATH/train or PATH/test in ImageFolder's
    layout. The classes are train/'s folders, for both splits, so that a label means the
    same class in each; test/ may lack a class but may not add one."""
    classes_dir = os.path.join(path, "train")
    split_dir = os.path.join(path, "train" if train else "test")
    for d in (classes_dir, os.path.join(path, "test")):  # both, before any decoding
        if not os.path.isdir(d):
            raise UserError(f"folder dataset: {d} is not a folder; put the images in "
                            f"{os.path.join(path, 'train')}/<class>/ and "
                            f"{os.path.join(path, 'test')}/<class>/")
    try:
        classes, class_to_idx = find_classes(classes_dir)
    except FileNotFoundError:
        raise UserError(f"folder dataset: {classes_dir} has no class folders; put each class's "
                        f"images in {classes_dir}/<class>/") from None
    except OSError as e:
        raise UserError(f"folder dataset: cannot read {classes_dir} ({_reason(e)})") from None
    if not train:
        extra = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and e.name not in class_to_idx)
        if extra:
            raise UserError(f"folder dataset: {os.path.join(split_dir, extra[0])} is not a class "
                            f"of {classes_dir} (the test classes must be training classes)")
    files = make_dataset(split_dir, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    if train:
        empty = sorted(set(classes) - {classes[label] for _, label in files})
        if empty:
            raise UserError(f"folder dataset: {os.path.join(split_dir, empty[0])} has no images "
                            f"({', '.join(IMG_EXTENSIONS)})")
    if not files:
        raise UserError(f"folder dataset: {split_dir} has no images ({', '.join(IMG_EXTENSIONS)})")
    return files, classes


def _open_image(path, mode):
    """The image at path, converted to mode "L" or "RGB" (palette images with transparency
    through RGBA, as PIL asks)."""
    try:
        with Image.open(path) as im:
            if im.mode == "P" and "transparency" in im.info:
                im = im.convert("RGBA")
            return im.convert(mode)
    except Exception as e:  # not an image, truncated, unsupported
        raise UserError(f"folder dataset: {path} is not a readable image ({_reason(e)}); "
                        f"replace or remove it") from None


def _reference_size(path, image_size, train_files=None):
    """(height, width) every image of the dataset is given: image_size x image_size, or
    without it the size of the first training image (the others must match it), the same
    for both splits."""
    if image_size is not None:
        return int(image_size), int(image_size)
    first = (train_files or _list_folder(path, True)[0])[0][0]
    try:
        with Image.open(first) as im:
            return im.size[1], im.size[0]
    except Exception as e:
        raise UserError(f"folder dataset: {first} is not a readable image ({_reason(e)}); "
                        f"replace or remove it") from None


def _decode_folder(files, size, channels, resize):
    """uint8 (N, C, H, W) of the files, each converted to channels and resized to size
    (height, width) where resize, else required to be that size."""
    h, w = size
    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(files), h, w, channels), dtype=np.uint8)
    for i, (path, _) in enumerate(files):
        im = _open_image(path, mode)
        if im.size != (w, h):
            if not resize:
                raise UserError(
                    f"folder dataset: {path} is {im.size[0]}x{im.size[1]}, the first training "
                    f"image {w}x{h}; pass --image-size to resize them all to one size")
            im = im.resize((w, h), Image.BILINEAR)
        out[i] = np.asarray(im).reshape(h, w, channels)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _cache_key(path, files, classes, size, channels, resize):
    """A hash of what the decoded tensor depends on: each file's path relative to the
    dataset, size and modification time, the classes, the target size and channels."""
    h = hashlib.sha1(f"v{_CACHE_VERSION} {size} {channels} {resize}\n".encode())
    h.update(("\0".join(classes) + "\n").encode())
    start = len(os.path.join(path, ""))  # the files are listed under path: cut, not relpath
    for file, label in files:
        st = os.stat(file)
        h.update(f"{file[start:]}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _cache_dirs(path, cache_root):
    """Where a folder dataset's decoded tensors are kept: beside the images, else (a folder
    that cannot be written) under the data directory."""
    dirs = [os.path.join(path, ".cache")]
    if cache_root:
        tag = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:12]
        dirs.append(os.path.join(cache_root, "folder-cache", tag))
    return dirs


def _read_cache(dirs, filename, key, shape):
    for d in dirs:
        file = os.path.join(d, filename)
        if not os.path.isfile(file):
            continue
        try:
            data = torch.load(file, map_location="cpu", weights_only=True)
            images, labels = data["images"], data["labels"]
            if (data.get("key") == key and tuple(images.shape) == shape
                    and images.dtype == torch.uint8 and labels.shape == (shape[0],)):
                return images, labels
        except Exception:  # damaged or from another version: decode again
            pass
    return None


def _write_cache(dirs, filename, prefix, data):
    """Save atomically (a temp file renamed over the target) in the first folder that takes
    it, removing the stale tensors of the same split and settings; no cache if none does."""
    for d in dirs:
        tmp = None
        try:
            os.makedirs(d, exist_ok=True)
            # os.open with 0o666 (not mkstemp's 0600): the umask decides who may read it
            tmp = os.path.join(d, f".tmp-{os.getpid()}-{uuid.uuid4().hex}.pt")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(fd, "wb") as f:
                torch.save(data, f)
            os.replace(tmp, os.path.join(d, filename))
            for old in os.listdir(d):
                stale = re.fullmatch(r"[0-9a-f]{16}\.pt", old[len(prefix):])
                if old.startswith(prefix) and stale and old != filename:
                    try:
                        os.remove(os.path.join(d, old))
                    except OSError:
                        pass
            return os.path.join(d, filename)
        except (OSError, RuntimeError):  # not writable, full
            if tmp is not None and os.path.exists(tmp):
                try:
                    os.remove(tmp)
                except OSError:
                    pass
    return None


def load_folder(path, train, device, subset=None, image_size=None, channels=None, cache=True,
                cache_root=None, available=None):
    """One split of the user's images in ImageFolder's layout, PATH/train/<class>/*.png|jpg
    and PATH/test/<class>/*, as a Split on `device`.

    image_size: resize every image to S x S; None keeps the size of the first training image
    and requires every image to have it (mixed sizes: one line asking for --image-size).
    channels: 1 (grey, mode "L") or 3 (mode "RGB", the default; alpha is dropped). Class
    names are train/'s folder names, sorted (ImageFolder's find_classes).

    The decoded tensors are cached in PATH/.cache (else under cache_root/folder-cache),
    keyed by the files' relative paths, sizes and modification times: a second run loads
    at once, a changed file decodes again. The memory check comes before any decoding."""
    channels = 3 if channels is None else int(channels)
    if channels not in (1, 3):
        raise UserError(f"--channels {channels}: a folder dataset has 1 (grey) or 3 (RGB) channels")
    if image_size is not None and int(image_size) < 1:
        raise UserError(f"--image-size {image_size}: must be at least 1")
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(path):
        raise UserError(f"folder dataset: {path} is not a folder")
    which = "train" if train else "test"
    files, classes = _list_folder(path, train)
    keep = _subset_indices(len(files), subset)
    if keep is not None:
        files = [files[i] for i in keep.tolist()]
    size = _reference_size(path, image_size, files if train and keep is None else None)
    shape = (len(files), channels) + size
    what = os.path.join(path, which)
    check_fits(shape, "cpu", available, what=what)
    if torch.device(device).type != "cpu":
        check_fits(shape, device, available, what=what)
    resize = image_size is not None
    prefix = f"{which}-{size[0]}x{size[1]}-{channels}-{'resized' if resize else 'native'}" + (
        f"-subset{subset}" if keep is not None else "") + "-"
    found = None
    if cache:
        key = _cache_key(path, files, classes, size, channels, resize)
        dirs = _cache_dirs(path, cache_root)
        found = _read_cache(dirs, prefix + key + ".pt", key, shape)
    if found is not None:
        images, labels = found
    else:
        images = _decode_folder(files, size, channels, resize)
        labels = torch.tensor([label for _, label in files], dtype=torch.int64)
        if cache:
            _write_cache(dirs, prefix + key + ".pt", prefix,
                         {"key": key, "images": images, "labels": labels, "classes": classes})
    return Split(images.to(device), labels.to(device), list(classes))


# ---------------------------------------------------------------- splits

VALIDATION_SEED = 20240601  # the validation choice's own seed: never the run's


def _take(split, idx, labels=None, classes=None, class_index=None):
    idx = idx.to(split.labels.device)
    return Split(split.images[idx], split.labels[idx] if labels is None else labels,
                 list(split.classes if classes is None else classes),
                 split.class_index if class_index is None else class_index)


def validation_indices(labels, n, num_classes=None):
    """Sorted indices of n of these labels held out for validation: a fixed random choice
    (its own generator, independent of the run's seed), stratified: each class gives its
    share n * count / total rounded by largest remainder, so the total is exactly n."""
    labels = torch.as_tensor(labels).cpu()
    total = len(labels)
    counts = torch.bincount(labels, minlength=num_classes or 0).tolist()
    quota = [n * c // total for c in counts]
    remainder = sorted(range(len(counts)), key=lambda k: (-(n * counts[k] % total), k))
    for k in remainder[:n - sum(quota)]:
        quota[k] += 1
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(VALIDATION_SEED))
    chosen = []
    for k, q in enumerate(quota):
        if q:
            members = perm[labels[perm] == k]
            chosen.append(members[:q])
    return torch.cat(chosen).sort().values if chosen else torch.zeros(0, dtype=torch.int64)


def center_crop(split, size, name):
    """The split with every image cut to its center size x size (size None: as it is); where
    an odd margin cannot be halved, the extra row or column goes from the bottom or right."""
    if size is None:
        return split
    height, width = split.images.shape[-2:]
    if size > min(height, width):
        raise UserError(f"--center-crop {size} is larger than {short_name(name)}'s "
                        f"{height}x{width} images")
    top, left = (height - size) // 2, (width - size) // 2
    return replace(split, images=split.images[..., top:top + size, left:left + size].contiguous())


def split_validation(split, n):
    """(train_part, val_part): n images of the training split held out for validation, see
    validation_indices: the same images for every seed and objective, each part in the
    original order. n = 0 gives (split, None)."""
    n = int(n)
    if n == 0:
        return split, None
    present = int(torch.unique(split.labels).numel())
    if n < 0 or n >= len(split) or n < present:
        raise UserError(f"--val-size {n}: must be 0 or from {present} (one per class) to "
                        f"{len(split) - 1} (below the {len(split)} training images)")
    val = validation_indices(split.labels, n, len(split.classes))
    keep = torch.ones(len(split), dtype=torch.bool)
    keep[val] = False
    train = keep.nonzero().squeeze(1)
    return _take(split, train), _take(split, val)


def held_out_classes(spec, num_classes):
    """Class indices held out of training for the open-set evaluation, sorted: "half" (the
    upper half of the indices: the smaller half where the count is odd) or a list such as
    "5,6,7,8,9" (ranges "5-9" too)."""
    text = str(spec).strip().lower()
    if text == "half":
        held = list(range((num_classes + 1) // 2, num_classes))
    else:
        held = set()
        for part in text.split(","):
            part = part.strip()
            single, span = re.fullmatch(r"-?\d+", part), re.fullmatch(r"(\d+)-(\d+)", part)
            if single:
                held.add(int(part))
            elif span and int(span[1]) <= int(span[2]):
                held.update(range(int(span[1]), int(span[2]) + 1))
            elif part or len(text.split(",")) > 1:
                raise UserError(f"held-out classes {spec!r}: {part!r} is not a class index; "
                                f"give indices like 5,6,7 or 5-9, or half")
        held = sorted(held)
        bad = [k for k in held if not 0 <= k < num_classes]
        if bad:
            raise UserError(f"held-out classes {spec!r}: {bad[0]} is not one of the "
                            f"{num_classes} classes (0 to {num_classes - 1})")
    if not held:
        raise UserError(f"held-out classes {spec!r}: none given")
    if len(held) >= num_classes:
        raise UserError(f"held-out classes {spec!r}: holds out all {num_classes} classes, "
                        f"none left to train on")
    return held


def split_classes(split, held_out):
    """(seen, unseen) for the open-set evaluation: `seen` the images of the classes not held
    out, labels remapped to 0..k-1 in class order, `unseen` those of the held-out classes,
    labels 0..h-1. Each keeps its class names and, in class_index, the dataset's index of
    each new label (composed with the split's own where it has one)."""
    num_classes = len(split.classes)
    held = sorted(set(int(k) for k in held_out))
    if any(not 0 <= k < num_classes for k in held):
        raise UserError(f"held-out classes {held}: not all among the {num_classes} classes")
    seen_ids = [k for k in range(num_classes) if k not in set(held)]
    original = split.class_index or list(range(num_classes))
    parts = []
    for ids in (seen_ids, held):
        remap = torch.full((num_classes,), -1, dtype=torch.int64)
        remap[ids] = torch.arange(len(ids))
        labels = split.labels.cpu()
        idx = torch.isin(labels, torch.tensor(ids, dtype=torch.int64)).nonzero().squeeze(1)
        parts.append(_take(split, idx, labels=remap[labels[idx]].to(split.labels.device),
                           classes=[split.classes[k] for k in ids],
                           class_index=[original[k] for k in ids]))
    return parts[0], parts[1]


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

