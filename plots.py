"""Pictures of a run, drawn from its run directory alone (rundir.py reads it):

    train.gif, val.gif   feat_dim 2: one frame per epoch (val: the evaluated epochs), fixed axes
    train.png, val.png   feat_dim > 2: a 2-D projection of the last epoch's features
    curves.png           per epoch: loss terms, accuracies, the clean train-test gap, lr,
                         distances and geometry, time
    centers.png          center-to-center distances; each class's distance to its center

"val" is the split evaluated every epoch: the held-out validation split, or the test split
under the published protocol (--val-size 0); the frame titles say which. Figures are drawn
on matplotlib's Agg canvas directly (no pyplot), so this works headless and leaves the
caller's backend alone.
"""
import os
import textwrap

import imageio.v3 as iio
import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

import datasets
from rundir import (atomic_write, epochs_done, epochs_text, last_snapshot_with, load_snapshot,
                    load_snapshots, loss_terms, normalize_record, read_run, snapshot_paths,
                    split_names, writable_dir)
from utils import UserError

FPS = 4            # GIF frames per second
HOLD_LAST_MS = 2000  # how long the GIF shows its last frame before looping


def class_names(dataset, num_classes, snap=None):
    """The names the legend shows: those the snapshot stored (folder: datasets, the seen
    classes of an open-set run), else the dataset's, else the class indices."""
    if snap is not None and "classes" in snap and len(snap["classes"]) == num_classes:
        return [str(n) for n in snap["classes"]]
    entry = datasets.DATASETS.get(datasets.canonical_name(str(dataset)))
    names = list(entry[1]) if entry is not None else []
    return names if len(names) == num_classes else [str(k) for k in range(num_classes)]


# ----------------------------------------------------------------------------- shared look

def class_colors(num_classes):
    """(num_classes, 4) RGBA: tab10, tab20 up to 20 classes, else evenly around hsv."""
    if num_classes <= 10:
        return colormaps["tab10"](np.arange(num_classes))
    if num_classes <= 20:
        return colormaps["tab20"](np.arange(num_classes))
    return colormaps["hsv"](np.linspace(0, 1, num_classes, endpoint=False))


def robust_limits(points, lo=0.5, hi=99.5, margin=0.15):
    """Square axis limits (x0, x1, y0, y1) around the lo..hi percentiles of (n, 2) points on
    each axis, widened by `margin` on each side: a few far outliers cannot shrink the rest."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    points = points[np.isfinite(points).all(axis=1)]
    if len(points) == 0:
        return (-1.0, 1.0, -1.0, 1.0)
    (x0, y0), (x1, y1) = np.percentile(points, [lo, hi], axis=0)
    half = max(x1 - x0, y1 - y0) / 2 * (1 + 2 * margin)
    if half <= 0:
        half = max(1.0, abs(x0), abs(y0)) * 0.1
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (cx - half, cx + half, cy - half, cy + half)


def point_size(n):
    """Marker area for n points: 1-2 for a whole dataset, larger for a few hundred."""
    return float(np.clip(2e4 / max(n, 1), 1.5, 16.0))


def as_2d(points):
    """1-D features are drawn on a line."""
    points = np.asarray(points, dtype=np.float32)
    return np.pad(points, ((0, 0), (0, 1))) if points.shape[1] == 1 else points


def save_figure(fig, path):
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=os.path.splitext(path)[1][1:]))


CENTER_SIZE = 160  # points^2: a ring about 13 points across


class ScatterFigure:
    """One figure reused for every frame: the points, the centers (hollow rings in the class
    colour with a black outline, so that a cluster drawn tight around its center stays
    visible inside the ring), a legend of class names beside the axes, fixed square limits.
    render() redraws only what changed and returns the frame as (H, W, 3) uint8; all frames
    have one size."""

    def __init__(self, names, limits, xlabel="feature 1", ylabel="feature 2", with_centers=True,
                 dpi=100, unseen_names=()):
        self.colors = class_colors(len(names) + len(unseen_names))
        self.unseen_colors = self.colors[len(names):]
        self.fig = Figure(figsize=(7.6, 6.2), dpi=dpi)
        FigureCanvasAgg(self.fig)
        ax = self.ax = self.fig.add_axes([0.11, 0.08, 0.66, 0.84])
        self.set_limits(limits)
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, lw=0.4, alpha=0.4)
        self.points = ax.scatter([], [], s=1, linewidths=0, alpha=0.7)
        self.unseen = ax.scatter([], [], s=1, marker="^", linewidths=0, alpha=0.7)
        ring = dict(s=CENTER_SIZE, marker="o", facecolors="none")
        self.center_outlines = ax.scatter([], [], edgecolors="black", linewidths=3.2, zorder=3, **ring)
        self.centers = ax.scatter([], [], linewidths=1.6, zorder=4, **ring)
        handles = [Line2D([], [], ls="none", marker="o", markersize=8, markeredgewidth=0,
                          markerfacecolor=c, label=name) for c, name in zip(self.colors, names)]
        handles += [Line2D([], [], ls="none", marker="^", markersize=8, markeredgewidth=0,
                           markerfacecolor=c, label=f"{name} (unseen)")
                    for c, name in zip(self.unseen_colors, unseen_names)]
        if with_centers:
            handles.append(Line2D([], [], ls="none", marker="o", markersize=10, markeredgewidth=2,
                                  markeredgecolor="black", markerfacecolor="none", label="center"))
        self.legend = ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                                frameon=False, fontsize=10, handletextpad=0.3, borderaxespad=0.0)
        self.title = ax.set_title("", fontsize=11)
        self.fit_legend()

    def fit_legend(self, pad=0.1):
        """Widen the figure until the legend's longest name fits (the axes keep their size
        and place in inches), once, before the first frame: every frame has one size."""
        width, height = self.fig.get_size_inches()
        right = self.legend.get_window_extent(self.fig.canvas.get_renderer()).x1 / self.fig.dpi
        if right + pad > width:
            left, bottom, w, h = self.ax.get_position(original=True).bounds
            scale = width / (right + pad)
            self.fig.set_size_inches(right + pad, height)
            self.ax.set_position([left * scale, bottom, w * scale, h])

    def set_limits(self, limits):
        self.ax.set_xlim(limits[0], limits[1])
        self.ax.set_ylim(limits[2], limits[3])

    def render(self, points, labels, centers, title, unseen=None, unseen_labels=None):
        """unseen: features of the classes held out of training, drawn as triangles."""
        labels = np.asarray(labels, dtype=np.int64)
        self.points.set_offsets(as_2d(points))
        self.points.set_facecolor(self.colors[labels])
        self.points.set_sizes([point_size(len(labels))])
        if unseen is None:
            unseen, unseen_labels = np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
        self.unseen.set_offsets(as_2d(unseen))
        self.unseen.set_facecolor(self.unseen_colors[np.asarray(unseen_labels, dtype=np.int64)])
        self.unseen.set_sizes([2 * point_size(len(labels))])
        if centers is None:
            centers = np.zeros((0, 2))
        centers = as_2d(centers)
        self.center_outlines.set_offsets(centers)
        self.centers.set_offsets(centers)
        self.centers.set_edgecolor(self.colors[:len(centers)])
        self.title.set_text(title)
        self.fig.canvas.draw()
        return np.asarray(self.fig.canvas.buffer_rgba())[..., :3].copy()

    def save(self, path):
        save_figure(self.fig, path)


def frame_title(args, split, record):
    """split: train or val (the snapshot's name of the split evaluated every epoch, which
    the title names as it is: val, or test under the published protocol)."""
    shown = split if split == "train" else split_names(args)[0]
    acc = record.get(f"{shown}_acc")
    acc = "" if acc is None else f"  |  acc {acc:.4f}"
    planned = "?" if args.get("epochs") is None else epochs_text(args["epochs"])
    return (f"{args['loss']}  |  {args['dataset']}  |  {shown}  |  "
            f"epoch {epochs_text(epochs_done(record))}/{planned}{acc}")


# ----------------------------------------------------------------------------- 2-D: GIFs

def shared_limits(snaps, max_points=1_000_000):
    """Limits fixed for every frame of both GIFs: robust over all epochs' train and val points
    (a strided subsample of them when there are many)."""
    sets = [s[k] for s in snaps for k in ("train_features", "val_features") if k in s]
    step = max(1, int(np.ceil(sum(len(x) for x in sets) / max_points)))
    return robust_limits(np.concatenate([as_2d(x[::step]) for x in sets]))


def draw_gif(snaps, split, path, args, names, limits):
    """One frame per snapshot that has this split's features; ~FPS frames per second, the last
    held HOLD_LAST_MS; loops forever."""
    snaps = [s for s in snaps if f"{split}_features" in s]
    if not snaps:
        return None
    unseen = [] if split == "train" else [s for s in snaps if "unseen_features" in s]
    unseen_names = [str(n) for n in unseen[-1]["unseen_classes"]] if unseen else []
    canvas = ScatterFigure(names, limits, unseen_names=unseen_names)
    frames = [canvas.render(s[f"{split}_features"], s[f"{split}_labels"], s["centers"],
                            frame_title(args, split, s["record"]),
                            s.get("unseen_features") if unseen_names else None,
                            s.get("unseen_labels"))
              for s in snaps]
    # Pillow takes one duration for a one-frame GIF, a list for more
    durations = [1000 // FPS] * (len(frames) - 1) + [HOLD_LAST_MS] if len(frames) > 1 else HOLD_LAST_MS
    atomic_write(path, lambda tmp: iio.imwrite(tmp, np.stack(frames), extension=".gif",
                                               duration=durations, loop=0))
    return path


# ----------------------------------------------------------------------------- high-D: projections

PROJECTIONS = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}  # flag -> name on the picture


def project(features, centers, method="pca", seed=0):
    """2-D embedding of (n, d) features with a library method. Returns the points, the
    centers in the same embedding (None where the method cannot map new points: t-SNE) and
    the axis labels."""
    features = np.asarray(features, dtype=np.float32)
    if method == "pca":
        from sklearn.decomposition import PCA
        pca = PCA(n_components=2, random_state=seed).fit(features)
        var = pca.explained_variance_ratio_ * 100
        return (pca.transform(features), pca.transform(centers),
                (f"PC1 ({var[0]:.0f}% of variance)", f"PC2 ({var[1]:.0f}% of variance)"))
    if method == "tsne":
        from sklearn.manifold import TSNE
        perplexity = min(30.0, max(2.0, (len(features) - 1) / 3))
        points = TSNE(n_components=2, perplexity=perplexity, init="pca",
                      random_state=seed).fit_transform(features)
        return points, None, ("t-SNE 1", "t-SNE 2")
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise UserError("--projection umap needs the umap-learn package "
                            "(pip install umap-learn)") from None
        reducer = umap.UMAP(n_components=2, random_state=seed).fit(features)
        return reducer.embedding_, reducer.transform(centers), ("UMAP 1", "UMAP 2")
    raise ValueError(f"unknown projection {method!r}; choose one of {', '.join(PROJECTIONS)}")


def draw_projection(snap, split, path, args, names, method):
    points, centers, (xlabel, ylabel) = project(snap[f"{split}_features"], snap["centers"], method)
    limits = robust_limits(points if centers is None else np.concatenate([points, centers]))
    canvas = ScatterFigure(names, limits, xlabel, ylabel, with_centers=centers is not None)
    canvas.render(points, snap[f"{split}_labels"], centers,
                  frame_title(args, split, snap["record"]))
    note = (f"{PROJECTIONS[method]} of the\n{snap[f'{split}_features'].shape[1]}-D features\n"
            f"of {len(points)} samples")
    if centers is None:
        note += f"\n({PROJECTIONS[method]} cannot\nplace the centers)"
    canvas.fig.text(0.79, 0.08, note, fontsize=9, color="dimgray", va="bottom")
    canvas.save(path)
    return path


# ----------------------------------------------------------------------------- curves, centers

def series(records, key):
    """(epochs done, values) of the records that have `key`: a partial last epoch's record
    sits where it ended (1.5, not 2)."""
    pairs = [(epochs_done(r), r[key]) for r in records if r.get(key) is not None]
    return (np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs], dtype=np.float64))


def off_diagonal(matrix):
    m = np.asarray(matrix, dtype=np.float64)
    return m[~np.eye(len(m), dtype=bool)]


def draw_curves(records, path, args):
    """Per epoch: loss and its terms; accuracies; the clean train-test gap (the evaluated
    weights on unaugmented training images against the deciding split); learning rate;
    distances; geometry (center distance over spread, NC1)."""
    d = split_names(args)[0]  # the split evaluated every epoch
    fig = Figure(figsize=(15, 8.5), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3).ravel()
    minutes = sum(r.get("seconds", 0) for r in records) / 60
    fig.suptitle(f"{args['loss']} on {args['dataset']}, feat_dim {args['feat_dim']}, "
                 f"{args.get('model', '?')} ({minutes:.1f} min)", fontsize=13)
    evaluated = [r for r in records if r.get(f"{d}_acc") is not None]

    ax = axes[0]
    ax.plot(*series(records, "train_loss"), color="black", lw=2, marker=".", label="loss")
    for term in loss_terms(records[-1]):
        ax.plot(*series(records, "train_" + term), marker=".", label=term)
    ax.set(title="training loss (weighted terms)", ylabel="loss")

    ax = axes[1]
    ax.plot(*series(records, "train_acc"), color="tab:blue", alpha=0.5, marker=".",
            label="train (running, augmented)")
    ax.plot(*series(records, "train_eval_acc"), color="tab:blue", marker=".", label="train (clean)")
    ax.plot(*series(records, f"{d}_acc"), color="tab:orange", marker=".", label=d)
    ax.plot(*series(records, f"{d}_nc_acc"), color="tab:orange", ls="--", label=f"{d}, nearest center")
    if d == "val":
        ax.plot(*series(records, "test_acc"), color="tab:red", marker="*", ls="none",
                markersize=10, label="test (read once)")
    ax.plot(*series(records, f"{d}_map_at_r"), color="tab:purple", marker=".", label=f"{d} MAP@R")
    ax.set(title="accuracy", ylabel="accuracy")

    ax = axes[2]
    clean = any(r.get("train_eval_acc") is not None for r in evaluated)
    train_key = "train_eval_acc" if clean else "train_acc"
    gap = [(epochs_done(r), r[train_key] - r[f"{d}_acc"]) for r in evaluated
           if r.get(train_key) is not None]
    ax.axhline(0, color="gray", lw=0.8)
    if gap:
        ax.plot(*zip(*gap), color="tab:red", marker=".", label=f"train acc - {d} acc")
    ax.set(title=f"train-{d} gap" + ("" if clean else " (running train acc: older run)"),
           ylabel="accuracy difference")

    ax = axes[3]
    ax.plot(*lr_curve(records), color="tab:green", label="lr")
    if any(r.get("lr_centers") is not None for r in records):
        ax.plot(*lr_curve(records, "lr_centers"), color="tab:olive", ls="--",
                label="centers' lr (--lr-cent)")
    ax.set_yscale("log")
    ax.set(title="learning rate", ylabel="lr")

    ax = axes[4]
    with_distances = [r for r in evaluated if r.get(f"{d}_center_distances") is not None]
    if with_distances:
        epochs = [epochs_done(r) for r in with_distances]
        ax.plot(epochs, [np.mean(r[f"{d}_dist_to_center_mean"]) for r in with_distances],
                marker=".", label="mean distance to own center")
        between = [off_diagonal(r[f"{d}_center_distances"]) for r in with_distances]
        ax.plot(epochs, [b.mean() for b in between], marker=".", label="mean center-to-center")
        ax.plot(epochs, [b.min() for b in between], marker=".", label="min center-to-center")
    ax.set(title=f"{d} feature distances" + (" (centers: class means)" if args["loss"] == "xent"
                                             else ""), ylabel="Euclidean distance")

    ax = axes[5]
    for split, style in ((d, "-"), ("train_eval", "--")):
        ax.plot(*series(records, f"{split}_center_ratio"), color="tab:brown", ls=style, marker=".",
                label=f"center distance / spread ({split})")
        ax.plot(*series(records, f"{split}_nc1"), color="tab:cyan", ls=style, marker=".",
                label=f"NC1 ({split})")
    if ax.get_legend_handles_labels()[0]:
        ax.set_yscale("log")
    ax.set(title="geometry (higher ratio, lower NC1: tighter classes)", ylabel="ratio")

    epoch_axes(axes, legend_size=8, span=(0, epochs_done(records[-1])))
    fig.tight_layout()
    save_figure(fig, path)
    return path


def lr_curve(records, key="lr"):
    """(epochs done, learning rate) as the run ran it: each epoch's lr from its start
    (epoch - 1) to its end, or under a per-step schedule the lr_steps the epoch recorded (the
    net's; another group, such as the centers', scaled by its ratio at the epoch's start)."""
    xs, ys = [], []
    for r in records:
        if r.get(key) is None:
            continue
        if r.get("lr_steps") and r.get("lr"):
            points = np.array(r["lr_steps"], dtype=np.float64) * [1.0, r[key] / r["lr"]]
        else:
            points = [(r["epoch"] - 1, r[key]), (epochs_done(r), r[key])]
        for x, y in points:
            xs.append(x)
            ys.append(y)
    return np.array(xs), np.array(ys, dtype=np.float64)


def epoch_axes(axes, legend_size=9, span=None):
    """The common finish of per-epoch panels: x in whole epochs (span: one range for all,
    so a run evaluated once does not get a panel of its own scale), a light grid, a legend."""
    for ax in axes:
        if span is not None:
            pad = 0.03 * max(span[1] - span[0], 1)
            ax.set_xlim(span[0] - pad, span[1] + pad)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, lw=0.4, alpha=0.5)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=legend_size)


def number(v):
    """Three significant digits, never in exponent notation."""
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:#.3g}"


def draw_centers(records, path, args, names):
    """The last evaluated epoch: the center-to-center distance matrix as a heatmap, and each
    class's mean distance to its center (std as error bars). None if no epoch was evaluated."""
    d = split_names(args)[0]
    evaluated = [r for r in records if r.get(f"{d}_center_distances") is not None]
    if not evaluated:
        return None
    r = evaluated[-1]
    dist = np.asarray(r[f"{d}_center_distances"], dtype=np.float64)
    n = len(dist)
    names = names[:n]
    fig = Figure(figsize=(15, 6.5), dpi=100)
    FigureCanvasAgg(fig)
    ax_map, ax_bar = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
    which = "class means of the train features" if args["loss"] == "xent" else "learned centers"
    fig.suptitle(f"{args['loss']} on {args['dataset']}, feat_dim {args['feat_dim']}: epoch "
                 f"{r['epoch']}, {d} features, {which}", fontsize=13)

    dist[np.eye(n, dtype=bool)] = np.nan  # the zero diagonal would only stretch the colours
    im = ax_map.imshow(dist, cmap="viridis")
    fig.colorbar(im, ax=ax_map, fraction=0.046, pad=0.04, label="distance")
    ax_map.set_xticks(range(n), names, rotation=45, ha="right", rotation_mode="anchor")
    ax_map.set_yticks(range(n), names)
    ax_map.set_title("center-to-center distance")
    if n <= 10:
        threshold = (np.nanmin(dist) + np.nanmax(dist)) / 2
        for i, j in zip(*np.nonzero(~np.eye(n, dtype=bool))):
            ax_map.text(j, i, number(dist[i, j]), ha="center", va="center", fontsize=8,
                        color="black" if dist[i, j] > threshold else "white")

    mean = np.asarray(r[f"{d}_dist_to_center_mean"], dtype=np.float64)
    std = np.asarray(r.get(f"{d}_dist_to_center_std", np.zeros(n)), dtype=np.float64)
    ax_bar.bar(range(n), mean, yerr=[np.minimum(std, mean), std],  # a distance is never < 0
               color=class_colors(n), capsize=3, edgecolor="black", lw=0.5)
    ax_bar.set_xticks(range(n), names, rotation=45, ha="right", rotation_mode="anchor")
    ax_bar.set(title="distance of each class's samples to its center (mean, std)",
               ylabel="distance to own center")
    ax_bar.grid(True, axis="y", lw=0.4, alpha=0.5)
    fig.tight_layout()
    save_figure(fig, path)
    return path


# ----------------------------------------------------------------------------- a whole run

def draw_run(run_dir, out_dir, projection="pca"):
    """Draw every picture of a run into out_dir; return the paths written."""
    args, records = read_run(run_dir)
    paths = snapshot_paths(run_dir)
    if not paths:
        raise UserError(f"{run_dir} has no feature snapshots (features/epoch_*.npz): "
                        f"nothing to draw")
    if projection not in PROJECTIONS:
        raise UserError(f"unknown projection {projection!r}; choose one of {', '.join(PROJECTIONS)}")
    writable_dir(out_dir, "the pictures' folder", create=False)
    written = []
    if args["feat_dim"] <= 2:
        snaps = load_snapshots(run_dir)  # a damaged one stops here, before any folder is made
        for snap in snaps:
            snap["record"] = normalize_record(snap["record"], args)
        names = class_names(args["dataset"], len(snaps[-1]["centers"]), snaps[-1])
        limits = shared_limits(snaps)
        writable_dir(out_dir, "the pictures' folder")
        for split in ("train", "val"):
            written.append(draw_gif(snaps, split, os.path.join(out_dir, f"{split}.gif"),
                                    args, names, limits))
    else:  # the last epoch; for val, the last epoch that was evaluated
        last = load_snapshot(paths[-1])
        names = class_names(args["dataset"], len(last["centers"]), last)
        val = last if "val_features" in last else last_snapshot_with(paths[:-1], "val_features")
        for snap in (last, val):
            if snap is not None:
                snap["record"] = normalize_record(snap["record"], args)
        writable_dir(out_dir, "the pictures' folder")
        for split, snap in (("train", last), ("val", val)):
            if snap is not None:
                written.append(draw_projection(snap, split, os.path.join(out_dir, f"{split}.png"),
                                               args, names, projection))
    written.append(draw_curves(records, os.path.join(out_dir, "curves.png"), args))
    written.append(draw_centers(records, os.path.join(out_dir, "centers.png"), args, names))
    return [p for p in written if p is not None]


# ----------------------------------------------------------------------------- many runs

def band(ax, runs, key_of, label, color):
    """Mean ± std over runs (seeds) of a per-epoch series, as a line and a shaded band."""
    per_epoch = {}
    for records in runs:
        for r in records:
            value = key_of(r)
            if value is not None and np.isfinite(value):
                per_epoch.setdefault(r["epoch"], []).append(value)
    if not per_epoch:
        return
    epochs = np.array(sorted(per_epoch))
    mean = np.array([np.mean(per_epoch[e]) for e in epochs])
    std = np.array([np.std(per_epoch[e]) for e in epochs])
    n = max(len(v) for v in per_epoch.values())
    ax.plot(epochs, mean, marker=".", color=color, label=f"{label} (n={n})")
    ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.2, lw=0)


def difference(a, b):
    def of(r):
        return None if r.get(a) is None or r.get(b) is None else r[a] - r[b]
    return of


def draw_study(groups, path, title):
    """The study's questions over the runs of one (dataset, feat_dim), by loss, mean ± std
    over seeds: the clean train - val gap (overfitting), and the mean center distance over
    the within-class spread and NC1 on the validation split (does softmax stop separating
    the classes once they are separable?). groups: {loss: [records of one seed, ...]}."""
    fig = Figure(figsize=(15, 4.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    colors = colormaps["tab10"](np.arange(10))
    for i, (loss, runs) in enumerate(groups.items()):
        band(axes[0], runs, difference("train_eval_acc", "val_acc"), loss, colors[i % 10])
        band(axes[1], runs, lambda r: r.get("val_center_ratio"), loss, colors[i % 10])
        band(axes[2], runs, lambda r: r.get("val_nc1"), loss, colors[i % 10])
    axes[0].axhline(0, color="gray", lw=0.8)
    axes[0].set(title="overfitting: clean train acc - val acc", ylabel="accuracy difference")
    axes[1].set(title="separation: center distance / within-class spread", ylabel="ratio")
    axes[2].set(title="NC1, within-class variability (lower: tighter)", ylabel="NC1")
    axes[2].set_yscale("log")
    epoch_axes(axes)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    save_figure(fig, path)
    return path


SECOND_TICKS = (5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 450, 600, 900, 1800, 3600)
ACCURACY_TICKS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.96, 0.97,
                  0.975, 0.98, 0.985, 0.99, 0.9925, 0.995, 0.997, 0.998, 0.999)


def draw_time_to_accuracy(curves, path, title, targets):
    """time_to_accuracy_figure, saved to path."""
    save_figure(time_to_accuracy_figure(curves, title, targets), path)
    return path


def time_to_accuracy_figure(curves, title, targets):
    """Test accuracy against wall seconds from the start of the process: one panel per
    {panel: {recipe: [run's [(seconds, acc), ...], ...]}}, one line per run in its recipe's
    color, the panel's target {panel: accuracy} dashed; shared, fixed axes. Seconds on a log
    axis and accuracy on a logit axis: a one-minute run beside a fifteen-minute one, and 0.99
    apart from 0.993 while a first evaluation at 0.6 stays in view."""
    fig = Figure(figsize=(4.2 * len(curves) + 1.8, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(curves), sharex=True, sharey=True, squeeze=False)[0]
    recipes = list(dict.fromkeys(r for by_recipe in curves.values() for r in by_recipe))
    colors = dict(zip(recipes, colormaps["tab10"](np.arange(len(recipes)))))
    points = [p for by_recipe in curves.values() for runs in by_recipe.values() for run in runs
              for p in run]
    seconds = [s for s, _ in points if s > 0] or [1.0]
    accs = [a for _, a in points] + list(targets.values())
    # the logit axis holds (0, 1): a chance-level or perfect evaluation sits on its edge
    low, high = max(min(accs), 0.01), min(max(accs), 0.999)
    for ax, (panel, by_recipe) in zip(axes, curves.items()):
        for recipe, runs in by_recipe.items():
            for run in runs:
                if run:
                    xs, ys = zip(*run)
                    ax.plot(xs, np.clip(ys, low, high), marker="o", ms=4, lw=1,
                            color=colors[recipe], alpha=0.8)
        ax.axhline(targets[panel], color="0.3", ls="--", lw=1)
        ax.set(title=panel, xlabel="wall seconds from the start (log)")
        ax.grid(True, lw=0.4, alpha=0.5)
    axes[0].set_xscale("log")
    axes[0].set_yscale("logit")
    xlim = (min(seconds) / 1.3, max(seconds) * 1.3)
    ticks = [t for t in SECOND_TICKS if xlim[0] <= t <= xlim[1]]
    odds = lambda a: np.log(a / (1 - a))  # noqa: E731  (the logit axis's coordinate)
    pad = 0.06 * (odds(high) - odds(low)) or 0.1
    ylim = tuple(1 / (1 + np.exp(-(odds(v) + d))) for v, d in ((low, -pad), (high, pad)))
    tenth = (odds(ylim[1]) - odds(ylim[0])) / 10
    yticks = sorted(set(targets.values()))  # the targets, then round values a tenth apart
    for t in ACCURACY_TICKS:
        if ylim[0] <= t <= ylim[1] and all(abs(odds(t) - odds(k)) >= tenth for k in yticks):
            yticks.append(t)
    yticks.sort()
    axes[0].set_xticks(ticks, [f"{t:g}" for t in ticks])
    axes[0].set_yticks(yticks, [f"{t:g}" for t in yticks])
    axes[0].minorticks_off()
    axes[0].set(ylabel="test accuracy (logit axis)", xlim=xlim, ylim=ylim)
    handles = [Line2D([], [], color=colors[r], marker="o", label=r) for r in recipes]
    handles.append(Line2D([], [], color="0.3", ls="--", label="target"))
    axes[-1].legend(handles=handles, fontsize=9, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 13)), fontsize=10)
    fig.tight_layout()
    return fig


def draw_budget(points, path, title, targets=None, xlabel="epochs"):
    """Test accuracy against the training budget: points {loss: [(budget, acc), ...]} (budget
    in epochs or seconds), mean ± std over the runs at each budget; targets {loss: accuracy}
    dashed in the loss's color (the published numbers)."""
    fig = Figure(figsize=(9.5, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = colormaps["tab10"](np.arange(10))
    ticks = set()
    for i, (loss, pairs) in enumerate(points.items()):
        budgets = sorted({b for b, _ in pairs})
        ticks.update(budgets)
        values = [[a for b2, a in pairs if b2 == b] for b in budgets]
        mean = np.array([np.mean(v) for v in values])
        std = np.array([np.std(v) for v in values])
        color = colors[i % 10]
        ax.errorbar(budgets, mean, yerr=std, marker="o", capsize=3, color=color, label=loss)
        for b, m, v in zip(budgets, mean, values):  # seeds per point: they may differ
            ax.annotate(f"n={len(v)}", (b, m), textcoords="offset points", xytext=(4, -10),
                        fontsize=7, color=color)
        if targets and targets.get(loss) is not None:
            ax.axhline(targets[loss], color=color, ls="--", lw=1,
                       label=f"{loss}, published {targets[loss]:.3f}")
    if xlabel == "epochs" and ticks:  # few budgets spread over a decade: a log axis, every one ticked
        ax.set_xscale("log")
        ax.set_xticks(sorted(ticks), [f"{t:g}" for t in sorted(ticks)])
        ax.minorticks_off()
    ax.set(title=title, xlabel=xlabel, ylabel="test accuracy")
    ax.grid(True, lw=0.4, alpha=0.5)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1))  # clear of points and lines
    fig.tight_layout()
    save_figure(fig, path)
    return path
