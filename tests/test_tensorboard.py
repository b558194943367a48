"""--tensorboard and visualize.py --tensorboard: the event files read back with TensorBoard's
own EventAccumulator. Per-epoch scalars equal metrics.jsonl, per-step terms every
--log-interval steps, frames for 2-D runs, the projector for 128-D runs, a SIGKILLed and
resumed run without duplicate or backwards steps, one line when the package is missing."""
import io
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

import flags
import rundir
import main
import tboard
import visualize
from conftest import ROOT
from test_failures import tree
from test_visualize import fake_run
from rundir import read_jsonl

STEPS = 512 // 64  # the fake MNIST's training split in batches of 64


def argv_of(tmp_path, data_dir, *more):
    return ["--data-dir", data_dir, "--no-download", "--log-dir", str(tmp_path / "log"),
            "--img-dir", str(tmp_path / "imgs"), "--no-progress", "--no-plots",
            "--batch-size", "64", "--tensorboard", *more]


def events(run_dir):
    acc = EventAccumulator(os.path.join(run_dir, "tb"),
                           size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def steps_of(acc, tag):
    return [e.step for e in acc.Scalars(tag)]


def assert_scalars_equal_metrics(acc, records, dataset):
    """Each per-epoch tag: one value per epoch, the record's (float32 in the event file)."""
    expected = {}
    for r in records:
        for tag, value in tboard.epoch_scalars(r, dataset).items():
            expected.setdefault(tag, []).append((r["epoch"], value))
    for tag, points in expected.items():
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in points], tag
        assert [v for _, v in got] == pytest.approx([v for _, v in points], rel=1e-6, abs=1e-30), tag
    return expected


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("tb2d")
    return main.train(*flags.parse_args(argv_of(tmp, data_dir, "--epochs", "2", "--log-interval", "3")))


def test_scalars_steps_and_frames_of_a_2d_run(run_2d):
    records = read_jsonl(os.path.join(run_2d, "metrics.jsonl"))
    acc = events(run_2d)
    expected = assert_scalars_equal_metrics(acc, records, "mnist")
    # names that group: train/, val/, lr, distances/ (every class, every pair of centers once)
    for tag, key in (("train/loss", "train_loss"), ("train/intra", "train_intra"),
                     ("train/inter", "train_inter"), ("train/acc", "train_acc"),
                     ("test/acc", "test_acc"), ("test/nc_acc", "test_nc_acc"), ("lr", "lr"),
                     ("seconds", "seconds")):
        assert [e.value for e in acc.Scalars(tag)] == pytest.approx([r[key] for r in records], rel=1e-6)
    assert acc.Scalars("distances/to_center_mean/7")[-1].value == pytest.approx(
        records[-1]["test_dist_to_center_mean"][7], rel=1e-6)
    assert acc.Scalars("distances/center_to_center/3_vs_8")[-1].value == pytest.approx(
        records[-1]["test_center_distances"][3][8], rel=1e-6)
    assert sum(t.startswith("distances/") for t in expected) == 10 + 10 + 45

    # per-step terms at the log points (every 3 steps and the epoch's last), global steps
    step_tags = {"step/loss", "step/intra", "step/inter"}
    assert set(acc.Tags()["scalars"]) == set(expected) | step_tags
    points = [(e - 1) * STEPS + s for e in (1, 2) for s in (3, 6, 8)]
    for tag in step_tags:
        assert steps_of(acc, tag) == points, tag
    # each value is the mean since the previous point: weighted, they give the epoch's mean
    for epoch, r in enumerate(records, 1):
        values = [e.value for e in acc.Scalars("step/loss")][3 * (epoch - 1):3 * epoch]
        assert np.dot(values, [3, 3, 2]) / STEPS == pytest.approx(r["train_loss"], rel=1e-5, abs=1e-6)

    # one frame per epoch and split, as the GIF draws it
    for split in ("train", "val"):
        frames = acc.Images(f"features/{split}")
        assert [f.step for f in frames] == [1, 2]
        with Image.open(io.BytesIO(frames[-1].encoded_image_string)) as im:
            assert im.size == (760, 620)
            assert np.asarray(im.convert("RGB")).std() > 10
    assert not os.path.exists(os.path.join(run_2d, "tb", "projector_config.pbtxt"))


def test_embedding_of_a_128d_run(tmp_path, data_dir):
    run_dir = main.train(*flags.parse_args(argv_of(
        tmp_path, data_dir, "--dataset", "fashion-mnist", "--feat-dim", "128", "--epochs", "1",
        "--snapshot-size", "100")))
    acc = events(run_dir)
    assert acc.Tags()["images"] == []  # frames are for 2-D features
    assert "distances/to_center_mean/T-shirt_top" in acc.Tags()["scalars"]
    assert_scalars_equal_metrics(acc, read_jsonl(os.path.join(run_dir, "metrics.jsonl")),
                                 "fashion-mnist")

    tb = os.path.join(run_dir, "tb")
    with open(os.path.join(tb, "projector_config.pbtxt")) as f:
        config = text_format.Parse(f.read(), ProjectorConfig())
    [embedding] = config.embeddings
    snap = rundir.load_snapshot(rundir.snapshot_paths(run_dir)[-1])
    tensor = np.loadtxt(os.path.join(tb, embedding.tensor_path), delimiter="\t", ndmin=2)
    np.testing.assert_allclose(tensor, snap["val_features"], rtol=1e-5, atol=1e-6)
    assert tensor.shape == (100, 128)
    with open(os.path.join(tb, embedding.metadata_path)) as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    assert rows[0] == ["label", "class"]
    assert [int(r[0]) for r in rows[1:]] == snap["val_labels"].tolist()
    assert "T-shirt/top" in {r[1] for r in rows[1:]} or "Trouser" in {r[1] for r in rows[1:]}
    assert list(embedding.sprite.single_image_dim) == [28, 28]
    with Image.open(os.path.join(tb, embedding.sprite.image_path)) as sprite:
        assert sprite.size == (10 * 28, 10 * 28)  # 100 thumbnails, 10 x 10


def test_sigkill_and_resume_continue_the_curves(tmp_path, data_dir):
    """Killed in epoch 2 after some of its per-step events reached the file: the resumed run's
    events have every tag's steps strictly increasing, and what the stopped run wrote of
    epoch 2 is gone (TensorBoard's purge)."""
    argv = argv_of(tmp_path, data_dir, "--epochs", "3", "--log-interval", "2")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py"), *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run_dir = str(tmp_path / "log" / "standalone-mnist-feat=2")
    deadline, seen = time.time() + 240, []
    while time.time() < deadline and proc.poll() is None:
        if os.path.isdir(os.path.join(run_dir, "tb")):
            acc = events(run_dir)
            seen = steps_of(acc, "step/loss") if "step/loss" in acc.Tags()["scalars"] else []
            if seen and seen[-1] >= STEPS + 4:  # two log points into epoch 2
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert max(seen) > STEPS and len(read_jsonl(os.path.join(run_dir, "metrics.jsonl"))) < 3

    main.train(*flags.parse_args(["--resume", run_dir, "--no-progress", "--no-plots",
                                 "--data-dir", data_dir]))
    acc = events(run_dir)
    for tag in acc.Tags()["scalars"]:
        steps = steps_of(acc, tag)
        assert all(a < b for a, b in zip(steps, steps[1:])), (tag, steps)
    assert steps_of(acc, "step/loss") == list(range(2, 3 * STEPS + 1, 2))
    assert_scalars_equal_metrics(acc, read_jsonl(os.path.join(run_dir, "metrics.jsonl")), "mnist")
    frames = [f.step for f in acc.Images("features/val")]
    assert frames[-2:] == [2, 3] and len(set(frames)) == len(frames)  # epoch 1's may be lost


def test_an_epoch_logged_but_not_in_the_events_is_written_on_resume(tmp_path, data_dir,
                                                                    monkeypatch):
    """Stopped after epoch 2 reached metrics.jsonl and before its events did: the resumed run
    writes them (scalars and frame), once, in order."""
    written = tboard.Board.epoch

    def stop_at_two(board, record, limits=None):
        if record["epoch"] == 2:
            raise KeyboardInterrupt
        written(board, record, limits)

    monkeypatch.setattr(tboard.Board, "epoch", stop_at_two)
    with pytest.raises(KeyboardInterrupt):
        main.train(*flags.parse_args(argv_of(tmp_path, data_dir, "--epochs", "3")))
    monkeypatch.undo()
    run_dir = str(tmp_path / "log" / "standalone-mnist-feat=2")
    assert len(read_jsonl(os.path.join(run_dir, "metrics.jsonl"))) == 2
    assert steps_of(events(run_dir), "lr") == [1]

    main.train(*flags.parse_args(["--resume", run_dir, "--no-progress", "--no-plots",
                                 "--data-dir", data_dir]))
    acc = events(run_dir)
    assert_scalars_equal_metrics(acc, read_jsonl(os.path.join(run_dir, "metrics.jsonl")), "mnist")
    assert sorted(f.step for f in acc.Images("features/val")) == [1, 2, 3]


def test_visualize_replays_a_finished_run(run_2d, tmp_path, capsys):
    """The same module from the run directory alone: the per-epoch tags and frames of the live
    run (the per-step terms exist only live)."""
    copy = str(tmp_path / os.path.basename(run_2d))
    shutil.copytree(run_2d, copy, ignore=shutil.ignore_patterns("tb"))
    subprocess.run([sys.executable, os.path.join(ROOT, "visualize.py"), "--tensorboard", copy],
                   check=True, capture_output=True, timeout=300)
    live, replayed = events(run_2d), events(copy)
    live_tags = [t for t in live.Tags()["scalars"] if not t.startswith("step/")]
    assert sorted(replayed.Tags()["scalars"]) == sorted(live_tags)
    for tag in live_tags:
        assert ([(e.step, e.value) for e in replayed.Scalars(tag)]
                == [(e.step, e.value) for e in live.Scalars(tag)]), tag
    assert [f.step for f in replayed.Images("features/train")] == [1, 2]

    with pytest.raises(SystemExit) as exit_info:  # a second time: one line, nothing replaced
        visualize.main(["--tensorboard", copy])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "holds TensorBoard events already" in err[0]


def test_replay_of_written_snapshots(tmp_path):
    """Evaluation every 2nd epoch: val frames only where there are val features; above 2-D an
    embedding without thumbnails when the run's images cannot be found."""
    run_dir = fake_run(tmp_path, epochs=3, eval_every=2)
    tboard.replay(run_dir)
    acc = events(run_dir)
    assert [f.step for f in acc.Images("features/train")] == [1, 2, 3]
    assert [f.step for f in acc.Images("features/val")] == [2, 3]
    assert_scalars_equal_metrics(acc, read_jsonl(os.path.join(run_dir, "metrics.jsonl")), "mnist")

    high = fake_run(tmp_path, feat_dim=5, epochs=2)
    tboard.replay(high)
    with open(os.path.join(high, "tb", "projector_config.pbtxt")) as f:
        config = text_format.Parse(f.read(), ProjectorConfig())
    [embedding] = config.embeddings
    assert embedding.tensor_name == "val_features:00002" and not embedding.sprite.image_path


def hide_tensorboard(monkeypatch):
    for name in ("tensorboard", "torch.utils.tensorboard"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError


def test_without_the_package_one_line_and_no_file(tmp_path, data_dir, monkeypatch, capsys):
    hide_tensorboard(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        main.main(argv_of(tmp_path, data_dir, "--epochs", "1"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install tensorboard" in err[0], err
    assert not (tmp_path / "log").exists()

    run_dir = fake_run(tmp_path / "runs")
    before = tree(tmp_path / "runs")
    with pytest.raises(SystemExit) as exit_info:
        visualize.main(["--tensorboard", run_dir])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install tensorboard" in err[0], err
    assert tree(tmp_path / "runs") == before
