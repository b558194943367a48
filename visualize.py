"""Feature snapshots of a run -> GIFs (2-D), projections (high-D), curves, center distances,
and the results table over many runs.

    python visualize.py log/<run>              # redraw imgs/<run>/ from the run directory
    python visualize.py --table log/*          # Markdown table of many runs
"""
import glob
import json
import os

import numpy as np
import torch

from utils import atomic_write


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


def load_snapshots(run_dir):
    """The snapshots of a run in epoch order, each a dict of numpy arrays plus `record`."""
    snaps = []
    for path in sorted(glob.glob(os.path.join(run_dir, "features", "epoch_*.npz"))):
        with np.load(path) as z:
            snap = {k: z[k] for k in z.files if k != "record"}
            snap["record"] = json.loads(str(z["record"]))
        snaps.append(snap)
    return snaps


def draw_run(run_dir, out_dir):
    return []
