"""Small datasets written in torchvision's real on-disk formats: IDX files for MNIST,
Fashion-MNIST, KMNIST and EMNIST, pickled batches for CIFAR-10 and CIFAR-100, MATLAB files
for SVHN, and image files in ImageFolder's layout. Each class is drawn as a bright blob at
its own place (and brightness, past ten classes), so a model can learn them in a few
steps."""
import os
import pickle
import string
import struct

import numpy as np

import datasets


def class_images(labels, side, channels, rng):
    """uint8 (n, side, side, channels): noise plus a 6x6 bright square whose position
    depends on the class (modulo 10) and whose brightness on its tens."""
    n = len(labels)
    images = rng.integers(0, 60, size=(n, side, side, channels), dtype=np.uint8)
    for k in np.unique(labels).tolist():
        r, c = 3 + (k % 10 // 4) * 7, 3 + (k % 10 % 4) * 6
        images[labels == k, r:r + 6, c:c + 6, :] = 230 - 10 * (k // 10)
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


def write_kmnist(root, n_train=512, n_test=256, seed=2):
    """root/KMNIST/raw/..., the IDX files of MNIST's names."""
    return write_mnist(root, "KMNIST", n_train, n_test, seed)


# EMNIST balanced's class names, in label order (torchvision's list)
EMNIST_BALANCED = sorted(set(string.digits + string.ascii_letters) - set("cijklmopsuvwxyz"))


def write_emnist(root, n_train=470, n_test=188, seed=3, images=None, labels=None):
    """root/EMNIST/raw/emnist-balanced-{train,test}-{images-idx3,labels-idx1}-ubyte, each
    image stored transposed (rows are the picture's columns), as in NIST's files. images,
    labels: the upright (n, 28, 28) uint8 pictures and labels of both splits (train gets the
    first n_train), drawn from class_images when None."""
    rng = np.random.default_rng(seed)
    raw = os.path.join(root, "EMNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    if labels is None:
        labels = rng.integers(0, len(EMNIST_BALANCED), size=n_train + n_test).astype(np.uint8)
    if images is None:
        images = class_images(labels, 28, 1, rng)[..., 0]
    parts = (("train", slice(0, n_train)), ("test", slice(n_train, n_train + n_test)))
    for split, sl in parts:
        prefix = os.path.join(raw, f"emnist-balanced-{split}")
        _write_idx(prefix + "-images-idx3-ubyte", np.ascontiguousarray(images[sl].transpose(0, 2, 1)))
        _write_idx(prefix + "-labels-idx1-ubyte", np.asarray(labels[sl], dtype=np.uint8))
    return root


CIFAR100_FINE = datasets.CIFAR100_CLASSES


def write_cifar100(root, n_train=500, n_test=200, seed=4, fine_names=None):
    """root/cifar-100-python/{train, test, meta}: pickled dicts with `data` (n, 3072) uint8
    in CHW order, `fine_labels` and `coarse_labels`; meta holds `fine_label_names` and
    `coarse_label_names`, as in the real archive."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-100-python")
    os.makedirs(folder, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 100, size=n)
        data = class_images(labels, 32, 3, rng).transpose(0, 3, 1, 2).reshape(n, -1)
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({"filenames": [f"{i}.png" for i in range(n)], "batch_label": name,
                         "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist(),
                         "data": data}, f)
    with open(os.path.join(folder, "meta"), "wb") as f:
        pickle.dump({"fine_label_names": list(fine_names or CIFAR100_FINE),
                     "coarse_label_names": [f"superclass_{i}" for i in range(20)]}, f)
    return root


def write_svhn(root, n_train=300, n_test=120, seed=5):
    """root/{train,test}_32x32.mat as scipy.io writes them: X (32, 32, 3, n) uint8 and y
    (n, 1) uint8 with 10 for the digit 0, as in the real files."""
    import scipy.io
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        digits = rng.integers(0, 10, size=n)
        x = class_images(digits, 32, 3, rng).transpose(1, 2, 3, 0)
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)
        scipy.io.savemat(os.path.join(root, f"{name}_32x32.mat"), {"X": x, "y": y})
    return root


def write_image_folder(root, n_per_class=4, sizes=(28,), modes=("L",), formats=("png",),
                       classes=("a", "b", "c"), seed=6):
    """root/{train,test}/<class>/<i>.<ext> in ImageFolder's layout. n_per_class: an int, or
    (train, test). Image i takes sizes[i % len], modes[i % len] ("L", "RGB", "RGBA", "P",
    ...) and formats[i % len] ("png" or "jpg"; JPEG cannot store alpha or a palette, so
    those images are PNG). A size is an int (square) or (width, height)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    counts = (n_per_class, n_per_class) if isinstance(n_per_class, int) else n_per_class
    i = 0
    for split, count in zip(("train", "test"), counts):
        for k, name in enumerate(classes):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for _ in range(count):
                size = sizes[i % len(sizes)]
                w, h = (size, size) if isinstance(size, int) else size
                mode, fmt = modes[i % len(modes)], formats[i % len(formats)]
                picture = Image.fromarray(class_images(np.array([k]), 28, 3, rng)[0], "RGB")
                picture = picture.resize((w, h), Image.NEAREST)
                picture = picture.convert(mode) if mode != "P" else picture.quantize(16)
                ext = "jpg" if fmt in ("jpg", "jpeg") and mode in ("L", "RGB") else "png"
                picture.save(os.path.join(folder, f"{i:06d}.{ext}"))
                i += 1
    return root


def write_all(root):
    write_mnist(root, "MNIST")
    write_mnist(root, "FashionMNIST", seed=1)
    write_cifar10(root)
    write_kmnist(root)
    write_emnist(root)
    write_cifar100(root)
    write_svhn(root)
    return root
