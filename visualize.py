"""Feature snapshots of a run -> GIFs (2-D), projections (high-D), curves, center distances,
and the results table over many runs.

    python visualize.py log/<run> [log/<run2> ...]   # redraw imgs/<run>/ from the run directory
    python visualize.py log/<run> --projection tsne  # high-D features: pca (default), tsne, umap
    python visualize.py --table log/*                # Markdown table of many runs
    python visualize.py --tensorboard log/<run>      # TensorBoard events in log/<run>/tb/ (tboard.py)

What a run gets in imgs/<run>/:
    train.gif, val.gif   feat_dim 2: one frame per epoch (val: the evaluated epochs), fixed axes
    train.png, val.png   feat_dim > 2: a 2-D projection of the last epoch's features
    curves.png           per epoch: loss terms, accuracies, train-val gap, lr, distances, time
    centers.png          center-to-center distances; each class's distance to its center

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so this works headless and
leaves the caller's backend alone.
"""
import glob
import json
import os
import sys

import imageio.v3 as iio
import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

import datasets
import losses
from utils import OneLineParser, UserError, atomic_write, error_exit, loss_terms, read_jsonl

LOSS_ORDER = ("xent", "cent", "standalone", "center-push", "center-softmax", "margin", "cosface",
              "arcface")
FPS = 4            # GIF frames per second
HOLD_LAST_MS = 2000  # how long the GIF shows its last frame before looping


# ----------------------------------------------------------------------------- snapshots
# log/<run>/features/epoch_NNN.npz: train_features, train_labels, val_features (absent on
# epochs without evaluation), val_labels, centers, and the epoch's metrics as JSON.

def snapshot_indices(n, feat_dim, size, device=None):
    """Which samples a split's snapshots keep: all of them for 2-D features; above that a
    fixed random subset of `size`, the same every epoch."""
    if feat_dim <= 2 or n <= size:
        return torch.arange(n, device=device)
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:size]
    return keep.sort().values.to(device)


def save_snapshot(run_dir, epoch, train_features, train_labels, val_features, val_labels,
                  centers, record):
    folder = os.path.join(run_dir, "features")
    os.makedirs(folder, exist_ok=True)
    arrays = {"train_features": train_features, "train_labels": train_labels,
              "val_labels": val_labels, "centers": centers}
    if val_features is not None:
        arrays["val_features"] = val_features
    arrays = {k: v.detach().cpu().numpy() for k, v in arrays.items()}
    for k in ("train_labels", "val_labels"):
        arrays[k] = arrays[k].astype(np.int16)
    arrays["record"] = np.array(json.dumps(record))

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    atomic_write(os.path.join(folder, f"epoch_{epoch:03d}.npz"), write)


def snapshot_paths(run_dir):
    return sorted(glob.glob(os.path.join(run_dir, "features", "epoch_*.npz")))


def load_snapshot(path):
    """One snapshot: a dict of numpy arrays plus `record` (the epoch's metrics)."""
    with np.load(path) as z:
        snap = {k: z[k] for k in z.files if k != "record"}
        snap["record"] = json.loads(str(z["record"]))
    return snap


def last_snapshot_with(paths, key):
    for path in reversed(paths):
        snap = load_snapshot(path)
        if key in snap:
            return snap
    return None


def load_snapshots(run_dir):
    """The snapshots of a run in epoch order, each a dict of numpy arrays plus `record`."""
    return [load_snapshot(p) for p in snapshot_paths(run_dir)]


# ----------------------------------------------------------------------------- run directory

def read_run(run_dir, need_metrics=True):
    """args.json and metrics.jsonl of a run directory, checked: a UserError (one line) for a
    missing or empty directory, or one that is not a run."""
    if not os.path.isdir(run_dir):
        raise UserError(f"{run_dir}: no such run directory")
    if not os.listdir(run_dir):
        raise UserError(f"{run_dir} is empty: not a run directory (nothing trained there yet?)")
    try:
        with open(os.path.join(run_dir, "args.json")) as f:
            args = json.load(f)
    except FileNotFoundError:
        raise UserError(f"{run_dir} has no args.json: not a run directory of main.py") from None
    except ValueError as e:
        raise UserError(f"{run_dir}/args.json is not valid JSON: {e}") from None
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    try:
        records = read_jsonl(metrics_path) if os.path.exists(metrics_path) else []
    except ValueError as e:
        raise UserError(f"{metrics_path} has a line that is not JSON: {e}") from None
    if need_metrics and not records:
        raise UserError(f"{run_dir} has no metrics yet (metrics.jsonl missing or empty): "
                        f"no epoch has finished")
    return args, records


def class_names(dataset, num_classes):
    names = datasets.DATASETS.get(datasets.canonical_name(str(dataset)), (None, []))[1]
    return list(names) if len(names) == num_classes else [str(k) for k in range(num_classes)]


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


class ScatterFigure:
    """One figure reused for every frame: the points, the centers (black-edged X in the class
    colour), a legend of class names beside the axes, fixed square limits. render() redraws
    only what changed and returns the frame as (H, W, 3) uint8; all frames have one size."""

    def __init__(self, names, limits, xlabel="feature 1", ylabel="feature 2", with_centers=True,
                 dpi=100):
        self.colors = class_colors(len(names))
        self.fig = Figure(figsize=(7.6, 6.2), dpi=dpi)
        FigureCanvasAgg(self.fig)
        ax = self.ax = self.fig.add_axes([0.11, 0.08, 0.66, 0.84])
        self.set_limits(limits)
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, lw=0.4, alpha=0.4)
        self.points = ax.scatter([], [], s=1, linewidths=0, alpha=0.7)
        self.centers = ax.scatter([], [], s=160, marker="X", edgecolors="black",
                                  linewidths=1.2, zorder=3)
        handles = [Line2D([], [], ls="none", marker="o", markersize=8, markeredgewidth=0,
                          markerfacecolor=c, label=name) for c, name in zip(self.colors, names)]
        if with_centers:
            handles.append(Line2D([], [], ls="none", marker="X", markersize=10,
                                  markeredgecolor="black", markerfacecolor="lightgray", label="center"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
                  fontsize=10, handletextpad=0.3, borderaxespad=0.0)
        self.title = ax.set_title("", fontsize=11)

    def set_limits(self, limits):
        self.ax.set_xlim(limits[0], limits[1])
        self.ax.set_ylim(limits[2], limits[3])

    def render(self, points, labels, centers, title):
        labels = np.asarray(labels, dtype=np.int64)
        self.points.set_offsets(as_2d(points))
        self.points.set_facecolor(self.colors[labels])
        self.points.set_sizes([point_size(len(labels))])
        if centers is None:
            centers = np.zeros((0, 2))
        centers = as_2d(centers)
        self.centers.set_offsets(centers)
        self.centers.set_facecolor(self.colors[:len(centers)])
        self.title.set_text(title)
        self.fig.canvas.draw()
        return np.asarray(self.fig.canvas.buffer_rgba())[..., :3].copy()

    def save(self, path):
        save_figure(self.fig, path)


def frame_title(args, split, record):
    acc = record.get(f"{split}_acc")
    acc = "" if acc is None else f"  |  acc {acc:.4f}"
    return (f"{args['loss']}  |  {args['dataset']}  |  {split}  |  "
            f"epoch {record['epoch']}/{args.get('epochs', '?')}{acc}")


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
    canvas = ScatterFigure(names, limits)
    frames = [canvas.render(s[f"{split}_features"], s[f"{split}_labels"], s["centers"],
                            frame_title(args, split, s["record"]))
              for s in snaps]
    durations = [1000 // FPS] * (len(frames) - 1) + [HOLD_LAST_MS]
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
    """(epochs, values) of the records that have `key`."""
    pairs = [(r["epoch"], r[key]) for r in records if r.get(key) is not None]
    return (np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs], dtype=np.float64))


def off_diagonal(matrix):
    m = np.asarray(matrix, dtype=np.float64)
    return m[~np.eye(len(m), dtype=bool)]


def draw_curves(records, path, args):
    """Per epoch: loss and its terms, accuracies, train-val gap, learning rate, distances."""
    fig = Figure(figsize=(15, 8.5), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3).ravel()
    fig.suptitle(f"{args['loss']} on {args['dataset']}, feat_dim {args['feat_dim']}, "
                 f"{args.get('model', '?')}", fontsize=13)
    evaluated = [r for r in records if r.get("val_acc") is not None]

    ax = axes[0]
    ax.plot(*series(records, "train_loss"), color="black", lw=2, label="loss")
    for term in loss_terms(records[-1]):
        ax.plot(*series(records, "train_" + term), label=term)
    ax.set(title="training loss (weighted terms)", ylabel="loss")

    ax = axes[1]
    ax.plot(*series(records, "train_acc"), color="tab:blue", label="train")
    ax.plot(*series(records, "val_acc"), color="tab:orange", marker=".", label="val")
    ax.plot(*series(records, "train_nc_acc"), color="tab:blue", ls="--", label="train, nearest center")
    ax.plot(*series(records, "val_nc_acc"), color="tab:orange", ls="--", label="val, nearest center")
    if any(r.get("val_map_at_r") is not None for r in records):
        ax.plot(*series(records, "val_map_at_r"), color="tab:purple", marker=".", label="val MAP@R")
    ax.set(title="accuracy", ylabel="accuracy")

    ax = axes[2]
    gap = [(r["epoch"], r["train_acc"] - r["val_acc"]) for r in evaluated]
    ax.axhline(0, color="gray", lw=0.8)
    if gap:
        ax.plot(*zip(*gap), color="tab:red", marker=".", label="train acc - val acc")
    ax.set(title="train-val gap", ylabel="train acc (during the epoch) - val acc")

    ax = axes[3]
    ax.step(*series(records, "lr"), where="post", color="tab:green", label="lr")
    if any(r.get("lr_centers") is not None for r in records):
        ax.step(*series(records, "lr_centers"), where="post", color="tab:olive", ls="--",
                label="centers' lr (--lr-cent)")
    ax.set_yscale("log")
    ax.set(title="learning rate", ylabel="lr")

    ax = axes[4]
    if evaluated:
        epochs = [r["epoch"] for r in evaluated]
        ax.plot(epochs, [np.mean(r["val_dist_to_center_mean"]) for r in evaluated],
                marker=".", label="mean distance to own center")
        between = [off_diagonal(r["val_center_distances"]) for r in evaluated]
        ax.plot(epochs, [b.mean() for b in between], marker=".", label="mean center-to-center")
        ax.plot(epochs, [b.min() for b in between], marker=".", label="min center-to-center")
    ax.set(title="val feature distances" + (" (centers: class means)" if args["loss"] == "xent"
                                             else ""), ylabel="Euclidean distance")

    ax = axes[5]
    ax.plot(*series(records, "seconds"), color="tab:gray", marker=".", label="seconds")
    ax.set(title="time per epoch (training + evaluation)", ylabel="seconds")

    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, lw=0.4, alpha=0.5)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def number(v):
    """Three significant digits, never in exponent notation."""
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:#.3g}"


def draw_centers(records, path, args, names):
    """The last evaluated epoch: the center-to-center distance matrix as a heatmap, and each
    class's mean distance to its center (std as error bars). None if no epoch was evaluated."""
    evaluated = [r for r in records if r.get("val_center_distances") is not None]
    if not evaluated:
        return None
    r = evaluated[-1]
    dist = np.asarray(r["val_center_distances"], dtype=np.float64)
    n = len(dist)
    names = names[:n]
    fig = Figure(figsize=(15, 6.5), dpi=100)
    FigureCanvasAgg(fig)
    ax_map, ax_bar = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
    which = "class means of the train features" if args["loss"] == "xent" else "learned centers"
    fig.suptitle(f"{args['loss']} on {args['dataset']}, feat_dim {args['feat_dim']}: epoch "
                 f"{r['epoch']}, val features, {which}", fontsize=13)

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

    mean = np.asarray(r["val_dist_to_center_mean"], dtype=np.float64)
    std = np.asarray(r.get("val_dist_to_center_std", np.zeros(n)), dtype=np.float64)
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
    os.makedirs(out_dir, exist_ok=True)
    written = []
    if args["feat_dim"] <= 2:
        snaps = load_snapshots(run_dir)
        names = class_names(args["dataset"], len(snaps[-1]["centers"]))
        limits = shared_limits(snaps)
        for split in ("train", "val"):
            written.append(draw_gif(snaps, split, os.path.join(out_dir, f"{split}.gif"),
                                    args, names, limits))
    else:  # the last epoch; for val, the last epoch that was evaluated
        last = load_snapshot(paths[-1])
        names = class_names(args["dataset"], len(last["centers"]))
        val = last if "val_features" in last else last_snapshot_with(paths[:-1], "val_features")
        for split, snap in (("train", last), ("val", val)):
            if snap is not None:
                written.append(draw_projection(snap, split, os.path.join(out_dir, f"{split}.png"),
                                               args, names, projection))
    written.append(draw_curves(records, os.path.join(out_dir, "curves.png"), args))
    written.append(draw_centers(records, os.path.join(out_dir, "centers.png"), args, names))
    return [p for p in written if p is not None]


# ----------------------------------------------------------------------------- results table

def weights(args):
    """The run's loss's hyperparameters as the registry declares them (`w_cent=1`), "-" for
    none; a run older than a hyperparameter shows its default."""
    return losses.describe_hypers(args["loss"], args)


RETRIEVAL_COLUMNS = {"final P@1": "val_precision_at_1", "final R-prec": "val_r_precision",
                     "final MAP@R": "val_map_at_r"}


def summarize(run_dir):
    """One row of the results table (a dict of strings) and its sort key."""
    args, records = read_run(run_dir, need_metrics=False)
    val = [r["val_acc"] for r in records if r.get("val_acc") is not None]
    done, planned = (records[-1]["epoch"] if records else 0), args.get("epochs")
    # retrieval metrics of the last evaluation (None: runs older than them have none)
    last = next((r for r in reversed(records) if r.get("val_map_at_r") is not None), None)
    row = {"loss": args["loss"], "dataset": args["dataset"], "feat_dim": str(args["feat_dim"]),
           "model": args.get("model", "?"),
           "best val acc": f"{max(val):.4f}" if val else "-",
           "final val acc": f"{val[-1]:.4f}" if val else "-",
           **{column: f"{last[key]:.4f}" if last else None
              for column, key in RETRIEVAL_COLUMNS.items()},
           "epochs": str(done) if done == planned else f"{done}/{planned}",
           "weights": weights(args), "run": os.path.basename(os.path.normpath(run_dir))}
    key = (rank(args["dataset"], list(datasets.DATASETS)), args["feat_dim"],
           rank(args["loss"], LOSS_ORDER), row["run"])
    return key, row


def rank(name, order):
    """Sorts as `order` does; names not in it after, alphabetically."""
    return (order.index(name), "") if name in order else (len(order), name)


def results_table(run_dirs):
    """A Markdown table of the runs, one row each, sorted by dataset, feat_dim, then loss
    (LOSS_ORDER). Plain files among run_dirs (log/README.md in log/*) are skipped. The
    retrieval columns (final P@1, R-precision and MAP@R) appear when a run has them ("-" for
    those without)."""
    rows = [row for _, row in sorted((summarize(d) for d in run_dirs if not os.path.isfile(d)),
                                     key=lambda kr: kr[0])]
    if not rows:
        raise UserError("no run directories given")
    columns = [c for c in rows[0] if c not in RETRIEVAL_COLUMNS
               or any(r[c] is not None for r in rows)]
    return markdown([{c: r[c] if r[c] is not None else "-" for c in columns} for r in rows])


def markdown(rows):
    """A Markdown table of rows (dicts of strings with the same keys), columns aligned."""
    columns = list(rows[0])
    width = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    line = lambda cells: "| " + " | ".join(cells) + " |"  # noqa: E731
    out = [line(c.ljust(width[c]) for c in columns), line("-" * width[c] for c in columns)]
    out += [line(r[c].ljust(width[c]) for c in columns) for r in rows]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- CLI

def build_parser():
    p = OneLineParser(description="Redraw a run's pictures from its run directory, "
                                "or tabulate many runs.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="log/<loss>-<dataset>-feat=<d>[-name]")
    p.add_argument("--out-dir", "--out_dir", default="imgs",
                   help="pictures go to OUT_DIR/<basename of RUN_DIR>/")
    p.add_argument("--projection", default="pca", choices=list(PROJECTIONS),
                   help="features above 2-D: how to embed them in 2-D")
    p.add_argument("--table", action="store_true",
                   help="print a Markdown table of the runs instead of drawing")
    p.add_argument("--tensorboard", action="store_true",
                   help="write the runs' TensorBoard events into RUN_DIR/tb/ instead of drawing")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.table:
            print(results_table(args.runs), end="")
            return
        if args.tensorboard:
            import tboard  # it imports this module
            for run in args.runs:
                print(tboard.replay(run), flush=True)
            return
        for run in args.runs:
            out = os.path.join(args.out_dir, os.path.basename(os.path.normpath(run)))
            for path in draw_run(run, out, args.projection):
                print(path, flush=True)
    except UserError as e:
        error_exit(str(e))


if __name__ == "__main__":
    main(sys.argv[1:])
