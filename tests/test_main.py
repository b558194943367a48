"""main.py end to end on small generated files in torchvision's on-disk formats."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import datasets
import losses
import engine
import flags
import utils
import main
import rundir
from conftest import ROOT
from losses import build_objective
from models import build_model
from rundir import load_checkpoint, read_jsonl


def run_main(tmp_path, data_dir, *extra):
    argv = ["--data-dir", data_dir, "--no-download", "--log-dir", str(tmp_path / "log"),
            "--img-dir", str(tmp_path / "imgs"), "--no-progress", "--no-plots",
            "--batch-size", "64", *extra]
    return main.train(*flags.parse_args(argv))


def read_metrics(run_dir):
    return read_jsonl(os.path.join(run_dir, "metrics.jsonl"))


def finite_numbers(value):
    if isinstance(value, (list, tuple)):
        return all(finite_numbers(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


@pytest.mark.parametrize("loss,dataset,model", [
    ("xent", "mnist", "lenet"),
    ("cent", "fashion-mnist", "lenet"),
    ("standalone", "cifar10", "lenet"),
    ("standalone", "mnist", "resnet"),
])
def test_end_to_end(tmp_path, data_dir, loss, dataset, model):
    run_dir = run_main(tmp_path, data_dir, "--loss", loss, "--dataset", dataset, "--model", model,
                       "--epochs", "2",
                       "--lr", "0.001" if model == "lenet" else "0.01")
    assert os.path.basename(run_dir) == f"{loss}-{dataset}-feat=2"
    with open(os.path.join(run_dir, "args.json")) as f:
        saved = json.load(f)
    assert (saved["loss"], saved["dataset"], saved["model"], saved["epochs"]) == (loss, dataset, model, 2)

    records = read_metrics(run_dir)
    assert [r["epoch"] for r in records] == [1, 2]
    terms = {"xent": ["xent"], "cent": ["xent", "center"], "standalone": ["intra", "inter"]}[loss]
    for r in records:
        for key in ["lr", "train_loss", "train_acc", "train_nc_acc", "test_acc", "test_nc_acc",
                    "test_precision_at_1", "test_r_precision", "test_map_at_r",
                    "seconds"] + [f"train_{t}" for t in terms]:
            assert isinstance(r[key], float) and math.isfinite(r[key]), key
        assert finite_numbers(list(r.values()))
        assert r["train_loss"] == pytest.approx(sum(r[f"train_{t}"] for t in terms), rel=1e-5)
        assert 0.0 <= r["test_acc"] <= 1.0
        assert len(r["test_center_distances"]) == 10

    with open(os.path.join(run_dir, "train.log")) as f:
        log = f.read()
    assert "epoch   1/2" in log and "epoch   2/2" in log and "test acc" in log and "MAP@R" in log

    # The checkpoint loads into a fresh model and objective and reproduces the final val acc.
    umask = os.umask(0)
    os.umask(umask)
    for name in ("last.pt", "args.json", "features/epoch_001.npz"):  # written via a temp file
        assert os.stat(os.path.join(run_dir, name)).st_mode & 0o777 == 0o666 & ~umask
    ckpt = load_checkpoint(os.path.join(run_dir, "last.pt"))
    assert ckpt["epoch"] == 2 and ckpt["args"]["loss"] == loss
    val = datasets.load_split(dataset, data_dir, False, "cpu", download=False)
    net = build_model(model, 2, val.images.shape[1], val.images.shape[-1])
    net.load_state_dict(ckpt["model"])
    objective = build_objective(loss, 10, 2)
    objective.load_state_dict(ckpt["objective"])
    with torch.inference_mode():
        features = engine.extract_features(net, val, utils.Dist(), 2)
        acc = (objective.predict(features) == val.labels).double().mean().item()
    assert acc == pytest.approx(records[-1]["test_acc"])


@pytest.mark.parametrize("loss,extra,terms,recorded", [
    ("center-push", [], ["intra", "inter"], {"alpha": 0.01, "weight_inter": 1.0, "inter_delta": 1.0}),
    ("center-softmax", ["--weight-intra", "0.01"], ["xent", "intra"],
     {"center_gamma": 1.0, "weight_intra": 0.01}),
    ("margin", [], ["intra", "inter"], {"margin": 100.0, "weight_inter": 0.1}),
    ("cosface", [], ["cosface"], {"scale": 64.0, "margin": 0.35}),
    ("arcface", ["--scale", "16"], ["arcface"], {"scale": 16.0, "margin": 0.5}),
    ("xent", ["--head-loss", "focal"], ["focal"], {"head_loss": "focal", "focal_gamma": 2.0}),
    ("cent", ["--head_loss", "hinge", "--weight_cent", "0.5"], ["hinge", "center"],
     {"head_loss": "hinge", "weight_cent": 0.5}),
    ("xent", ["--label-smoothing", "0.1"], ["xent"], {"label_smoothing": 0.1, "head_loss": "ce"}),
])
def test_each_objective_trains_one_epoch(tmp_path, data_dir, loss, extra, terms, recorded):
    """Every --loss (and head loss) from main.py: finite terms that sum to the loss, the
    retrieval metrics, its hyperparameters resolved into args.json (per-loss defaults of a
    shared flag such as --margin included), and a checkpoint that reproduces the accuracy."""
    run_dir = run_main(tmp_path, data_dir, "--loss", loss, "--epochs", "1", "--subset", "256", *extra)
    with open(os.path.join(run_dir, "args.json")) as f:
        saved = json.load(f)
    assert {k: saved[k] for k in recorded} == recorded
    (r,) = read_metrics(run_dir)
    assert finite_numbers(list(r.values()))
    assert r["train_loss"] == pytest.approx(sum(r[f"train_{t}"] for t in terms), rel=1e-5)
    assert not set(k[6:] for k in r if k.startswith("train_") and not k.startswith("train_eval_")) \
        - {*terms, "loss", "acc", "nc_acc"}
    for key in ("test_acc", "test_nc_acc", "test_precision_at_1", "test_r_precision", "test_map_at_r"):
        assert 0.0 <= r[key] <= 1.0, key
    ckpt = load_checkpoint(os.path.join(run_dir, "last.pt"))
    val = datasets.load_split("mnist", data_dir, False, "cpu", subset=256, download=False)
    net = build_model("resnet", 2, 1, 28).to(memory_format=torch.channels_last)
    net.load_state_dict(ckpt["model"])
    objective = build_objective(loss, 10, 2, **{k: v for k, v in saved.items() if k in recorded})
    objective.load_state_dict(ckpt["objective"])
    with torch.inference_mode():
        features = engine.extract_features(net, val, utils.Dist(), 2, 64, torch.channels_last)
        acc = (objective.predict(features) == val.labels).double().mean().item()
    assert acc == pytest.approx(r["test_acc"])


def test_the_centers_own_learning_rate_is_logged(tmp_path, data_dir):
    """--lr-cent: metrics.jsonl and train.log carry the centers' lr beside the net's, on the
    same schedule (cosine: the same factor each epoch); without it, no second lr."""
    run_dir = run_main(tmp_path, data_dir, "--loss", "standalone", "--epochs", "3", "--subset",
                       "128", "--lr", "0.01", "--lr-cent", "0.003", "--scheduler", "cosine")
    records = read_metrics(run_dir)
    factors = [(1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]  # at each epoch's start
    assert [r["lr"] for r in records] == pytest.approx([0.01 * f for f in factors])
    assert [r["lr_centers"] for r in records] == pytest.approx([0.003 * f for f in factors])
    with open(os.path.join(run_dir, "train.log")) as f:
        assert "lr 1.00e-02  (centers 3.00e-03)  loss" in f.read()
    run_dir = run_main(tmp_path, data_dir, "--loss", "cent", "--epochs", "1", "--subset", "128")
    assert "lr_centers" not in read_metrics(run_dir)[0]


def test_learns_the_generated_classes(tmp_path, data_dir):
    """The fake classes are a bright square at a class-dependent place: a few epochs of the
    standalone loss separate them, measured by nearest center on the test split."""
    run_dir = run_main(tmp_path, data_dir, "--loss", "standalone", "--epochs", "6",
                       "--batch-size", "32")
    accuracies = [r["test_acc"] for r in read_metrics(run_dir)]
    assert max(accuracies) > 0.85 and accuracies[-1] > accuracies[0] + 0.2, accuracies


def test_command_line_exit_code(tmp_path, data_dir):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "main.py"), "--loss", "cent", "--dataset", "cifar-10",
         "--model", "lenet", "--epochs", "1", "--batch-size", "64", "--data-dir", data_dir,
         "--no-download", "--log-dir", str(tmp_path / "log"), "--no-plots", "--feat_dim", "3"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "epoch   1/1" in proc.stdout + proc.stderr
    assert os.path.isfile(tmp_path / "log" / "cent-cifar10-feat=3" / "last.pt")


NEW_LOSSES = ["contrastive-center", "ring", "island", "triplet-center", "git", "contrastive",
              "triplet", "multi-similarity", "supcon", "proxy-anchor", "proxy-nca", "normface",
              "sphereface", "pml:CircleLoss"]


@pytest.mark.parametrize("loss", NEW_LOSSES)
def test_each_new_loss_trains_one_epoch(tmp_path, data_dir, loss):
    """The center-loss family and the metric-learning losses from main.py: finite terms that
    sum to the loss, and a checkpoint (learnable proxies, or the class means a pair loss
    predicts with) that reproduces the accuracy."""
    run_dir = run_main(tmp_path, data_dir, "--loss", loss, "--epochs", "1", "--subset", "256",
                       "--model", "lenet", "--lr", "0.001", "--device", "cpu")  # as recomputed
    saved = json.load(open(os.path.join(run_dir, "args.json")))
    (r,) = read_metrics(run_dir)
    assert finite_numbers([v for k, v in r.items() if not k.endswith(("nc1", "center_ratio"))])
    terms = [k for k in r if k.startswith("train_") and k not in ("train_loss", "train_acc",
                                                                    "train_nc_acc")
             and not k.startswith("train_eval_")]
    assert terms and r["train_loss"] == pytest.approx(sum(r[t] for t in terms), rel=1e-5)
    ckpt = load_checkpoint(os.path.join(run_dir, "last.pt"))
    test = datasets.load_split("mnist", data_dir, False, "cpu", subset=256, download=False)
    net = build_model("lenet", 2, 1, 28).to(memory_format=torch.channels_last)
    net.load_state_dict(ckpt["model"])
    objective = build_objective(loss, 10, 2, **{k: saved.get(k) for k in losses.declared()})
    objective.load_state_dict(ckpt["objective"])
    with torch.inference_mode():
        features = engine.extract_features(net, test, utils.Dist(), 2, 64, torch.channels_last)
        acc = (objective.predict(features) == test.labels).double().mean().item()
    assert acc == pytest.approx(r["test_acc"])


def test_a_pair_loss_under_the_weight_average_predicts_its_training_batches(tmp_path, data_dir):
    """The evaluated copy (the average) observes the clean features; the trained net's class
    means, which its running train acc predicts with, are those of the epoch's training
    features (the snapshot's, all 256 of them here), not zeros."""
    run_dir = run_main(tmp_path, data_dir, "--loss", "triplet", "--epochs", "1", "--subset", "256",
                       "--model", "lenet", "--lr", "0.001", "--ema-decay", "0.9")
    ckpt = load_checkpoint(os.path.join(run_dir, "last.pt"))
    (path,) = rundir.snapshot_paths(run_dir)
    snap = rundir.load_snapshot(path)
    features, labels = torch.as_tensor(snap["train_features"]), torch.as_tensor(snap["train_labels"])
    assert len(labels) == 256
    means = torch.stack([features[labels == c].mean(0) for c in range(10)])
    assert ckpt["objective"]["observed"].all()
    torch.testing.assert_close(ckpt["objective"]["means"], means)


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_no_augment_trains_on_the_images_as_they_are(data_dir, dataset):
    """--no-augment: every training batch is the stored images of its indices, scaled to
    [0, 1]; by default the same batches are rotated (digits) or flipped and shifted (photos)."""
    def batches(*extra):
        args = flags.parse_args(["--data-dir", data_dir, "--no-download", "--dataset", dataset,
                                 "--subset", "128", *extra])[0]
        data = engine.load_data(args, torch.device("cpu"))
        return data, list(datasets.train_batches(data.train, 32, 0, 1, data.spec))
    data, plain = batches("--no-augment")
    assert data.spec == {} and len(plain) == 4
    for x, y, idx in plain:
        torch.testing.assert_close(x, data.train.images[idx].float() / 255, rtol=0, atol=0)
        assert torch.equal(y, data.train.labels[idx])
    _, augmented = batches()
    assert [torch.equal(a[2], p[2]) for a, p in zip(augmented, plain)] == [True] * 4  # same order
    assert not any(torch.equal(a[0], p[0]) for a, p in zip(augmented, plain))


def test_every_split_of_a_run_is_cropped_alike(data_dir):
    """--center-crop cuts the training, validation, clean and test images, each to its own
    center: the full images' pixels, 4 rows and columns in from each side of MNIST's 28."""
    def load(*extra):
        args = flags.parse_args(["--data-dir", data_dir, "--no-download", "--val-size", "20",
                                 *extra])[0]
        return engine.load_data(args, torch.device("cpu"))
    full, cropped = load(), load("--center-crop", "20")
    for part in ("train", "val", "clean", "test"):
        whole, cut = getattr(full, part), getattr(cropped, part)
        assert cut.images.shape[-2:] == (20, 20)
        assert torch.equal(cut.images, whole.images[..., 4:24, 4:24])
        assert torch.equal(cut.labels, whole.labels)


def test_the_clean_training_metric_by_hand(tmp_path, data_dir):
    """train_eval_acc: the evaluated weights on a fixed subset of the training images (never
    the held-out validation ones), unaugmented, the size of the validation split; recomputed
    here image by image from the checkpoint."""
    run_dir = run_main(tmp_path, data_dir, "--loss", "xent", "--epochs", "1", "--subset", "256",
                       "--val-size", "64", "--model", "lenet", "--lr", "0.01")
    (r,) = read_metrics(run_dir)
    everything = datasets.load_split("mnist", data_dir, True, "cpu", subset=256, download=False)
    train, val = datasets.split_validation(everything, 64)
    keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))[:64]
    held = {bytes(img.numpy()) for img in val.images}
    assert not any(bytes(train.images[i].numpy()) in held for i in keep.tolist())
    ckpt = load_checkpoint(os.path.join(run_dir, "last.pt"))
    net = build_model("lenet", 2, 1, 28)
    net.load_state_dict(ckpt["model"])
    objective = build_objective("xent", 10, 2)
    objective.load_state_dict(ckpt["objective"])
    net.eval()
    correct = 0
    with torch.inference_mode():
        for i in keep.tolist():  # one image at a time
            feature = engine.extract_features(net, datasets.Split(train.images[i:i + 1],
                                                                  train.labels[i:i + 1], train.classes),
                                              utils.Dist(), 2, 1, torch.contiguous_format)
            correct += int(objective.predict(feature).item() == train.labels[i].item())
    assert r["train_eval_acc"] == pytest.approx(correct / 64)
    assert 0.0 <= r["val_acc"] <= 1.0 and "test_acc" in r


def test_val_size_zero_is_the_published_protocol(tmp_path, data_dir):
    """--val-size 0 trains on the whole training split and reads the test split every epoch
    (what best.pt decides on); with --val-size the test split is read once, at the end."""
    published = read_metrics(run_main(tmp_path, data_dir, "--loss", "cent", "--epochs", "2",
                                      "--subset", "256", "--model", "lenet", "--val-size", "0"))
    assert all("test_acc" in r and not any(k.startswith("val_") for k in r) for r in published)
    assert len(published) == 2
    held = read_metrics(run_main(tmp_path, data_dir, "--loss", "cent", "--epochs", "2", "--subset",
                                 "256", "--model", "lenet", "--val-size", "64", "--name", "held"))
    assert ["test_acc" in r for r in held] == [False, True] and all("val_acc" in r for r in held)
