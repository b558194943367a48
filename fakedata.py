"""Small datasets written in torchvision's real on-disk formats: IDX files for MNIST and
Fashion-MNIST, pickled batches for CIFAR-10. Each class is drawn as a bright blob at its own
place, so a model can learn them in a few steps."""
import os
import pickle
import struct

import numpy as np


def class_images(labels, side, channels, rng):
    """uint8 (n, side, side, channels): noise plus a 6x6 bright square whose position
    depends on the class."""
    n = len(labels)
    images = rng.integers(0, 60, size=(n, side, side, channels), dtype=np.uint8)
    for k in range(10):
        r, c = 3 + (k // 4) * 7, 3 + (k % 4) * 6
        images[labels == k, r:r + 6, c:c + 6, :] = 230
    return images


def _write_idx(path, array):
    magic = {1: 0x801, 3: 0x803}[array.ndim]
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        f.write(struct.pack(">" + "I" * array.ndim, *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def write_mnist(root, folder="MNIST", n_train=512, n_test=256, seed=0):
    """root/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte, as torchvision reads
    them (folder "FashionMNIST" for Fashion-MNIST)."""
    rng = np.random.default_rng(seed)
    raw = os.path.join(root, folder, "raw")
    os.makedirs(raw, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        _write_idx(os.path.join(raw, f"{prefix}-images-idx3-ubyte"), class_images(labels, 28, 1, rng)[..., 0])
        _write_idx(os.path.join(raw, f"{prefix}-labels-idx1-ubyte"), labels)
    return root


def write_cifar10(root, n_train=500, n_test=200, seed=0):
    """root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}: pickled dicts
    with `data` (n, 3072) uint8 in CHW order and `labels`, as in the real archive."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)

    def batch(n, name):
        labels = rng.integers(0, 10, size=n)
        data = class_images(labels, 32, 3, rng).transpose(0, 3, 1, 2).reshape(n, -1)
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels.tolist(), "data": data,
                         "filenames": [f"{i}.png" for i in range(n)]}, f)

    for i in range(1, 6):
        batch(n_train // 5, f"data_batch_{i}")
    batch(n_test, "test_batch")
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": n_train // 5, "num_vis": 3072}, f)
    return root


def write_all(root):
    write_mnist(root, "MNIST")
    write_mnist(root, "FashionMNIST", seed=1)
    write_cifar10(root)
    return root
