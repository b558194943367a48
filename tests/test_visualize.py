"""visualize.py: the pictures of a run (from real main.py runs and from written snapshots),
the fixed axis limits, the projections, the results table and the command line."""
import json
import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

import flags
import plots
import report
import rundir
import main
import visualize
from conftest import ROOT
from rundir import read_jsonl
from utils import UserError


def read_metrics(run_dir):
    return read_jsonl(os.path.join(run_dir, "metrics.jsonl"))


def gif_frames(path):
    frames = iio.imread(path, index=None)  # (frames, H, W, 3)
    with Image.open(path) as im:
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            durations.append(im.info["duration"])
        loop = im.info.get("loop")
    return frames, durations, loop


def assert_picture(path, min_side=300):
    with Image.open(path) as im:
        im.load()
        assert min(im.size) >= min_side, im.size
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.std() > 10  # something is drawn, not a blank canvas


def fake_run(root, loss="standalone", dataset="mnist", feat_dim=2, epochs=3, eval_every=1,
             n=300, model="lenet", name=None, seed=0):
    """A run directory as main.py writes it (args.json, metrics.jsonl, snapshots), with
    clustered features that spread out epoch by epoch. No training: fast."""
    run_dir = os.path.join(str(root), f"{loss}-{dataset}-feat={feat_dim}" + (f"-{name}" if name else ""))
    os.makedirs(run_dir)
    args = {"loss": loss, "dataset": dataset, "model": model, "feat_dim": feat_dim,
            "epochs": epochs, "weight_cent": 1.0, "weight_intra": 1.0, "weight_inter": 0.1,
            "inter_delta": 1.0, "lr": 0.01, "batch_size": 128, "eval_every": eval_every}
    with open(os.path.join(run_dir, "args.json"), "w") as f:
        json.dump(args, f)
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(10, feat_dim)) * 4
    train_labels, val_labels = rng.integers(0, 10, n), rng.integers(0, 10, n // 2)
    records = []
    for epoch in range(1, epochs + 1):
        spread = epoch / epochs
        centers = means * spread
        train = centers[train_labels] + rng.normal(size=(n, feat_dim))
        val = centers[val_labels] + rng.normal(size=(n // 2, feat_dim))
        record = {"epoch": epoch, "lr": 0.01 * 0.2 ** (epoch // 3), "train_loss": 1.0 / epoch,
                  "train_intra": 2.0 / epoch, "train_inter": -1.0 / epoch,
                  "train_acc": float(rng.uniform(0.5, 1)), "train_nc_acc": float(rng.uniform(0.5, 1)),
                  "seconds": 1.0}
        evaluating = epoch % eval_every == 0 or epoch == epochs
        if evaluating:
            between = np.linalg.norm(centers[:, None] - centers[None], axis=2)
            record.update({"test_acc": float(rng.uniform(0.5, 1)), "test_nc_acc": float(rng.uniform(0.5, 1)),
                           "test_dist_to_center_mean": rng.uniform(1, 2, 10).tolist(),
                           "test_dist_to_center_std": rng.uniform(0, 1, 10).tolist(),
                           "test_center_distances": between.tolist()})
        records.append(record)
        tensor = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))  # noqa: E731
        rundir.save_snapshot(run_dir, epoch, {
            "train_features": tensor(train), "train_labels": torch.from_numpy(train_labels),
            "val_features": tensor(val) if evaluating else None,
            "val_labels": torch.from_numpy(val_labels), "centers": tensor(centers)}, record)
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return run_dir


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory, data_dir):
    """Two real main.py runs that draw their pictures at the end: feat_dim 2 and 128."""
    tmp = tmp_path_factory.mktemp("runs")
    runs = {}
    # lr 0.0005: at 0.001 the 128-D center loss (about 90 at the start) diverged in the second
    # epoch on one CPU and not on another, the two taking different float paths
    for loss, feat_dim in (("standalone", 2), ("cent", 128)):
        argv = ["--loss", loss, "--dataset", "mnist", "--model", "lenet", "--feat-dim", str(feat_dim),
                "--epochs", "2", "--batch-size", "32", "--lr", "0.0005", "--data-dir", data_dir,
                "--no-download", "--log-dir", str(tmp / "log"), "--img-dir", str(tmp / "imgs"),
                "--no-progress"]
        runs[feat_dim] = main.train(*flags.parse_args(argv))
    return tmp, runs


def test_real_run_draws_gifs_curves_and_centers(real_runs):
    tmp, runs = real_runs
    run_dir = runs[2]
    out = tmp / "imgs" / os.path.basename(run_dir)
    with open(os.path.join(run_dir, "train.log")) as f:
        log = f.read()
    for name in ("train.gif", "val.gif", "curves.png", "centers.png"):
        assert (out / name).is_file(), name
        assert f"wrote {out / name}" in log  # main.py logs what draw_run returned
    assert not (out / "train.png").exists()
    epochs = len(read_metrics(run_dir))
    for split in ("train", "val"):
        frames, durations, loop = gif_frames(out / f"{split}.gif")
        assert len(frames) == epochs == 2
        assert len({f.shape for f in frames}) == 1 and frames.shape[1] >= 300
        assert durations[-1] >= 1500 and all(d <= 400 for d in durations[:-1])
        assert loop == 0  # forever
    assert_picture(out / "curves.png")
    assert_picture(out / "centers.png")


def test_real_run_draws_projections(real_runs):
    tmp, runs = real_runs
    out = tmp / "imgs" / os.path.basename(runs[128])
    for name in ("train.png", "val.png", "curves.png", "centers.png"):
        assert_picture(out / name)
    assert not (out / "train.gif").exists()


def test_gif_has_one_frame_per_epoch_and_val_per_evaluation(tmp_path):
    run_dir = fake_run(tmp_path, epochs=5, eval_every=2)
    paths = plots.draw_run(run_dir, str(tmp_path / "imgs"))
    assert sorted(os.path.basename(p) for p in paths) == ["centers.png", "curves.png",
                                                           "train.gif", "val.gif"]
    train, _, _ = gif_frames(tmp_path / "imgs" / "train.gif")
    val, _, _ = gif_frames(tmp_path / "imgs" / "val.gif")
    assert len(train) == 5 and len(val) == 3  # val: epochs 2, 4 and the last
    assert train.shape[1:] == val.shape[1:]


def test_a_long_class_name_widens_the_frame_instead_of_being_cut():
    """Fashion-MNIST's "Ankle boot (unseen)" ran past the frame's right edge: the figure
    widens to the legend, the axes keep their size, and every frame has the new size."""
    short = plots.ScatterFigure(["a", "b"], (-1, 1, -1, 1))
    long = plots.ScatterFigure(["T-shirt/top", "Trouser"], (-1, 1, -1, 1),
                               unseen_names=["Ankle boot", "a much longer class name"])
    renderer = long.fig.canvas.get_renderer()
    width_px = long.fig.get_size_inches()[0] * long.fig.dpi
    assert long.legend.get_window_extent(renderer).x1 <= width_px
    assert long.fig.get_size_inches()[0] > short.fig.get_size_inches()[0]
    size = lambda f: f.ax.get_position(original=True).width * f.fig.get_size_inches()[0]  # noqa: E731
    assert size(long) == pytest.approx(size(short))  # the axes, in inches
    frames = [long.render(np.random.default_rng(i).normal(size=(50, 2)), np.arange(50) % 2,
                          None, f"frame {i}", unseen=np.zeros((3, 2)),
                          unseen_labels=np.array([0, 1, 1])) for i in range(2)]
    assert frames[0].shape == frames[1].shape == (round(long.fig.get_size_inches()[1] * long.fig.dpi),
                                                  round(width_px), 3)
    assert short.fig.get_size_inches()[0] == pytest.approx(7.6)  # short names: as before


def test_a_tight_cluster_stays_visible_inside_a_center_marker():
    """A run whose clusters shrink to dots around their centers (standalone, cent) hid each
    cluster under a filled center marker: the ring is hollow, so the points inside it show,
    even where a class's points sit on another class's center; the ring is in its class colour."""
    canvas = plots.ScatterFigure(["a", "b"], (-10, 10, -10, 10))
    points = np.random.default_rng(0).normal(scale=0.05, size=(2000, 2))  # class b at (0, 0)
    frame = canvas.render(points, np.ones(2000, dtype=np.int64), np.array([[0.0, 0.0], [3.3, 3.7]]), "t")
    height = frame.shape[0]

    def pixel(xy):
        x, y = canvas.ax.transData.transform(xy)
        return frame[height - int(round(y)), int(round(x))].astype(float)

    colors = canvas.colors[:2, :3] * 255
    nearest = lambda rgb: int(np.argmin(((colors - rgb) ** 2).sum(axis=1)))  # noqa: E731
    assert nearest(pixel((0.0, 0.0))) == 1  # b's points, not a's marker
    assert np.abs(pixel((3.3, 3.7)) - 255).max() < 10  # an empty ring: the background inside
    radius = np.sqrt(plots.CENTER_SIZE) / 2 * canvas.fig.dpi / 72  # pixels
    x, y = canvas.ax.transData.transform((3.3, 3.7))
    ring = frame[height - int(round(y)), int(round(x + radius)) - 1].astype(float)
    assert np.abs(ring - colors[1]).max() < 40  # b's center: a ring in b's colour


def test_the_learning_rate_is_drawn_as_it_ran():
    """Each epoch's lr spans that epoch (from epochs done - 1 to epochs done), not the next
    one; under a per-step schedule the curve is the epoch's lr_steps, and the centers' group
    follows it at its own ratio."""
    per_epoch = [{"epoch": 1, "lr": 0.1}, {"epoch": 2, "lr": 0.02, "epoch_fraction": 0.5}]
    xs, ys = plots.lr_curve(per_epoch)
    assert xs.tolist() == [0, 1, 1, 1.5] and ys.tolist() == [0.1, 0.1, 0.02, 0.02]
    stepped = [{"epoch": 1, "lr": 0.01, "lr_centers": 0.05,
                "lr_steps": [[0.0, 0.01], [0.5, 0.1], [1.0, 0.04]]},
               {"epoch": 2, "lr": 0.04, "lr_centers": 0.2, "lr_steps": [[1.0, 0.04], [2.0, 0.0]]}]
    xs, ys = plots.lr_curve(stepped)
    assert xs.tolist() == [0, 0.5, 1, 1, 2] and ys.tolist() == [0.01, 0.1, 0.04, 0.04, 0.0]
    xs, ys = plots.lr_curve(stepped, "lr_centers")
    assert xs.tolist() == [0, 0.5, 1, 1, 2] and ys == pytest.approx([0.05, 0.5, 0.2, 0.2, 0.0])


def test_a_run_evaluated_once_shares_the_epoch_axis(tmp_path, monkeypatch):
    """A quick run evaluates once, after its last epoch: its panels of one point got an axis of
    their own (1.90 to 2.10); every panel now spans the run, 0 to the epochs done."""
    run_dir = fake_run(tmp_path, epochs=3, eval_every=1000)
    records = read_metrics(run_dir)
    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig))
    plots.draw_curves(records, str(tmp_path / "curves.png"),
                      json.load(open(os.path.join(run_dir, "args.json"))))
    limits = {ax.get_xlim() for ax in figures[0].axes}
    assert len(limits) == 1
    (lo, hi), = limits
    assert lo < 0 < 3 < hi < 3.2
    # a partial last epoch (2.5 epochs): every series ends where the run did
    records[-1]["epoch_fraction"] = 0.5
    plots.draw_curves(records, str(tmp_path / "curves.png"),
                      json.load(open(os.path.join(run_dir, "args.json"))))
    ends = {line.get_label(): max(line.get_xdata()) for ax in figures[1].axes
            for line in ax.get_lines()
            if not line.get_label().startswith("_") and len(line.get_xdata())}
    assert len(ends) >= 8 and set(ends.values()) == {2.5}, ends


def test_limits_ignore_a_single_outlier():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(10_000, 2))
    points[123] = (1e6, -1e6)
    x0, x1, y0, y1 = plots.robust_limits(points)
    assert -10 < x0 < -2 and 2 < x1 < 10 and -10 < y0 < -2 and 2 < y1 < 10
    assert x1 - x0 == pytest.approx(y1 - y0)  # square, for the equal aspect
    inside = (points[:, 0] > x0) & (points[:, 0] < x1) & (points[:, 1] > y0) & (points[:, 1] < y1)
    assert inside.mean() > 0.995
    # The GIFs' limits are those of all epochs together: the widest epoch fits.
    small = [{"train_features": points[:5000] * 0.01}, {"train_features": points[5000:] * 3}]
    lx0, lx1, _, _ = plots.shared_limits(small)
    assert lx0 < -5 and lx1 > 5


@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
def test_projection(method):
    if method == "umap":
        pytest.importorskip("umap")
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(10, 16)) * 5
    labels = rng.integers(0, 10, 200)
    features = centers[labels] + rng.normal(size=(200, 16))
    points, projected, axis_labels = plots.project(features, centers, method)
    assert points.shape == (200, 2) and np.isfinite(points).all() and len(axis_labels) == 2
    if method == "tsne":
        assert projected is None  # t-SNE cannot place new points
    else:
        assert projected.shape == (10, 2)
    if method == "pca":  # the classes stay apart: each point is nearest its own projected center
        d = ((points[:, None] - projected[None]) ** 2).sum(-1)
        assert (d.argmin(1) == labels).mean() > 0.9


def parse_table(text):
    lines = [line for line in text.strip().splitlines()]
    header = [c.strip() for c in lines[0].strip().strip("|").split("|")]
    assert set(lines[1].replace("|", "").replace(" ", "")) == {"-"}
    return [dict(zip(header, (c.strip() for c in line.strip().strip("|").split("|"))))
            for line in lines[2:]]


def test_results_table_parses_back_to_the_metrics(tmp_path, real_runs):
    readme = tmp_path / "README.md"  # as in `--table log/*`: plain files are skipped
    readme.write_text("not a run\n")
    dirs = [fake_run(tmp_path, "standalone", "cifar10", 128, seed=1),
            fake_run(tmp_path, "xent", "cifar10", 128, seed=2),
            fake_run(tmp_path, "cent", "mnist", 2, seed=3),
            fake_run(tmp_path, "xent", "fashion-mnist", 2, epochs=4, eval_every=3, seed=4),
            real_runs[1][128], real_runs[1][2], str(readme)]
    rows = parse_table(report.runs_table(dirs))
    assert [(r["dataset"], r["feat_dim"], r["loss"]) for r in rows] == [
        ("mnist", "2", "cent"), ("mnist", "2", "standalone"), ("mnist", "128", "cent"),
        ("fashion-mnist", "2", "xent"), ("cifar10", "128", "xent"), ("cifar10", "128", "standalone")]
    by_run = {r["run"]: r for r in rows}
    for d in dirs[:-1]:
        row = by_run[os.path.basename(d)]
        val = [r["test_acc"] for r in read_metrics(d) if "test_acc" in r]
        assert float(row["test acc"]) == pytest.approx(val[-1], abs=5e-5)  # never a best over epochs
        assert row["protocol"] == "published"
        assert row["epochs"] == str(len(read_metrics(d)))
    assert by_run["cent-mnist-feat=2"]["weights"] == "w_cent=1"
    assert by_run["standalone-cifar10-feat=128"]["weights"] == "w_intra=1, w_inter=0.1, delta=1"
    assert by_run["cent-mnist-feat=128"]["model"] == "lenet"
    # retrieval columns: the last evaluation's, "-" for runs without them (the fake ones)
    for d in dirs[:-1]:
        row, last = by_run[os.path.basename(d)], read_metrics(d)[-1]
        if "test_map_at_r" in last:
            assert float(row["MAP@R"]) == pytest.approx(last["test_map_at_r"], abs=5e-5)
            assert float(row["P@1"]) == pytest.approx(last["test_precision_at_1"], abs=5e-5)
            assert float(row["R-prec"]) == pytest.approx(last["test_r_precision"], abs=5e-5)
        else:
            assert row["MAP@R"] == row["P@1"] == row["R-prec"] == "-"


def test_results_table_orders_the_new_objectives_after_the_three(tmp_path):
    losses = ["arcface", "margin", "xent", "cosface", "center-softmax", "standalone",
              "center-push", "cent", "some-future-loss"]
    dirs = [fake_run(tmp_path, loss, epochs=1, n=40, seed=i) for i, loss in enumerate(losses)]
    rows = parse_table(report.runs_table(dirs))
    assert [r["loss"] for r in rows] == ["xent", "cent", "standalone", "center-push",
                                         "center-softmax", "margin", "cosface", "arcface",
                                         "some-future-loss"]
    assert "MAP@R" not in rows[0]  # no run has retrieval metrics: no such column
    by_loss = {r["loss"]: r for r in rows}
    assert by_loss["cosface"]["weights"] == "scale=64, margin=0.35"  # defaults: not in the args
    assert by_loss["some-future-loss"]["weights"] == "-"


def test_cli_draws_and_prints_the_table(tmp_path, capsys):
    run_dir = fake_run(tmp_path / "log", "xent", "fashion-mnist", 8, epochs=2)
    visualize.main([run_dir, "--out-dir", str(tmp_path / "imgs")])
    printed = capsys.readouterr().out.split()
    out = tmp_path / "imgs" / os.path.basename(run_dir)
    assert sorted(printed) == sorted(str(out / n) for n in ("train.png", "val.png", "curves.png",
                                                            "centers.png"))
    visualize.main(["--table", run_dir])
    (row,) = parse_table(capsys.readouterr().out)
    assert (row["loss"], row["dataset"], row["feat_dim"], row["weights"]) == ("xent", "fashion-mnist", "8", "-")


def test_runs_without_metrics_or_snapshots_are_refused(tmp_path):
    run_dir = fake_run(tmp_path, epochs=1)
    os.remove(os.path.join(run_dir, "metrics.jsonl"))
    with pytest.raises(UserError, match="no metrics"):
        plots.draw_run(run_dir, str(tmp_path / "imgs"))
    run_dir = fake_run(tmp_path, "xent", epochs=1)
    for name in os.listdir(os.path.join(run_dir, "features")):
        os.remove(os.path.join(run_dir, "features", name))
    with pytest.raises(UserError, match="no feature snapshots"):
        plots.draw_run(run_dir, str(tmp_path / "imgs"))


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_cli_bad_run_dir_is_one_line(tmp_path, case):
    run_dir = tmp_path / "log" / "standalone-mnist-feat=2"
    if case == "empty":
        run_dir.mkdir(parents=True)
    result = subprocess.run([sys.executable, os.path.join(ROOT, "visualize.py"), str(run_dir),
                             "--out-dir", str(tmp_path / "imgs")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(run_dir) in lines[0], result.stderr
    assert not (tmp_path / "imgs").exists()
