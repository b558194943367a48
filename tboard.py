"""TensorBoard event files of a run, in log/<run>/tb/: every number of metrics.jsonl once per
epoch, the loss terms every --log-interval steps, the 2-D feature frames, and above 2-D the
last epoch's val features for the embedding projector.

    python main.py ... --tensorboard              # written during the run (rank 0 only)
    python visualize.py --tensorboard log/<run>   # written afterwards, from the run directory
    tensorboard --logdir log                      # every run side by side

Tags, at step = epoch: train/<loss|term|acc|nc_acc>, val/<acc|nc_acc>, lr, seconds,
distances/{to_center_mean,to_center_std}/<class> and distances/center_to_center/<a>_vs_<b>
(val features), images features/{train,val} (2-D runs, the GIF's frame). At the global step
(epoch - 1) * steps_per_epoch + step: step/<loss|term>, the mean over the steps since the
previous log point, read where the epoch already syncs (the non-finite check).

Resume: an epoch's events are written after its checkpoint, so a stopped run leaves none
beyond its last checkpoint, but it may leave per-step ones. The resumed run opens its event
file with purge_step = the first global step it will write, and TensorBoard drops every older
event at or after that step: the curves go on with no duplicate or backwards steps. An epoch
that reached metrics.jsonl but not the event file (stopped in between) is written then.
"""
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

import datasets
import plots
import rundir
from utils import UserError

DISTANCES = {"dist_to_center_mean": "to_center_mean", "dist_to_center_std": "to_center_std",
             "center_distances": "center_to_center"}
# The Custom Scalars tab: series that read best in one chart.
LAYOUT = {
    "loss": {"loss terms per step": ["Multiline", [r"step/.*"]]},
    "accuracy": {"train, val, test, nearest center": ["Multiline", [r"(train|val|test|seen)/(nc_)?acc"]]},
    "distances (val)": {
        "to own center, mean": ["Multiline", [r"distances/to_center_mean/.*"]],
        "to own center, std": ["Multiline", [r"distances/to_center_std/.*"]],
        "center to center": ["Multiline", [r"distances/center_to_center/.*"]]},
}


def summary_writer():
    """torch's SummaryWriter, or a UserError (one line, exit code 2) saying how to get it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard "
                        "(or leave out --tensorboard)") from None
    return SummaryWriter


def tag_part(name):
    """A class name as one tag component: 'T-shirt/top' -> 'T-shirt_top'."""
    return re.sub(r"[^\w.-]+", "_", str(name))


def epoch_scalars(record, dataset):
    """{tag: value} for every number of a metrics.jsonl record (its epoch is the step)."""
    out = {}
    for key, value in record.items():
        if key in ("epoch", "lr_steps") or value is None:  # lr_steps: by step, in curves.png
            continue
        if isinstance(value, list):  # per class, or the symmetric center-to-center matrix
            value = np.asarray(value, dtype=np.float64)
            names = [tag_part(n) for n in plots.class_names(dataset, len(value))]
            group = "distances/" + DISTANCES.get(key.partition("_")[2], key)
            if value.ndim == 1:
                out.update({f"{group}/{names[i]}": v for i, v in enumerate(value)})
            else:
                out.update({f"{group}/{names[i]}_vs_{names[j]}": value[i, j]
                            for i, j in zip(*np.triu_indices(len(value), 1))})
        else:
            split, _, name = key.partition("_")
            out[f"{split}/{name}" if split in ("train", "val", "test", "seen", "unseen") and name else key] = value
    return out


class Board:
    """The TensorBoard writer of one run directory. `args`: the run's args (a dict).
    Frames are drawn in one background thread (background=False: at once), so the epoch loop
    only waits for the scalars."""

    def __init__(self, run_dir, args, purge_step=None, background=True):
        self.run_dir, self.args, self.figures = run_dir, args, {}
        self.dir = os.path.join(run_dir, "tb")
        self.writer = summary_writer()(self.dir, purge_step=purge_step)
        self.writer.add_custom_scalars(LAYOUT)  # also opens the event file, before any thread writes
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="tboard") if background else None

    def catch_up(self, records):
        """On resume: the epochs of metrics.jsonl that the event files lack (the run stopped
        after logging an epoch and before its events were flushed), written now, frames too."""
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        acc = EventAccumulator(self.dir, size_guidance={"scalars": 0, "images": 1, "tensors": 1})
        acc.Reload()
        logged = {e.step for e in acc.Scalars("lr")} if "lr" in acc.Tags()["scalars"] else set()
        for record in records:
            if record["epoch"] not in logged:
                self.epoch(record)

    def step_terms(self, terms, global_step):
        """The loss terms (host numbers) at one log point of an epoch."""
        for name, value in terms.items():
            self.writer.add_scalar(f"step/{name}", value, global_step)
        self.writer.flush()  # on disk now: TensorBoard shows it within its reload interval

    def epoch(self, record, limits=None):
        """An epoch's scalars; for features of 1 or 2 dimensions its frames, from the epoch's
        snapshot. limits: fixed axes for every frame (the GIF's); default each frame's own,
        as the epochs still to come are unknown while the run trains."""
        for tag, value in epoch_scalars(record, self.args["dataset"]).items():
            self.writer.add_scalar(tag, value, record["epoch"])
        self.writer.flush()
        path = os.path.join(self.run_dir, "features", f"epoch_{record['epoch']:03d}.npz")
        if self.args["feat_dim"] <= 2 and os.path.exists(path):
            if self.pool is None:
                self.images(path, limits)
            else:
                self.pool.submit(self.images_or_warn, path, limits)

    def images(self, snapshot_path, limits=None):
        """The frames of one snapshot, as plots.ScatterFigure draws them for the GIF."""
        snap = rundir.load_snapshot(snapshot_path)
        names = plots.class_names(self.args["dataset"], len(snap["centers"]))
        for split in ("train", "val"):
            if f"{split}_features" not in snap:
                continue  # an epoch without evaluation
            points = plots.as_2d(snap[f"{split}_features"])
            figure = self.figures.get(split) or plots.ScatterFigure(names, (-1, 1, -1, 1))
            self.figures[split] = figure
            figure.set_limits(limits or plots.robust_limits(points))
            frame = figure.render(points, snap[f"{split}_labels"], snap["centers"],
                                  plots.frame_title(self.args, split, snap["record"]))
            self.writer.add_image(f"features/{split}", frame, snap["record"]["epoch"],
                                  dataformats="HWC")
        self.writer.flush()

    def images_or_warn(self, snapshot_path, limits):
        try:
            self.images(snapshot_path, limits)
        except Exception as e:  # the run itself is safe on disk: say so, go on training
            print(f"tensorboard: no frame from {snapshot_path} ({type(e).__name__}: {e}); "
                  f"python visualize.py --tensorboard writes them after the run",
                  file=sys.stderr, flush=True)

    def embedding(self, images=None):
        """Features above 2-D: the last val snapshot for the projector, with labels and class
        names; `images` (uint8 (n, C, H, W), the snapshot's samples) become the sprite."""
        if self.args["feat_dim"] <= 2:
            return None
        snap = rundir.last_snapshot_with(rundir.snapshot_paths(self.run_dir), "val_features")
        if snap is None:
            return None
        epoch = snap["record"]["epoch"]
        if os.path.isdir(os.path.join(self.dir, f"{epoch:05d}", "val_features")):
            return None  # written already (a resumed run that had nothing left to train)
        labels = snap["val_labels"].astype(np.int64)
        names = plots.class_names(self.args["dataset"], len(snap["centers"]))
        if images is not None:
            images = torch.as_tensor(images).cpu().float() / 255
        self.writer.add_embedding(snap["val_features"], [[int(k), names[k]] for k in labels],
                                  label_img=images, global_step=epoch, tag="val_features",
                                  metadata_header=["label", "class"])
        return epoch

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True)  # the last frames
        self.writer.close()


def val_thumbnails(args, labels):
    """The images of a run's val snapshot samples, from the run's own --data-dir (no download):
    (images, None), or (None, why not)."""
    if not args.get("data_dir"):
        return None, "args.json names no --data-dir"
    try:
        split = datasets.load_split(args["dataset"], args["data_dir"], False, "cpu",
                                    args.get("subset"), download=False)
    except UserError as e:
        return None, str(e)
    keep = rundir.snapshot_indices(len(split), args["feat_dim"], args.get("snapshot_size", 5000))
    if not np.array_equal(split.labels[keep].numpy(), labels):
        return None, f"the images in {args['data_dir']} are not the ones the run used"
    return split.images[keep], None


def replay(run_dir):
    """Write the events of a finished (or stopped) run from its run directory: the scalars of
    metrics.jsonl, the frames of its snapshots with the GIF's fixed axes, the embedding. The
    per-step terms exist only in a live run's events. Returns the tb directory."""
    args, records = rundir.read_run(run_dir)
    tb_dir = os.path.join(run_dir, "tb")
    if os.path.isdir(tb_dir) and any(f.startswith("events.out.tfevents") for f in os.listdir(tb_dir)):
        raise UserError(f"{tb_dir} holds TensorBoard events already (the run had --tensorboard?); "
                        f"move it away to write them again")
    paths = rundir.snapshot_paths(run_dir)
    limits = None
    if args["feat_dim"] <= 2 and paths:
        limits = plots.shared_limits(rundir.load_snapshots(run_dir))
    board = Board(run_dir, args, background=False)
    try:
        for record in records:
            board.epoch(record, limits)
        snap = rundir.last_snapshot_with(paths, "val_features") if args["feat_dim"] > 2 else None
        if snap is not None:
            images, why = val_thumbnails(args, snap["val_labels"])
            if images is None:
                print(f"embedding without thumbnails: {why}", flush=True)
            board.embedding(images)
    finally:
        board.close()
    return tb_dir
