"""Every bad input to main.py, sweep.py and visualize.py gets one line on stderr, a non-zero
exit code and no traceback, and leaves what was already written as it was; and every run,
however short, gets its pictures."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

import main
import rundir
import sweep
import visualize
from test_failures import tree
from conftest import ROOT
from losses import StandaloneCenterLoss

RUN = "standalone-mnist-feat=2"


def base(root, data_dir):
    return ["--data-dir", data_dir, "--no-download", "--log-dir", str(root / "log"),
            "--img-dir", str(root / "imgs"), "--no-progress", "--model", "lenet", "--lr", "0.001",
            "--batch-size", "32", "--subset", "128"]


def expect_exit(capsys, command, argv, code, *phrases, quiet=False):
    """command(argv) exits with `code` and one line on stderr holding every phrase (an
    exception other than SystemExit fails the test with its traceback); quiet: and nothing
    on stdout."""
    with pytest.raises(SystemExit) as exit_info:
        command(argv)
    assert exit_info.value.code == code
    captured = capsys.readouterr()
    assert not quiet or captured.out == "", captured.out
    err = captured.err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    for phrase in phrases:
        assert phrase in err[0], err[0]
    return err[0]


def gif_frame_count(path):
    with Image.open(path) as im:
        return im.n_frames


def assert_pictures(folder, train_frames, val_frames):
    assert gif_frame_count(folder / "train.gif") == train_frames
    assert gif_frame_count(folder / "val.gif") == val_frames
    for name in ("curves.png", "centers.png"):
        with Image.open(folder / name) as im:
            im.load()
            assert min(im.size) >= 300


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    """A finished run of one epoch, pictures drawn at the end (plots on)."""
    root = tmp_path_factory.mktemp("finished")
    main.main(base(root, data_dir) + ["--epochs", "1"])
    return root, root / "log" / RUN


def damaged_copy(finished, tmp_path, damage):
    """A copy of the finished run, damaged by damage(copy)."""
    copy = tmp_path / "runs" / RUN
    shutil.copytree(finished[1], copy)
    damage(copy)
    return copy


# ----------------------------------------------------------------------------- pictures

def test_a_one_epoch_run_gets_its_pictures(finished):
    root, run_dir = finished
    log = (run_dir / "train.log").read_text()
    assert "pictures not drawn" not in log
    assert_pictures(root / "imgs" / RUN, 1, 1)
    # the last line's accuracies are rounded like every other line's
    done = [line for line in log.splitlines() if line.startswith("done:")]
    assert len(done) == 1 and "final test acc 0." in done[0]
    acc = done[0].split("final test acc ")[1].split(",")[0]
    assert len(acc) == len("0.1234"), done[0]


def test_a_run_evaluated_only_at_its_end_gets_its_pictures(tmp_path, data_dir):
    main.main(base(tmp_path, data_dir) + ["--epochs", "2", "--eval-every", "5"])
    assert_pictures(tmp_path / "imgs" / RUN, 2, 1)  # val: the last epoch only


def test_visualize_redraws_a_one_epoch_run(finished, tmp_path, capsys):
    root, run_dir = finished
    before = tree(root)
    visualize.main([str(run_dir), "--out-dir", str(tmp_path / "out")])
    assert capsys.readouterr().err == ""
    assert_pictures(tmp_path / "out" / RUN, 1, 1)
    assert tree(root) == before


# ----------------------------------------------------------------------------- main.py flags

def recipe_file(tmp_path, text):
    path = tmp_path / "tuned.json"
    path.write_text(text)
    return str(path)


def tuned(settings, source=None, loss="standalone"):
    return json.dumps({"mnist": {"2": {loss: {"settings": settings,
                                              "source": source or {"val_size": 100}}}}})


MAIN_CASES = [
    # missing value, unknown flag, wrong type
    (["--lr"], ["--lr: expected one argument"]),
    (["--bogus"], ["unrecognized arguments: --bogus"]),
    (["--lr", "abc"], ["invalid float value: 'abc'"]),
    (["--feat-dim", "x"], ["invalid int value: 'x'"]),
    (["--epochs", "two"], ["invalid epochs value: 'two'"]),
    (["--channels", "2"], ["invalid choice: 2"]),
    # non-finite
    (["--lr", "inf"], ["--lr must be a finite number, got inf"]),
    (["--lr", "1e400"], ["--lr must be a finite number, got inf"]),
    (["--momentum", "nan"], ["--momentum must be a finite number, got nan"]),
    (["--weight-decay", "nan"], ["--weight-decay must be a finite number, got nan"]),
    (["--lr-cent", "nan"], ["--lr-cent must be a finite number"]),
    (["--gamma", "inf"], ["--gamma must be a finite number"]),
    (["--ema-decay", "nan"], ["--ema-decay must be a finite number"]),
    (["--weight-inter=-inf"], ["--weight-inter must be a finite number"]),
    (["--loss", "cosface", "--scale", "inf"], ["--scale must be a finite number"]),
    # out of range
    (["--momentum", "1.5"], ["--momentum must be below 1, got 1.5"]),
    (["--momentum", "-0.1"], ["--momentum must not be negative"]),
    (["--ema-decay", "1"], ["--ema-decay must be in [0, 1)"]),
    (["--seed", "-1"], ["--seed must be from 0 to 4294967295, got -1"]),
    (["--seed", "99999999999"], ["--seed must be from 0 to"]),
    (["--val-size", "-1"], ["--val-size must not be negative"]),
    (["--val-size", "3"], ["--val-size 3: must be 0 or from 10"]),
    (["--val-size", "128"], ["--val-size 128: must be 0 or from 10"]),
    (["--dataset", "folder:/x", "--image-size", "0"], ["--image-size must be positive"]),
    (["--snapshot-size", "0"], ["--snapshot-size must be positive"]),
    (["--center-crop", "0"], ["--center-crop must be positive"]),
    (["--center-crop", "29"], ["--center-crop 29 is larger than mnist's 28x28 images"]),
    (["--log-interval", "0"], ["--log-interval must be positive"]),
    (["--batch-size", "100000"], ["fewer than one batch of 100000"]),
    # flags that do not apply, or contradict
    (["--image-size", "32"], ["--image-size applies to folder: datasets only"]),
    (["--channels", "3"], ["--channels applies to folder: datasets only"]),
    (["--no-test"], ["--no-test needs --val-size"]),
    # open-set classes
    (["--held-out-classes", ""], ["--held-out-classes names no class"]),
    (["--held-out-classes", "abc"], ["'abc' is not a class index"]),
    (["--held-out-classes", "10"], ["10 is not one of the 10 classes"]),
    (["--held-out-classes", "0-9"], ["holds out all 10 classes"]),
    # devices
    (["--device", "bogus"], ["--device 'bogus' is not a device torch knows"]),
    (["--device", "cuda:99"], ["--device cuda:99 was asked for"]),
    (["--sync-bn", "--device", "cpu"], ["--sync-bn needs CUDA"]),
    # names and paths
    (["--name", "../../../escape"], ["--name '../../../escape' must be a plain folder-name suffix"]),
    (["--name", "."], ["must be a plain folder-name suffix"]),
    (["--name", "a\0b"], ["--name contains a NUL character"]),
    (["--log-dir", ""], ["--log-dir must not be empty"]),
    (["--data-dir", ""], ["--data-dir must not be empty"]),
    (["--img-dir", ""], ["--img-dir must not be empty"]),
    (["--resume", ""], ["--resume must not be empty"]),
    (["--img-dir", "x\0y"], ["--img-dir contains a NUL character"]),
    # losses of pytorch-metric-learning
    (["--loss", "pml:"], ["unknown loss 'pml:'"]),
    (["--loss", "pml:NoSuchLoss"], ["unknown loss 'pml:NoSuchLoss'"]),
    (["--loss", "pml:ContrastiveLoss", "--pml-args", "nonsense"], ["takes key=value pairs"]),
    (["--loss", "pml:ContrastiveLoss", "--pml-args", "bogus=1"], ["unexpected keyword argument 'bogus'"]),
    (["--loss", "pml:ContrastiveLoss", "--pml-args", "pos_margin=abc("], ["fails on a test batch"]),
    (["--loss", "pml:ContrastiveLoss", "--pml-args", "pos_margin=[1,2]"], ["fails on a test batch"]),
    (["--loss", "pml:ContrastiveLoss", "--pml-args", "distance=__import__('os')"],
     ["fails on a test batch"]),
    (["--loss", "pml:ContrastiveLoss", "--pml-miner", "NoSuchMiner"], ["has no miner 'NoSuchMiner'"]),
    (["--loss", "pml:ContrastiveLoss", "--pml-args", "miner.epsilon=0.1"], ["without a miner"]),
    # datasets
    (["--dataset", ""], ["unknown dataset ''"]),
    (["--dataset", "folder:"], ["folder: needs a path"]),
    (["--data-dir", "/nonexistent/data"], ["mnist train data not found", "--no-download"]),
]


@pytest.mark.parametrize("extra,phrases", MAIN_CASES, ids=[" ".join(c[0])[:60] for c in MAIN_CASES])
def test_bad_main_flag(finished, tmp_path, data_dir, capsys, extra, phrases):
    root, _ = finished
    before = tree(root)
    expect_exit(capsys, main.main, base(tmp_path, data_dir) + ["--epochs", "1"] + extra, 2, *phrases)
    assert tree(root) == before
    assert os.listdir(tmp_path) == []  # no run directory, no picture folder, nothing escaped


@pytest.mark.parametrize("text,phrase", [
    ("{not json", "is not a readable tuned-recipe file"),
    ("[1, 2]", "is not a tuned-recipe file of sweep.py --tune"),
    (json.dumps({"mnist": {"2": {"standalone": {"no settings": 1}}}}), "is not a tuned-recipe file"),
    (tuned({"weight_decay": "fast"}), "--weight-decay must be a number, got 'fast'"),
    (tuned({"weight_decay": float("nan")}), "--weight-decay must be a finite number"),
    (tuned({"bogus_flag": 1}), "sets 'bogus_flag', which main.py has no flag for"),
    (tuned({"head_loss": "svm"}, loss="xent"), "--head-loss must be one of ce, focal, hinge"),
    (tuned({"lr": 0.1}, {"val_size": "all"}), "--val-size must be a whole number"),
], ids=["garbage", "list", "no-settings", "str-value", "nan-value", "unknown-key", "bad-choice",
        "str-val-size"])
def test_bad_tuned_recipe_file(finished, tmp_path, data_dir, capsys, text, phrase):
    root, _ = finished
    before = tree(root)
    loss = "xent" if '"xent"' in text else "standalone"
    argv = base(tmp_path, data_dir) + ["--loss", loss, "--recipe", "tuned", "--recipe-file",
                                       recipe_file(tmp_path, text)]
    expect_exit(capsys, main.main, argv, 2, phrase)
    assert tree(root) == before and not (tmp_path / "log").exists()


def test_missing_tuned_recipe_says_how_to_make_it(tmp_path, data_dir, capsys):
    argv = base(tmp_path, data_dir) + ["--recipe", "tuned", "--recipe-file", str(tmp_path / "no.json")]
    expect_exit(capsys, main.main, argv, 2, "no tuned recipe for standalone", "sweep.py --tune")


# ----------------------------------------------------------------------------- data files

def mnist_copy(data_dir, tmp_path, damage):
    root = tmp_path / "data"
    shutil.copytree(os.path.join(data_dir, "MNIST"), root / "MNIST")
    damage(root / "MNIST" / "raw")
    return str(root)


def truncate(raw):
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:5000])


def garbage_labels(raw):
    (raw / "train-labels-idx1-ubyte").write_bytes(b"garbage" * 20)


def empty_images(raw):
    (raw / "train-images-idx3-ubyte").write_bytes(b"")


@pytest.mark.parametrize("damage,download,phrases", [
    (truncate, False, ["train-images-idx3-ubyte is damaged or truncated", "truncated: 5000 bytes"]),
    (truncate, True, ["train-images-idx3-ubyte is damaged or truncated"]),  # never downloaded again
    (garbage_labels, False, ["train-labels-idx1-ubyte is damaged or truncated", "not an IDX file"]),
    (empty_images, False, ["train-images-idx3-ubyte is damaged or truncated", "0 bytes"]),
], ids=["truncated", "truncated-download-on", "garbage-labels", "empty"])
def test_damaged_data_file_is_named(finished, tmp_path, data_dir, capsys, damage, download, phrases):
    root, _ = finished
    before = tree(root)
    argv = base(tmp_path, mnist_copy(data_dir, tmp_path, damage)) + ["--epochs", "1"]
    if download:
        argv.remove("--no-download")
    message = expect_exit(capsys, main.main, argv, 2, *phrases)
    assert "not found" not in message and "download" not in message
    assert tree(root) == before and not (tmp_path / "log").exists()


def image_folder(tmp_path, damage=None):
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            for i in range(20):
                Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(
                    root / split / name / f"{i}.png")
    if damage:
        damage(root)
    return f"folder:{root}"


@pytest.mark.parametrize("damage,phrase", [
    (lambda r: (r / "train" / "a" / "0.png").write_bytes(b"not a png"), "0.png is not a readable image"),
    (lambda r: (r / "train" / "a" / "0.png").write_bytes(b""), "0.png is not a readable image"),
    (lambda r: shutil.rmtree(r / "test"), "is not a folder"),
    (lambda r: [p.unlink() for p in (r / "train" / "b").iterdir()], "has no images"),
    (lambda r: (r / "test" / "b").rename(r / "test" / "c"), "is not a class of"),
    (lambda r: shutil.rmtree(r), "is not a folder"),
], ids=["corrupt-image", "empty-image", "no-test", "empty-class", "unknown-test-class", "missing"])
def test_bad_image_folder(tmp_path, data_dir, capsys, damage, phrase):
    argv = base(tmp_path, data_dir) + ["--epochs", "1", "--dataset", image_folder(tmp_path, damage)]
    expect_exit(capsys, main.main, argv, 2, phrase)
    assert not (tmp_path / "log").exists()


def test_image_folder_too_large_for_memory(tmp_path, data_dir, capsys):
    argv = base(tmp_path, data_dir) + ["--dataset", image_folder(tmp_path), "--image-size", "100000"]
    expect_exit(capsys, main.main, argv, 2, "does not fit on cpu", "try --image-size")


# ----------------------------------------------------------------------------- folders

@pytest.mark.parametrize("flag", ["--log-dir", "--img-dir"])
def test_unwritable_folder_is_refused_before_training(tmp_path, data_dir, capsys, flag):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    argv = base(tmp_path, data_dir) + ["--epochs", "1"]
    argv[argv.index(flag) + 1] = str(blocker / "sub")
    expect_exit(capsys, main.main, argv, 2, str(blocker))
    assert blocker.read_text() == "not a directory\n"
    assert not (tmp_path / "log").exists()  # --img-dir: checked before the run directory is made


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes into a read-only folder (the tests above use a file instead)")
@pytest.mark.parametrize("command", ["main --img-dir", "visualize --out-dir", "sweep --export"])
def test_read_only_folder(finished, tmp_path, data_dir, capsys, command):
    root, run_dir = finished
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        if command.startswith("main"):
            argv = base(tmp_path, data_dir) + ["--epochs", "1", "--img-dir", str(read_only / "imgs")]
            expect_exit(capsys, main.main, argv, 2, "--img-dir", "cannot be written")
            assert not (tmp_path / "log").exists()
        elif command.startswith("visualize"):
            expect_exit(capsys, visualize.main, [str(run_dir), "--out-dir", str(read_only)], 2,
                        "cannot be written")
        else:
            expect_exit(capsys, sweep.main, ["--export", str(read_only), str(run_dir)], 2,
                        "--export folder", "cannot be written")
        assert os.listdir(read_only) == []
    finally:
        read_only.chmod(0o755)


def test_the_run_directory_is_a_file(tmp_path, data_dir, capsys):
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / RUN).write_text("x\n")
    expect_exit(capsys, main.main, base(tmp_path, data_dir), 2, "exists and is not a directory")
    assert (tmp_path / "log" / RUN).read_text() == "x\n"


def test_a_run_being_trained_is_not_resumed_twice(finished, tmp_path, data_dir, capsys):
    copy = damaged_copy(finished, tmp_path, lambda d: None)
    held = rundir.lock(str(copy))
    try:
        before = tree(copy)
        expect_exit(capsys, main.main, ["--resume", str(copy), "--epochs", "2", "--data-dir",
                                        data_dir, "--no-progress"], 2, "being trained by another process")
        assert tree(copy) == before
    finally:
        held.close()


# ----------------------------------------------------------------------------- --resume

def only_args_json(tmp_path, text):
    folder = tmp_path / "stopped"
    folder.mkdir()
    (folder / "args.json").write_text(text)
    return folder


def edit_checkpoint(edit):
    def damage(run):
        state = torch.load(run / "last.pt", weights_only=True)
        edit(state)
        torch.save(state, run / "last.pt")
    return damage


GOOD_ARGS = {"loss": "standalone", "dataset": "mnist", "feat_dim": 2, "epochs": 2, "model": "lenet"}


@pytest.mark.parametrize("make,phrases", [
    (lambda f, t: str(t / "nowhere"), ["no such run directory"]),
    (lambda f, t: str(only_args_json(t, "{not json")), ["args.json is not valid JSON",
                                                        "the run directory is damaged"]),
    (lambda f, t: str(only_args_json(t, "")), ["args.json is not valid JSON"]),
    (lambda f, t: str(only_args_json(t, "[1]")), ["not the args.json of a main.py run"]),
    (lambda f, t: str(only_args_json(t, '{"loss": "standalone"}')), ["not the args.json", "no 'dataset'"]),
    (lambda f, t: str(only_args_json(t, json.dumps({**GOOD_ARGS, "feat_dim": "two"}))),
     ["'feat_dim' is 'two'"]),
    (lambda f, t: str(only_args_json(t, json.dumps({**GOOD_ARGS, "loss": "bogus"}))),
     ["cannot resume", "unknown loss 'bogus'"]),
    (lambda f, t: str(only_args_json(t, json.dumps({**GOOD_ARGS, "lr": "fast"}))),
     ["cannot resume", "--lr must be a number"]),
    (lambda f, t: str(only_args_json(t, json.dumps({**GOOD_ARGS, "lr": float("nan")}))),
     ["cannot resume", "--lr must be a finite number"]),
    (lambda f, t: str(t), ["holds neither last.pt nor args.json"]),
    (lambda f, t: str(damaged_copy(f, t, edit_checkpoint(lambda s: s.update(args=[1, 2])))),
     ["last.pt is not a checkpoint of this project", "its args"]),
    (lambda f, t: str(damaged_copy(f, t, edit_checkpoint(lambda s: s["args"].pop("loss")))),
     ["last.pt is not a checkpoint of this project", "no 'loss'"]),
    (lambda f, t: str(damaged_copy(f, t, edit_checkpoint(lambda s: s["args"].update(momentum=float("nan"))))),
     ["cannot resume", "--momentum must be a finite number"]),
    (lambda f, t: str(damaged_copy(f, t, edit_checkpoint(lambda s: s.update(history="x")))),
     ["last.pt is not a checkpoint of this project"]),
    (lambda f, t: str(damaged_copy(f, t, lambda r: (r / "last.pt").write_bytes(b""))),
     ["last.pt is not a readable checkpoint: truncated or corrupt"]),
], ids=["missing", "args-garbage", "args-empty", "args-list", "args-missing-keys", "args-str-feat-dim",
        "args-unknown-loss", "args-str-lr", "args-nan-lr", "not-a-run", "ckpt-args-list",
        "ckpt-args-no-loss", "ckpt-nan-momentum", "ckpt-bad-history", "ckpt-empty"])
def test_bad_resume(finished, tmp_path, data_dir, capsys, make, phrases):
    root, _ = finished
    target = make(finished, tmp_path)
    before, before_target = tree(root), tree(target) if os.path.isdir(target) else None
    expect_exit(capsys, main.main, ["--resume", target, "--epochs", "2", "--data-dir", data_dir,
                                    "--no-progress"], 2, *phrases)
    assert tree(root) == before
    if before_target is not None:
        assert tree(target) == before_target


def test_foreign_checkpoint_gets_one_line_without_torch_advice(finished, tmp_path, data_dir, capsys):
    copy = damaged_copy(finished, tmp_path, lambda r: torch.save({"model": shutil.rmtree}, r / "last.pt"))
    message = expect_exit(capsys, main.main, ["--resume", str(copy), "--data-dir", data_dir], 2,
                          "objects other than tensors", "it was not loaded")
    assert "weights_only" not in message  # torch's advice to load it unsafely is not repeated


def test_resume_with_overwrite_says_they_contradict(finished, data_dir, capsys):
    root, run_dir = finished
    before = tree(root)
    expect_exit(capsys, main.main, ["--resume", str(run_dir), "--overwrite", "--data-dir", data_dir],
                2, "--resume continues a run and --overwrite starts it again")
    assert tree(root) == before


# ----------------------------------------------------------------------------- stops

def test_non_finite_in_the_first_epoch_says_no_checkpoint_exists(tmp_path, data_dir, capsys, monkeypatch):
    real = StandaloneCenterLoss.inter
    monkeypatch.setattr(StandaloneCenterLoss, "inter",
                        lambda self, f, y: real(self, f, y) * float("nan"))
    message = expect_exit(capsys, main.main, base(tmp_path, data_dir) + ["--log-interval", "1"], 3,
                          "'inter' is nan at epoch 1, step 1", "no epoch finished, so no checkpoint")
    assert "epoch 0" not in message
    run_dir = tmp_path / "log" / RUN
    assert not (run_dir / "last.pt").exists()
    assert message in (run_dir / "train.log").read_text().splitlines()


def test_ctrl_c_outside_the_epoch_loop_is_one_line(tmp_path, data_dir, capsys, monkeypatch):
    """main.py as a program: a KeyboardInterrupt while the data loads (or the pictures are
    drawn) is one line and exit 130; an in-process caller gets the KeyboardInterrupt."""
    import engine

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(engine, "load_data", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        main.main(base(tmp_path, data_dir), handle_signals=True)
    assert exit_info.value.code == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interrupted:"), err
    with pytest.raises(KeyboardInterrupt):
        main.main(base(tmp_path / "b", data_dir))


def test_sigterm_ends_an_in_process_caller(tmp_path, data_dir):
    """What the tests do (main.main inside another program) leaves SIGTERM's default, so
    `timeout` can stop a test run."""
    code = (f"import sys; sys.path.insert(0, {ROOT!r}); import main; "
            f"main.main({base(tmp_path, data_dir) + ['--epochs', '50']!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    log = tmp_path / "log" / RUN / "train.log"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not log.exists():
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM, err
    assert "interrupted" not in err


# ----------------------------------------------------------------------------- visualize.py

def write(name, text):
    return lambda run: (run / name).write_text(text)


def snapshot_edit(edit):
    def damage(run):
        path = run / "features" / "epoch_001.npz"
        arrays = dict(np.load(path))
        edit(arrays)
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    return damage


# (damage, phrases, whether the table refuses it too: it reads no snapshots, and lists a run
# without metrics as one that has not finished an epoch)
VISUALIZE_CASES = [
    (lambda r: (r / "features" / "epoch_001.npz").write_bytes(b"garbage" * 50),
     ["epoch_001.npz is not a readable feature snapshot"], False),
    (snapshot_edit(lambda a: a.pop("train_features")), ["epoch_001.npz", "no train_features"], False),
    (snapshot_edit(lambda a: a.update(train_features=a["train_features"][:5])),
     ["epoch_001.npz", "do not fit train_labels"], False),
    (snapshot_edit(lambda a: a.update(train_labels=a["train_labels"] + 50)),
     ["epoch_001.npz", "train_labels outside the 10 classes"], False),
    (snapshot_edit(lambda a: a.update(record=np.array("{bad"))), ["not a readable feature snapshot"],
     False),
    (lambda r: shutil.rmtree(r / "features"), ["has no feature snapshots"], False),
    (write("metrics.jsonl", "{bad\n{}\n"), ["metrics.jsonl: line 1 is not JSON"], True),
    (write("metrics.jsonl", "5\n"), ["metrics.jsonl: line 1 is not a record"], True),
    (write("metrics.jsonl", '{"lr": 1}\n'), ["metrics.jsonl: line 1 is not a record", "epoch"], True),
    (write("metrics.jsonl", '{"epoch": "one"}\n'), ["the epoch 'one' is not a whole number"], True),
    (write("metrics.jsonl", ""), ["has no metrics yet"], False),
    (lambda r: (r / "metrics.jsonl").write_bytes(b"\xff\xfe\n"), ["metrics.jsonl is not a text file"],
     True),
    (write("args.json", "{"), ["args.json is not valid JSON"], True),
    (write("args.json", "[]"), ["not the args.json of a main.py run"], True),
    (write("args.json", json.dumps({"loss": "standalone", "dataset": "mnist", "epochs": 1})),
     ["not the args.json", "no 'feat_dim'"], True),
    (write("args.json", json.dumps({**GOOD_ARGS, "feat_dim": "2"})), ["'feat_dim' is '2'"], True),
]


VISUALIZE_IDS = ["npz-garbage", "npz-no-key", "npz-shape", "npz-labels", "npz-record", "no-features",
                 "metrics-bad-line", "metrics-number", "metrics-no-epoch", "metrics-str-epoch",
                 "metrics-empty", "metrics-binary", "args-garbage", "args-list", "args-no-feat-dim",
                 "args-str-feat-dim"]


@pytest.mark.parametrize("damage,phrases,mode", [
    pytest.param(damage, phrases, mode, id=f"{mode}-{name}")
    for mode in ("draw", "table") for name, (damage, phrases, table) in zip(VISUALIZE_IDS, VISUALIZE_CASES)
    if mode == "draw" or table])
def test_visualize_a_damaged_run(finished, tmp_path, capsys, damage, phrases, mode):
    copy = damaged_copy(finished, tmp_path, damage)
    before = tree(tmp_path)
    argv = [str(copy), "--out-dir", str(tmp_path / "out")] + (["--table"] if mode == "table" else [])
    expect_exit(capsys, visualize.main, argv, 2, *phrases)
    assert tree(tmp_path) == before  # the run as it was, and no picture in --out-dir


@pytest.mark.parametrize("argv,phrases", [
    (lambda t, r: [], ["the following arguments are required: RUN_DIR"]),
    (lambda t, r: [str(t / "nowhere")], ["no such run directory"]),
    (lambda t, r: [str(t / "empty")], ["is empty: not a run directory"]),
    (lambda t, r: [r, "--out-dir", ""], ["--out-dir '' is not a folder name"]),
    (lambda t, r: [r, "--out-dir", "a\0b"], ["is not a folder name"]),
    (lambda t, r: [r, "--out-dir", str(t / "a-file" / "x")], ["cannot be written"]),
    (lambda t, r: [r, "--projection", "bogus"], ["invalid choice: 'bogus'"]),
    (lambda t, r: ["--table", str(t / "nowhere")], ["no such run directory"]),
    (lambda t, r: ["--tensorboard", str(t / "nowhere")], ["no such run directory"]),
], ids=["nothing", "missing", "empty", "out-dir-empty", "out-dir-nul", "out-dir-unwritable",
        "projection", "table-missing", "tensorboard-missing"])
def test_bad_visualize_argument(finished, tmp_path, capsys, argv, phrases):
    root, run_dir = finished
    (tmp_path / "empty").mkdir()
    (tmp_path / "a-file").write_text("x\n")
    before, here = tree(root), tree(tmp_path)
    expect_exit(capsys, visualize.main, argv(tmp_path, str(run_dir)), 2, *phrases)
    assert tree(root) == before and tree(tmp_path) == here


def test_visualize_reads_a_run_whose_last_line_is_torn(finished, tmp_path, capsys):
    def tear(run):
        with open(run / "metrics.jsonl", "a") as f:
            f.write('{"epoch": 2, "lr": 0.0')
    copy = damaged_copy(finished, tmp_path / "a", tear)
    before = tree(copy)
    visualize.main([str(copy), "--out-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning:") and "line 2 is cut short" in err[0], err
    assert_pictures(tmp_path / "out" / RUN, 1, 1)
    assert tree(copy) == before  # the reader skips the line; --resume is what repairs it


def test_visualize_tensorboard_on_a_damaged_snapshot(finished, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    copy = damaged_copy(finished, tmp_path, lambda r: (r / "features" / "epoch_001.npz")
                        .write_bytes(b"garbage"))
    expect_exit(capsys, visualize.main, ["--tensorboard", str(copy)], 2, "epoch_001.npz")


# ----------------------------------------------------------------------------- sweep.py

def grid(tmp_path, data_dir, *extra, after=()):
    return ["--loss", "xent", "--dataset", "mnist", "--log-dir", str(tmp_path / "log"), *extra,
            "--", "--data-dir", data_dir, "--no-download", "--epochs", "1", "--model", "lenet",
            "--subset", "128", "--batch-size", "32", "--no-plots", *after]


SWEEP_GRID_CASES = [
    (["--dry-run", "--loss", "bogus"], [], ["unknown loss 'bogus'"]),
    (["--dry-run", "--dataset", "bogus"], [], ["unknown dataset 'bogus'"]),
    (["--dry-run", "--feat-dim", "0"], [], ["--feat-dim must be positive"]),
    (["--dry-run", "--seed", "-1"], [], ["--seed must be from 0"]),
    (["--dry-run", "--time", "-5"], [], ["--time must be positive, got -5"]),
    (["--jobs", "0"], [], ["--jobs must be positive"]),
    (["--feat-dim", "x"], [], ["invalid int value: 'x'"]),
    (["--dry-run"], ["--loss", "cent"], ["pass --loss, --dataset, --feat-dim and --seed to sweep.py"]),
    (["--dry-run"], ["--loss=cent"], ["pass --loss, --dataset"]),
    (["--dry-run"], ["--los", "cent"], ["pass --loss, --dataset"]),  # argparse's abbreviation
    (["--dry-run"], ["--name", "x"], ["pass --loss, --dataset"]),
    (["--dry-run"], ["--overwrite"], ["--overwrite after --"]),
    (["--dry-run"], ["--lr", "nan"], ["xent-mnist-feat=2-seed0: --lr must be a finite number"]),
    (["--dry-run"], ["--momentum", "nan"], ["--momentum must be a finite number"]),
    (["--dry-run"], ["--bogus"], ["unrecognized arguments: --bogus"]),
    (["--dry-run"], ["--recipe", "tuned", "--recipe-file", "/nonexistent/t.json"], ["no tuned recipe"]),
    (["--dry-run", "--dataset", "folder:/nonexistent/images"], [], ["is not a folder"]),
    (["--launcher", "bogus"], [], ["invalid choice: 'bogus'"]),
    (["--log-dir", ""], [], ["--log-dir '' is not a folder name"]),
    (["--tune-seed", "-1", "--tune"], [], ["--tune-seed must be from 0"]),
    (["--tune", "--trials", "0"], [], ["--trials must be positive"]),
    (["--tune", "--dry-run"], ["--val-size", "20"], ["--tune sets --val-size of each xent trial"]),
    (["--tune", "--dry-run"], ["--lr", "0.1"], ["--tune sets --lr"]),
    (["--tune", "--dataset", "folder:/nonexistent/images"], [], ["is not a folder"]),
]


@pytest.mark.parametrize("extra,after,phrases", SWEEP_GRID_CASES,
                         ids=[" ".join(c[0] + ["--"] + c[1])[:60] for c in SWEEP_GRID_CASES])
def test_bad_sweep_grid(finished, tmp_path, data_dir, capsys, extra, after, phrases):
    root, _ = finished
    before = tree(root)
    expect_exit(capsys, sweep.main, grid(tmp_path, data_dir, *extra, after=after), 2, *phrases)
    assert tree(root) == before
    assert not (tmp_path / "log").exists()


def test_sweep_without_slurm(tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.setattr(sweep.shutil, "which", lambda name: None)
    expect_exit(capsys, sweep.main, grid(tmp_path, data_dir, "--launcher", "slurm"), 2, "slurm")


@pytest.mark.parametrize("where", ["log-dir", "recipe-file"])
def test_sweep_unwritable_folder_is_refused_before_anything_runs(tmp_path, data_dir, capsys, where):
    blocker = tmp_path / "a-file"
    blocker.write_text("x\n")
    if where == "log-dir":
        argv = grid(tmp_path, data_dir)
        argv[argv.index("--log-dir") + 1] = str(blocker / "log")
    else:
        argv = grid(tmp_path, data_dir, "--tune", "--val-size", "20", "--recipe-file",
                    str(blocker / "tuned.json"))
    start = time.perf_counter()
    expect_exit(capsys, sweep.main, argv, 2, str(blocker))
    assert time.perf_counter() - start < 5  # before any run or trial
    assert blocker.read_text() == "x\n"


def unreadable_run(tmp_path, finished):
    return str(damaged_copy(finished, tmp_path, write("metrics.jsonl", "5\n")))


@pytest.mark.parametrize("argv,phrases", [
    (lambda t, f: ["--table", str(t / "nowhere")], ["found no finished runs"]),
    (lambda t, f: ["--table", str(t / "empty")], ["found no finished runs"]),
    (lambda t, f: ["--table", unreadable_run(t, f)], ["found no finished runs"]),
    (lambda t, f: ["--table", "--log-dir", str(t / "empty")], ["found no finished runs"]),
    (lambda t, f: ["--gallery", str(t / "nowhere")], ["no finished runs"]),
    (lambda t, f: ["--gallery", unreadable_run(t, f)], ["no finished runs"]),
    (lambda t, f: ["--export", str(t / "a-file" / "x"), str(f[1])], ["--export folder", "cannot be written"]),
    (lambda t, f: ["--export", str(t / "a-file"), str(f[1])], ["cannot be written"]),
    (lambda t, f: ["--export", str(t / "out"), str(t / "nowhere")], ["no finished runs"]),
    (lambda t, f: ["--export", "", str(f[1])], ["--export '' is not a folder name"]),
    (lambda t, f: ["--report", str(t / "nowhere")], ["not a folder of run directories"]),
    (lambda t, f: ["--report", str(t / "a-file")], ["not a folder of run directories"]),
    (lambda t, f: ["--report", str(t / "empty")], ["found no run directories"]),
    (lambda t, f: ["--report", ""], ["--report '' is not a folder name"]),
    (lambda t, f: [str(f[1])], ["run directories are for --table, --gallery or --export"]),
], ids=["table-missing", "table-empty", "table-unreadable", "table-grid-none", "gallery-missing",
        "gallery-unreadable", "export-unwritable", "export-file", "export-none", "export-empty",
        "report-missing", "report-file", "report-empty", "report-empty-name", "runs-alone"])
def test_bad_sweep_results_command(finished, tmp_path, capsys, argv, phrases):
    root, _ = finished
    (tmp_path / "empty").mkdir()
    (tmp_path / "a-file").write_text("x\n")
    argv = argv(tmp_path, finished)
    before, here = tree(root), tree(tmp_path)
    expect_exit(capsys, sweep.main, argv, 2, *phrases, quiet=True)  # no table of "not run" rows
    assert tree(root) == before and tree(tmp_path) == here
