"""Runs that survive: exact resume after SIGKILL, the non-finite guard, Ctrl-C / SIGTERM, and
one clear line (and no file touched) for every bad input."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import engine
import flags
import main
import rundir
import utils
from conftest import ROOT
from losses import StandaloneCenterLoss
from rundir import load_checkpoint, read_jsonl

MAIN = os.path.join(ROOT, "main.py")


def common(tmp_path, data_dir):
    return ["--data-dir", data_dir, "--no-download", "--log-dir", str(tmp_path / "log"),
            "--img-dir", str(tmp_path / "imgs"), "--no-progress", "--no-plots",
            "--batch-size", "32", "--deterministic"]  # bit for bit on CUDA too


def tree(root):
    """Every file under root with its content hash: to show that nothing changed."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def metrics(run_dir, drop=("seconds",)):
    return [{k: v for k, v in r.items() if k not in drop}
            for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl"))]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_dir):
    """A finished two-epoch standalone run (LeNet++), for the resume and checkpoint cases."""
    tmp = tmp_path_factory.mktemp("finished")
    run_dir = main.train(*flags.parse_args(common(tmp, data_dir) + [
        "--model", "lenet", "--lr", "0.001", "--epochs", "2"]))
    return tmp, run_dir


# ----------------------------------------------------------------------------- resume

def test_sigkill_mid_epoch_then_resume_gives_identical_metrics(tmp_path, data_dir):
    """A per-step schedule (warm-up + cosine), the weight average, Nesterov, label smoothing
    and BatchNorm: killed in epoch 2, resumed from epoch 1's checkpoint, bit for bit (an
    epoch scheduler's state rides in the same checkpoint field)."""
    extra = ["--loss", "cent", "--epochs", "2", "--model", "resnet", "--recipe", "fast",
             "--warmup-epochs", "0.5"]
    straight = main.train(*flags.parse_args(common(tmp_path / "a", data_dir) + extra))

    killed_root = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, MAIN, *common(killed_root, data_dir), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    jsonl = killed_root / "log" / "cent-mnist-feat=2" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if jsonl.exists() and jsonl.read_text().count("\n") >= 1:
            time.sleep(0.2)  # well into epoch 2
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = str(jsonl.parent)
    assert len(metrics(run_dir)) == 1

    resumed = main.train(*flags.parse_args(["--resume", run_dir, "--no-progress", "--no-plots",
                                           "--data-dir", data_dir]))
    assert resumed == run_dir
    assert metrics(run_dir) == metrics(straight)
    a = load_checkpoint(os.path.join(straight, "last.pt"))
    b = load_checkpoint(os.path.join(run_dir, "last.pt"))
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    torch.testing.assert_close(a["objective"]["center_loss.centers"],
                               b["objective"]["center_loss.centers"], rtol=0, atol=0)
    # the per-step schedule and the average went on exactly
    assert a["scheduler"] == b["scheduler"] and a["scheduler"]["last_epoch"] > 0
    assert a["averaged"].keys() == b["averaged"].keys()
    for key in a["averaged"]:
        torch.testing.assert_close(a["averaged"][key], b["averaged"][key], rtol=0, atol=0)


def test_deterministic_is_set_recorded_and_unset(tmp_path, data_dir, monkeypatch):
    """--deterministic: torch's deterministic kernels (warning where one has none), cuDNN's
    deterministic algorithms without autotuning, cuBLAS's fixed workspace, and args.json
    says so; the next run without it turns them off (autotuning back on under CUDA)."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    short = ["--epochs", "1", "--subset", "64", "--model", "lenet"]
    try:
        run_dir = main.train(*flags.parse_args(common(tmp_path / "a", data_dir) + short))
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert json.load(open(os.path.join(run_dir, "args.json")))["deterministic"] is True
        argv = [a for a in common(tmp_path / "b", data_dir) if a != "--deterministic"]
        run_dir = main.train(*flags.parse_args(argv + short))
        assert not torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.deterministic
        assert torch.backends.cudnn.benchmark == (torch.cuda.is_available())
        assert json.load(open(os.path.join(run_dir, "args.json")))["deterministic"] is False
    finally:
        utils.deterministic(False, torch.device("cpu"))


def test_resume_extends_a_finished_run(finished_run, data_dir):
    tmp, run_dir = finished_run
    copy = str(tmp / "extended")
    shutil.copytree(run_dir, copy)
    main.train(*flags.parse_args(["--resume", copy, "--epochs", "3", "--no-progress", "--no-plots",
                                 "--data-dir", data_dir]))
    records = metrics(copy)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[:2] == metrics(run_dir)
    assert load_checkpoint(os.path.join(copy, "last.pt"))["epoch"] == 3
    with open(os.path.join(copy, "args.json")) as f:
        assert json.load(f)["epochs"] == 3  # the plan the pictures and the table read


def test_resume_a_checkpoint_older_than_a_flag(finished_run, data_dir):
    """A checkpoint saved before --optimizer existed resumes with the flag's default (sgd)."""
    tmp, run_dir = finished_run
    copy = str(tmp / "older")
    shutil.copytree(run_dir, copy)
    path = os.path.join(copy, "last.pt")
    state = load_checkpoint(path)
    del state["args"]["optimizer"]
    torch.save(state, path)
    main.train(*flags.parse_args(["--resume", copy, "--epochs", "3", "--no-progress", "--no-plots",
                                 "--data-dir", data_dir]))
    assert load_checkpoint(path)["args"]["optimizer"] == "sgd"
    assert [r["epoch"] for r in metrics(copy)] == [1, 2, 3]


def test_sigterm_finishes_the_step_and_says_how_to_resume(tmp_path, data_dir):
    proc = subprocess.Popen([sys.executable, MAIN, *common(tmp_path, data_dir), "--epochs", "50",
                             "--model", "lenet", "--lr", "0.001"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    jsonl = tmp_path / "log" / "standalone-mnist-feat=2" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (jsonl.exists() and jsonl.read_text().strip()):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--resume" in lines[0] and "stopped by signal" in lines[0], err
    ckpt = load_checkpoint(str(jsonl.parent / "last.pt"))
    assert ckpt["epoch"] == len(metrics(str(jsonl.parent))) >= 1
    # where the stopped process's time went, as a finished one says it (bench reads it)
    timings = rundir.read_timings(str(jsonl.parent))
    assert timings["training"] > 0 and timings["stopped epoch"] >= 0
    assert timings["total"] == pytest.approx(sum(v for k, v in timings.items() if k != "total"),
                                             abs=0.05)


# ----------------------------------------------------------------------------- non-finite

def test_non_finite_loss_stops_with_the_last_good_checkpoint(tmp_path, data_dir, monkeypatch, capsys):
    """A NaN in the inter term at epoch 2, step 5: exit 3, one line naming epoch, step and term;
    last.pt is epoch 1's and metrics.jsonl holds only finite epoch 1."""
    real_inter, calls = StandaloneCenterLoss.inter, {"n": 0}
    steps_per_epoch = 512 // 32

    def poisoned(self, features, labels):
        calls["n"] += 1
        value = real_inter(self, features, labels)
        return value * float("nan") if calls["n"] == steps_per_epoch + 5 else value

    monkeypatch.setattr(StandaloneCenterLoss, "inter", poisoned)
    with pytest.raises(SystemExit) as exit_info:
        main.main(common(tmp_path, data_dir) + ["--model", "lenet", "--lr", "0.001", "--epochs", "3",
                                               "--log-interval", "4"])
    assert exit_info.value.code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "'inter' is nan at epoch 2, step 5" in err[0] and "epoch 1" in err[0]
    run_dir = tmp_path / "log" / "standalone-mnist-feat=2"
    assert load_checkpoint(str(run_dir / "last.pt"))["epoch"] == 1
    assert "NaN" not in (run_dir / "metrics.jsonl").read_text()
    assert [r["epoch"] for r in metrics(str(run_dir))] == [1]


def test_non_finite_features_at_evaluation_stop_like_a_non_finite_loss(tmp_path, data_dir, monkeypatch,
                                                                       capsys):
    """Finite loss and weights can still give inf features at evaluation (overflow, bad
    BatchNorm statistics): exit 3 as for a diverged loss (the tuner's "these settings diverge"),
    one line, epoch 1's checkpoint kept, and no geometry computed on the bad features."""
    real, calls = engine.extract_features, {"n": 0}

    def overflowing(*args, **kwargs):
        calls["n"] += 1
        found = real(*args, **kwargs)
        return found * float("inf") if calls["n"] > 2 else found  # epoch 1 extracts 2 splits

    monkeypatch.setattr(engine, "extract_features", overflowing)
    with pytest.raises(SystemExit) as exit_info:
        main.main(common(tmp_path, data_dir) + ["--model", "lenet", "--lr", "0.001", "--epochs", "3"])
    assert exit_info.value.code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-finite features at epoch 2" in err[0] and "epoch 1" in err[0], err
    run_dir = tmp_path / "log" / "standalone-mnist-feat=2"
    assert load_checkpoint(str(run_dir / "last.pt"))["epoch"] == 1
    assert [r["epoch"] for r in metrics(str(run_dir))] == [1]


def test_exploding_run_stops_at_once(tmp_path, data_dir):
    """A learning rate far too large: the run stops inside the first epoch, not after it."""
    proc = subprocess.run([sys.executable, MAIN, *common(tmp_path, data_dir), "--model", "lenet",
                           "--lr", "1e6", "--epochs", "2", "--log-interval", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "at epoch 1, step" in lines[0], proc.stderr
    run_dir = tmp_path / "log" / "standalone-mnist-feat=2"
    assert not (run_dir / "last.pt").exists()
    assert not (run_dir / "metrics.jsonl").exists() or not (run_dir / "metrics.jsonl").read_text()


# ----------------------------------------------------------------------------- bad input

def expect_error(capsys, argv, code, *phrases):
    with pytest.raises(SystemExit) as exit_info:
        main.main(argv)
    assert exit_info.value.code == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for phrase in phrases:
        assert phrase in err[0], err[0]
    return err[0]


@pytest.mark.parametrize("extra,phrases", [
    (["--loss", "softmax"], ["unknown loss 'softmax'", "xent", "cent", "standalone"]),
    (["--dataset", "imagenet"], ["unknown dataset 'imagenet'", "mnist", "fashion-mnist", "cifar10"]),
    (["--model", "vgg"], ["invalid choice: 'vgg'", "resnet", "lenet"]),
    (["--feat-dim", "0"], ["--feat-dim must be positive"]),
    (["--epochs", "-3"], ["--epochs must be positive"]),
    (["--batch-size", "0"], ["--batch-size must be positive"]),
    (["--subset", "0"], ["--subset must be positive"]),
    (["--weight-inter", "-0.1"], ["--weight-inter must not be negative"]),
    (["--weight-cent", "-1"], ["--weight-cent must not be negative"]),
    (["--loss", "cosface", "--scale", "0"], ["--scale must be positive"]),
    (["--margin", "-1"], ["--margin must not be negative"]),
    (["--loss", "xent", "--label-smoothing", "1.5"], ["--label-smoothing must be at most 1"]),
    (["--loss", "xent", "--head-loss", "focal", "--label-smoothing", "0.1"],
     ["--label-smoothing applies only with --head-loss ce"]),
    (["--head-loss", "svm"], ["invalid choice: 'svm'", "ce", "focal", "hinge"]),
    (["--lr", "0"], ["--lr must be positive"]),
    (["--lr-cent", "-0.5"], ["--lr-cent must be positive"]),
    (["--epochs", "two"], ["invalid epochs value: 'two'"]),
])
def test_bad_flag(finished_run, data_dir, capsys, extra, phrases):
    tmp, _ = finished_run
    before = tree(tmp)
    expect_error(capsys, common(tmp, data_dir) + ["--name", "bad"] + extra, 2, *phrases)
    assert tree(tmp) == before


def test_missing_data_offline(tmp_path, capsys):
    expect_error(capsys, ["--data-dir", str(tmp_path / "nowhere"), "--no-download",
                          "--log-dir", str(tmp_path / "log"), "--dataset", "fashion-mnist"], 2,
                 "fashion-mnist train data not found", "train-images-idx3-ubyte",
                 os.path.join(str(tmp_path / "nowhere"), "FashionMNIST", "raw"))
    assert os.listdir(tmp_path) == []  # neither the data folder nor the run directory


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "foreign", "code"])
def test_bad_checkpoint(finished_run, data_dir, capsys, damage):
    tmp, run_dir = finished_run
    copy = tmp / f"damaged-{damage}"
    shutil.copytree(run_dir, copy)
    ckpt = copy / "last.pt"
    if damage == "corrupt":
        ckpt.write_bytes(b"this is not a checkpoint" * 100)
    elif damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:5000])
    elif damage == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(3)}}, ckpt)
    else:  # a pickle that would run code: weights_only refuses it
        torch.save({"model": shutil.rmtree}, ckpt)
    before = tree(tmp)
    expect_error(capsys, ["--resume", str(copy), "--data-dir", data_dir, "--no-progress"], 2,
                 str(ckpt))
    assert tree(tmp) == before


@pytest.mark.parametrize("extra,phrase", [
    (["--model", "resnet"], "--model resnet does not match the checkpoint's lenet"),
    (["--feat-dim", "3"], "--feat-dim 3 does not match the checkpoint's 2"),
])
def test_resume_with_mismatching_flags(finished_run, data_dir, capsys, extra, phrase):
    tmp, run_dir = finished_run
    before = tree(tmp)
    expect_error(capsys, ["--resume", run_dir, "--data-dir", data_dir] + extra, 2, phrase)
    assert tree(tmp) == before


def test_existing_run_directory(finished_run, data_dir, capsys):
    tmp, run_dir = finished_run
    before = tree(tmp)
    expect_error(capsys, common(tmp, data_dir) + ["--model", "lenet", "--epochs", "1"], 2,
                 "already exists", "--resume", "--overwrite")
    assert tree(tmp) == before


def test_unwritable_log_directory(tmp_path, data_dir, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    argv = common(tmp_path, data_dir) + ["--model", "lenet", "--epochs", "1"]
    argv[argv.index("--log-dir") + 1] = str(blocker / "log")
    expect_error(capsys, argv, 2, "cannot write the run directory", str(blocker))
    assert blocker.read_text() == "not a directory\n"
