"""The datasets beyond MNIST / Fashion-MNIST / CIFAR-10, the user's own image folders and
their cache, the memory check, damaged files, and the validation and open-set splits: all on
small files written in each format's real on-disk layout (fakedata.py), never downloaded."""
import os
import pickle

import numpy as np
import pytest
import scipy.io
import torch
import torchvision
from PIL import Image

import datasets
import fakedata
from utils import UserError


def one_line_error(match, fn, *args, **kwargs):
    with pytest.raises(UserError, match=match) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.fixture
def no_download(monkeypatch):
    """Fail the test if any torchvision download starts."""
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")
    for module in (torchvision.datasets.mnist, torchvision.datasets.cifar, torchvision.datasets.svhn):
        for fn in ("download_and_extract_archive", "download_url"):
            if hasattr(module, fn):
                monkeypatch.setattr(module, fn, refuse)


# ---------------------------------------------------------------- torchvision datasets

@pytest.mark.parametrize("name,shape,classes", [
    ("kmnist", (1, 28, 28), ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]),
    ("cifar100", (3, 32, 32), fakedata.CIFAR100_FINE),
    ("svhn", (3, 32, 32), [str(i) for i in range(10)]),
    ("emnist-balanced", (1, 28, 28), fakedata.EMNIST_BALANCED),
])
def test_new_datasets_load(data_dir, name, shape, classes, no_download):
    for train in (True, False):
        split = datasets.load_split(name, data_dir, train, "cpu", download=False)
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == shape
        assert split.labels.dtype == torch.int64 and len(split.labels) == len(split.images)
        assert split.classes == classes
        assert 0 <= split.labels.min() and split.labels.max() < len(classes)
        assert len(torch.unique(split.labels)) > 1
    assert len(datasets.DATASETS[name][1]) == len(classes)
    assert datasets.load_split(name, data_dir, True, "cpu", 100, False).images.shape[0] == 100


def test_svhn_images_and_labels_as_written(data_dir):
    mat = scipy.io.loadmat(os.path.join(data_dir, "test_32x32.mat"))
    split = datasets.load_split("svhn", data_dir, False, "cpu", download=False)
    digits = mat["y"][:, 0].astype(np.int64) % 10  # SVHN writes the digit 0 as 10
    assert (mat["y"] == 10).any() and split.labels.tolist() == digits.tolist()
    assert torch.equal(split.images, torch.from_numpy(mat["X"].transpose(3, 2, 0, 1)))


def test_cifar100_takes_names_and_fine_labels_from_its_files(tmp_path):
    names = [f"class-{i}" for i in range(100)]
    fakedata.write_cifar100(str(tmp_path), n_train=50, n_test=20, fine_names=names)
    split = datasets.load_split("cifar-100", str(tmp_path), True, "cpu", download=False)
    with open(tmp_path / "cifar-100-python" / "train", "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    assert split.classes == names and split.labels.tolist() == entry["fine_labels"]
    first = torch.from_numpy(entry["data"][0].reshape(3, 32, 32))
    assert torch.equal(split.images[0], first)


def test_emnist_comes_back_upright(tmp_path):
    # an "L": a bar down the left column and along the bottom row, nothing on the right
    letter = np.zeros((28, 28), dtype=np.uint8)
    letter[4:24, 6] = 255
    letter[23, 6:20] = 255
    images = np.stack([letter, np.fliplr(letter)] * 2)
    fakedata.write_emnist(str(tmp_path), n_train=2, n_test=2, images=images,
                          labels=np.array([21, 1, 21, 1]))
    raw = tmp_path / "EMNIST" / "raw" / "emnist-balanced-train-images-idx3-ubyte"
    stored = np.frombuffer(raw.read_bytes()[16:], dtype=np.uint8).reshape(-1, 28, 28)
    assert np.array_equal(stored[0], letter.T)  # the files hold them transposed
    split = datasets.load_split("emnist", str(tmp_path), True, "cpu", download=False)
    assert np.array_equal(split.images[0, 0].numpy(), letter)
    assert np.array_equal(split.images[1, 0].numpy(), np.fliplr(letter))
    assert [split.classes[k] for k in split.labels] == ["L", "1"]


def test_augmentation_specs():
    for name in ("mnist", "kmnist", "svhn", "emnist-balanced"):
        assert not datasets.augmentation(name).get("flip")  # a mirrored digit or letter is not one
    assert datasets.augmentation("cifar100") == datasets.augmentation("cifar10")
    assert datasets.augmentation("folder:/x", image_size=64) == {"pad": 8}


def test_dataset_names():
    assert datasets.dataset_arg("CIFAR-100") == "cifar100"
    assert datasets.dataset_arg("folder:./My/Images") == "folder:./My/Images"  # path as typed
    assert datasets.dataset_arg("Folder:/data/X") == "folder:/data/X"
    assert datasets.short_name("folder:/data/My Images/") == "folder-My_Images"
    with pytest.raises(Exception, match="unknown dataset"):
        datasets.dataset_arg("imagenet")
    with pytest.raises(Exception, match="needs a path"):
        datasets.dataset_arg("folder:")


def test_missing_files_name_what_to_put_where(tmp_path):
    message = one_line_error("svhn train data not found", datasets.load_split, "svhn",
                             str(tmp_path), True, "cpu", download=False)
    assert "train_32x32.mat" in message and "--no-download" in message
    message = one_line_error("emnist-balanced test data not found", datasets.load_split,
                             "emnist-balanced", str(tmp_path), False, "cpu", download=False)
    assert os.path.join(str(tmp_path), "EMNIST", "raw") in message
    assert "emnist-balanced-test-images-idx3-ubyte" in message


# ---------------------------------------------------------------- damaged files

def _damage(raw, damage):
    images, labels = raw / "train-images-idx3-ubyte", raw / "train-labels-idx1-ubyte"
    if damage == "truncated images":
        images.write_bytes(images.read_bytes()[:5000])
        return images
    if damage == "garbage labels":
        labels.write_bytes(np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8).tobytes())
        return labels
    if damage == "labels of another count":
        data = labels.read_bytes()
        labels.write_bytes(data[:4] + (100).to_bytes(4, "big") + data[8:108])
        return labels
    if damage == "label out of range":
        data = bytearray(labels.read_bytes())
        data[8] = 200
        labels.write_bytes(bytes(data))
        return labels
    raise ValueError(damage)


@pytest.mark.parametrize("download", [False, True])
@pytest.mark.parametrize("damage", ["truncated images", "garbage labels",
                                    "labels of another count", "label out of range"])
def test_damaged_idx_files_are_named_not_downloaded(tmp_path, damage, download, no_download):
    fakedata.write_mnist(str(tmp_path), n_train=64, n_test=32)
    bad = _damage(tmp_path / "MNIST" / "raw", damage)
    message = one_line_error("damaged", datasets.load_split, "mnist", str(tmp_path), True, "cpu",
                             download=download)
    assert str(bad) in message and "replace it" in message
    assert "not found" not in message and "could not be downloaded" not in message
    # the other split is intact and still loads
    assert len(datasets.load_split("mnist", str(tmp_path), False, "cpu", download=download)) == 32


@pytest.mark.parametrize("name,file", [
    ("cifar10", os.path.join("cifar-10-batches-py", "data_batch_3")),
    ("cifar100", os.path.join("cifar-100-python", "train")),
    ("svhn", "train_32x32.mat"),
    ("emnist-balanced", os.path.join("EMNIST", "raw", "emnist-balanced-train-images-idx3-ubyte")),
])
def test_damaged_files_of_other_formats(tmp_path, name, file, no_download):
    {"cifar10": fakedata.write_cifar10, "cifar100": fakedata.write_cifar100,
     "svhn": fakedata.write_svhn, "emnist-balanced": fakedata.write_emnist}[name](str(tmp_path))
    path = tmp_path / file
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    for download in (False, True):
        message = one_line_error("damaged", datasets.load_split, name, str(tmp_path), True,
                                 "cpu", download=download)
        assert str(path) in message and "could not be downloaded" not in message


# ---------------------------------------------------------------- memory

def test_check_fits_refuses_with_one_line():
    datasets.check_fits((1000, 3, 32, 32), "cpu", available=10 * 2**20)
    datasets.check_fits(1000, "cpu", available=2000)
    message = one_line_error("does not fit on cpu", datasets.check_fits, (1000, 3, 64, 64), "cpu",
                             available=10 * 2**20, what="x train")
    assert "11.7 MB" in message and "at most 5.0 MB" in message and "--image-size 41" in message
    one_line_error("--subset", datasets.check_fits, (1000, 1, 28, 28), "cpu", available=2**19,
                   resizable=False)
    one_line_error("does not fit", datasets.check_fits, 10**6, "cpu", available=10**6)


def test_check_fits_asks_the_device_when_not_told(monkeypatch):
    datasets.check_fits((10, 1, 28, 28), "cpu")  # /proc/meminfo (or psutil): plenty
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10_000, 80_000))
    one_line_error("does not fit on cuda.*half of the 9.8 KB free|does not fit on cuda",
                   datasets.check_fits, (10, 1, 28, 28), "cuda")
    datasets.check_fits((2, 1, 28, 28), "cuda")


def test_registered_split_checked_against_memory(data_dir):
    one_line_error("cifar10 train .* does not fit", datasets.load_split, "cifar10", data_dir, True,
                   "cpu", download=False, available=100_000)


# ---------------------------------------------------------------- folder datasets

MIXED = dict(sizes=(28, (36, 20), 16, (40, 40)), modes=("L", "RGB", "RGBA", "P", "LA"),
             formats=("png", "jpg"))


@pytest.fixture
def count_decodes(monkeypatch):
    calls = []
    real = datasets._decode_folder

    def counting(files, *args):
        calls.append(len(files))
        return real(files, *args)
    monkeypatch.setattr(datasets, "_decode_folder", counting)
    return calls


def test_folder_of_mixed_sizes_and_modes(tmp_path):
    root = fakedata.write_image_folder(str(tmp_path / "imgs"), (7, 3), classes=("cat", "dog", "eel"), **MIXED)
    exts = {os.path.splitext(f)[1] for _, _, fs in os.walk(root) for f in fs}
    assert exts == {".png", ".jpg"}
    for channels in (1, 3):
        train = datasets.load_split(f"folder:{root}", str(tmp_path / "data"), True, "cpu",
                                    image_size=24, channels=channels)
        test = datasets.load_split(f"folder:{root}", str(tmp_path / "data"), False, "cpu",
                                   image_size=24, channels=channels)
        assert train.images.shape == (21, channels, 24, 24) and test.images.shape == (9, channels, 24, 24)
        assert train.classes == test.classes == ["cat", "dog", "eel"]
        assert train.labels.tolist() == [0] * 7 + [1] * 7 + [2] * 7
        assert test.labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    # the class's bright square survives the conversion (a 28x28 grey PNG, unresized)
    same = datasets.load_split(f"folder:{root}", None, True, "cpu", image_size=28, channels=1)
    first = np.asarray(Image.open(os.path.join(root, "train", "cat", "000000.png")))
    assert np.array_equal(same.images[0, 0].numpy(), first)
    assert first[3:9, 3:9].min() == 230


def test_folder_without_image_size_keeps_one_size(tmp_path):
    root = fakedata.write_image_folder(str(tmp_path / "same"), 2, sizes=((30, 20),), modes=("RGB",))
    split = datasets.load_split(f"folder:{root}", None, False, "cpu")
    assert split.images.shape == (6, 3, 20, 30)  # height 20, width 30; RGB by default
    mixed = fakedata.write_image_folder(str(tmp_path / "mixed"), 2, **MIXED)
    message = one_line_error("pass --image-size", datasets.load_split, f"folder:{mixed}", None, True, "cpu")
    assert os.path.join(mixed, "train") in message


def test_folder_cache_is_reused_and_rebuilt(tmp_path, count_decodes):
    root = fakedata.write_image_folder(str(tmp_path / "imgs"), 3, sizes=(12,))
    load = lambda **kw: datasets.load_split(f"folder:{root}", None, True, "cpu", channels=1, **kw)  # noqa: E731
    first = load()
    cached = os.listdir(os.path.join(root, ".cache"))
    assert count_decodes == [9] and len(cached) == 1 and cached[0].startswith("train-12x12-1-")
    again = load()
    assert count_decodes == [9] and torch.equal(again.images, first.images)
    assert torch.equal(again.labels, first.labels) and again.classes == first.classes
    load(image_size=8)  # other settings: their own cache file
    assert count_decodes == [9, 9] and len(os.listdir(os.path.join(root, ".cache"))) == 2
    # a changed file (new content and mtime) decodes again, and the stale tensor goes
    changed = os.path.join(root, "train", "b", sorted(os.listdir(os.path.join(root, "train", "b")))[0])
    Image.fromarray(np.full((12, 12), 77, dtype=np.uint8)).save(changed)
    os.utime(changed, ns=(10**18, 10**18))
    rebuilt = load()
    assert count_decodes == [9, 9, 9] and (rebuilt.images[3] == 77).all()
    assert len(os.listdir(os.path.join(root, ".cache"))) == 2
    load()
    assert count_decodes == [9, 9, 9]
    # a damaged cache file is decoded again, not trusted
    for f in os.listdir(os.path.join(root, ".cache")):
        with open(os.path.join(root, ".cache", f), "wb") as out:
            out.write(b"not a tensor")
    assert torch.equal(load().images, rebuilt.images) and count_decodes == [9, 9, 9, 9]
    load(cache=False)
    assert count_decodes == [9, 9, 9, 9, 9]
    load(subset=5)  # a subset has its own cache file, which leaves the whole split's alone
    load(subset=5)
    load()
    assert count_decodes == [9, 9, 9, 9, 9, 5]


def test_folder_cache_falls_back_when_the_folder_cannot_take_it(tmp_path, count_decodes):
    root = fakedata.write_image_folder(str(tmp_path / "imgs"), 2, sizes=(10,))
    with open(os.path.join(root, ".cache"), "w") as f:  # a file where the cache folder would go
        f.write("in the way\n")
    data = str(tmp_path / "data")
    for _ in range(2):
        datasets.load_split(f"folder:{root}", data, True, "cpu")
    assert count_decodes == [6] and os.listdir(os.path.join(data, "folder-cache"))
    blocked = str(tmp_path / "blocked")
    with open(blocked, "w") as f:
        f.write("not a folder\n")
    split = datasets.load_split(f"folder:{root}", os.path.join(blocked, "data"), False, "cpu")
    assert len(split) == 6  # no cache anywhere: loads all the same


def test_folder_memory_check_comes_before_decoding(tmp_path, count_decodes):
    root = fakedata.write_image_folder(str(tmp_path / "imgs"), 4, sizes=(16,))
    message = one_line_error("does not fit", datasets.load_split, f"folder:{root}", None, True,
                             "cpu", image_size=512, available=4 * 2**20)
    assert "12 images of 3x512x512" in message and "--image-size 241" in message
    assert count_decodes == []


def test_folder_errors(tmp_path):
    def load(root, train=True, **kw):
        return datasets.load_split(f"folder:{root}", None, train, "cpu", **kw)

    one_line_error("is not a folder", load, str(tmp_path / "nowhere"))
    root = str(tmp_path / "a")
    os.makedirs(os.path.join(root, "train"))
    message = one_line_error("test is not a folder", load, root)
    os.makedirs(os.path.join(root, "test"))
    one_line_error("has no class folders", load, root)
    root = fakedata.write_image_folder(str(tmp_path / "b"), 2, sizes=(8,))
    os.makedirs(os.path.join(root, "train", "d"))
    message = one_line_error("has no images", load, root)
    assert os.path.join(root, "train", "d") in message
    os.rmdir(os.path.join(root, "train", "d"))
    bad = os.path.join(root, "train", "b", "broken.png")
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    message = one_line_error("not a readable image", load, root)
    assert bad in message
    os.remove(bad)
    os.makedirs(os.path.join(root, "test", "zebra"))
    one_line_error("zebra is not a class", load, root, train=False)
    os.rmdir(os.path.join(root, "test", "zebra"))
    one_line_error("--channels 2", load, root, channels=2)
    assert len(load(root, train=False)) == 6


# ---------------------------------------------------------------- splits

def make_split(counts):
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
    images = torch.arange(len(labels), dtype=torch.int64).view(-1, 1, 1, 1)  # each image its index
    return datasets.Split(images, labels, [f"c{k}" for k in range(len(counts))])


def test_split_validation_is_fixed_stratified_and_disjoint():
    counts = [100, 37, 250, 13, 60]
    split = make_split(counts)
    for n in (5, 17, 92, 459):
        torch.manual_seed(n)
        train, val = datasets.split_validation(split, n)
        ids_train, ids_val = train.images.flatten().tolist(), val.images.flatten().tolist()
        assert len(val) == n and len(train) == len(split) - n
        assert not set(ids_train) & set(ids_val) and len(set(ids_train + ids_val)) == len(split)
        assert ids_train == sorted(ids_train) and ids_val == sorted(ids_val)  # original order
        assert torch.equal(split.labels[ids_val], val.labels)
        per_class = torch.bincount(val.labels, minlength=5).tolist()
        for k, c in enumerate(counts):
            assert abs(per_class[k] - n * c / len(split)) < 1
        torch.manual_seed(12345)
        assert datasets.split_validation(split, n)[1].images.flatten().tolist() == ids_val
    assert datasets.split_validation(split, 0) == (split, None)
    one_line_error("--val-size", datasets.split_validation, split, len(split))
    one_line_error("--val-size", datasets.split_validation, split, 4)  # fewer than the classes


def test_held_out_classes():
    assert datasets.held_out_classes("5,6,7,8,9", 10) == [5, 6, 7, 8, 9]
    assert datasets.held_out_classes("9, 7,7", 10) == [7, 9]
    assert datasets.held_out_classes("5-9", 10) == [5, 6, 7, 8, 9]
    assert datasets.held_out_classes("half", 10) == [5, 6, 7, 8, 9]
    assert datasets.held_out_classes("half", 47) == list(range(24, 47))
    for bad, phrase in [("10", "not one of the 10 classes"), ("-1", "not one of"),
                        ("", "none given"), ("0-9", "all 10 classes"), ("a,b", "not a class index"),
                        ("1.5", "not a class index"), ("3,,4", "not a class index")]:
        one_line_error(phrase, datasets.held_out_classes, bad, 10)


def test_split_classes_and_then_validation(data_dir):
    train = datasets.load_split("cifar10", data_dir, True, "cpu", download=False)
    seen, unseen = datasets.split_classes(train, datasets.held_out_classes("half", 10))
    assert seen.classes == train.classes[:5] and unseen.classes == train.classes[5:]
    assert seen.class_index == [0, 1, 2, 3, 4] and unseen.class_index == [5, 6, 7, 8, 9]
    assert len(seen) + len(unseen) == len(train)
    assert sorted(seen.labels.unique().tolist()) == list(range(5))
    assert sorted(unseen.labels.unique().tolist()) == list(range(5))
    originals = train.labels[train.labels >= 5] - 5
    assert torch.equal(unseen.labels, originals)
    assert torch.equal(unseen.images, train.images[train.labels >= 5])
    # uneven held-out classes: names and the way back to the dataset's labels
    seen, unseen = datasets.split_classes(train, [1, 8])
    assert unseen.classes == ["automobile", "ship"] and seen.classes[:2] == ["airplane", "bird"]
    assert torch.equal(torch.tensor(seen.class_index)[seen.labels], train.labels[(train.labels != 1) & (train.labels != 8)])
    fit, val = datasets.split_validation(seen, 40)
    assert fit.classes == val.classes == seen.classes and fit.class_index == seen.class_index
    assert len(fit) + len(val) == len(seen) and len(val) == 40
    again = datasets.split_classes(val, [0])  # composes with the mapping already there
    assert again[1].class_index == [0] and again[0].class_index == seen.class_index[1:]


def test_center_crop_keeps_the_middle_of_every_image():
    images = torch.arange(2 * 5 * 6, dtype=torch.uint8).reshape(2, 1, 5, 6)
    split = datasets.Split(images, torch.tensor([0, 1]), ["a", "b"])
    out = datasets.center_crop(split, 3, "mnist")
    # margins: 2 rows (1 above, 1 below) and 3 columns (1 left, 2 right: the odd one goes right)
    for n in range(2):
        for row in range(3):
            for col in range(3):
                assert out.images[n, 0, row, col] == n * 30 + (row + 1) * 6 + (col + 1)
    assert out.images.shape == (2, 1, 3, 3) and out.images.is_contiguous()
    assert out.labels is split.labels and out.classes == split.classes
    assert datasets.center_crop(split, None, "mnist") is split
    assert torch.equal(datasets.center_crop(split, 5, "mnist").images, images[..., :, :5])
    one_line_error("--center-crop 6 is larger than mnist's 5x6 images",
                   datasets.center_crop, split, 6, "mnist")
