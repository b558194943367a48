"""The run directory, log/<loss>-<dataset>-feat=<d>[-<name>]/, and everything in it: its
name, creating and locking it, args.json, metrics.jsonl and train.log, the checkpoints
(last.pt, best.pt), the feature snapshots (features/epoch_NNN.npz), reading a run back,
whether it is finished, and exporting its small files. Nothing else writes or parses them.

Every file is written through a temp file and a rename: a reader, or a kill, never sees a
half-written one. Older runs measured `val_*` on the official test split; read_run() gives
their records the `test_*` names, so every reader sees one vocabulary.
"""
import argparse
import contextlib
import fcntl
import glob
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch

import datasets
from utils import UserError

UMASK = os.umask(0)
os.umask(UMASK)
CHECKPOINT_KEYS = ("model", "objective", "optimizer", "scheduler", "epoch", "args", "history")


# ----------------------------------------------------------------------------- files

def atomic_write(path, write):
    """Call write(tmp_path), then rename the temp file over `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path, text):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    atomic_write(path, write)


@contextlib.contextmanager
def folder_locked(path):
    """Hold an exclusive lock on the folder that holds `path` (blocking) for a read-modify-write
    of `path` that another process may be doing at the same time. The folder, not the file:
    atomic_write replaces the file, so a lock on it would guard an inode nobody reads again."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def writable_dir(path, what, create=True):
    """Create `path` if needed and check that files can be made in it, before any work that
    would write there: a UserError (one line) otherwise. create=False: a check long before
    the writing, which makes nothing (a missing `path` is checked in its nearest existing
    folder), so that a later failure leaves no empty folder behind."""
    try:
        where = os.path.abspath(path)
        if create:
            os.makedirs(path, exist_ok=True)
        else:
            while not os.path.exists(where) and os.path.dirname(where) != where:
                where = os.path.dirname(where)
        fd, probe = tempfile.mkstemp(dir=where, prefix=".probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise UserError(f"{what} {path} cannot be written: {e.strerror or e}") from None
    return path


# ----------------------------------------------------------------------------- name, lock

def run_name(args):
    """<loss>-<dataset>-feat=<d>[-<name>], from a Namespace or a dict of main.py's flags."""
    a = args if isinstance(args, dict) else vars(args)
    loss = a["loss"].replace(":", "-")  # pml:NAME -> pml-NAME
    return (f"{loss}-{datasets.short_name(a['dataset'])}-feat={a['feat_dim']}"
            + (f"-{a['name']}" if a.get("name") else ""))


def check_name(name):
    """--name is a suffix of one folder name: no separators, no '..'."""
    if name is not None and (not name or os.sep in name or "/" in name or name in (".", "..")
                             or name.startswith(".")):
        raise UserError(f"--name {name!r} must be a plain folder-name suffix (no '/', not "
                        f"starting with '.')")


def lock(run_dir):
    """Hold an exclusive lock on run_dir/.lock while the returned file stays open (the
    process's life): a second main.py on the same run directory, or a sweep's rerun, sees
    it. The kernel drops the lock when the process dies, however it dies."""
    f = open(os.path.join(run_dir, ".lock"), "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise UserError(f"{run_dir} is being trained by another process right now") from None
    return f


def is_locked(run_dir):
    path = os.path.join(run_dir, ".lock")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def wait_unlocked(run_dir):
    """Block while another process trains in run_dir."""
    path = os.path.join(run_dir, ".lock")
    if os.path.exists(path):
        with open(path) as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            fcntl.flock(f, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- start or resume

def read_args(run_dir):
    """args.json of a run as a dict; a UserError (one line) if missing or not JSON."""
    path = os.path.join(run_dir, "args.json")
    try:
        with open(path) as f:
            args = json.load(f)
    except FileNotFoundError:
        raise UserError(f"{run_dir} has no args.json: not a run directory of main.py") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}): the run directory is damaged") from None
    except OSError as e:
        raise UserError(f"{path} cannot be read: {e.strerror or e}") from None
    problem = args_problem(args)
    if problem:
        raise UserError(f"{path} is not the args.json of a main.py run ({problem})")
    return args


def args_problem(args):
    """Why a dict is not the flags of a main.py run, or None: every reader of a run needs
    the keys that name it and its planned length, of their types (each args.json since the
    first run has them)."""
    if not isinstance(args, dict):
        return f"a JSON {type(args).__name__}, not an object"
    for key, kinds in (("loss", str), ("dataset", str), ("feat_dim", int), ("epochs", (int, float))):
        value = args.get(key)
        if value is None:
            return f"no {key!r}"
        if isinstance(value, bool) or not isinstance(value, kinds) or (kinds != str and not value > 0):
            return f"{key!r} is {value!r}"
    return None


def resolve(args, explicit, resumable):
    """The run directory of the flags and, on --resume, the checkpoint and the flags it was
    made with (typed flags in `resumable` may differ). Touches nothing on disk. Returns
    (args, run_dir, checkpoint or None)."""
    if args.resume:
        if "overwrite" in explicit and args.overwrite:
            raise UserError("--resume continues a run and --overwrite starts it again: pass one")
        run_dir = args.resume.rstrip("/") or "/"
        if os.path.isfile(run_dir):  # a path to the checkpoint file itself
            run_dir = os.path.dirname(run_dir) or "."
        if not os.path.isdir(run_dir):
            raise UserError(f"--resume {args.resume}: no such run directory")
        ckpt_path = os.path.join(run_dir, "last.pt")
        if os.path.exists(ckpt_path):
            ckpt = load_checkpoint(ckpt_path)
            saved = ckpt["args"]
        elif os.path.exists(os.path.join(run_dir, "args.json")):
            ckpt, saved = None, read_args(run_dir)  # stopped before its first epoch ended
        else:
            raise UserError(f"{run_dir} holds neither last.pt nor args.json: not a run directory")
        for key in sorted(explicit - resumable):
            if key in saved and saved[key] != getattr(args, key):
                raise UserError(f"--{key.replace('_', '-')} {getattr(args, key)} does not match the "
                                f"checkpoint's {saved[key]} in {run_dir}; leave it out to resume")
        merged = {**vars(args), **saved}  # a flag newer than the checkpoint: its default
        merged.update({k: getattr(args, k) for k in explicit & resumable})
        if "epochs" in explicit and "steps" not in explicit:
            merged["steps"] = None  # a typed --epochs replaces a length given in steps
        merged["resume"] = args.resume
        return argparse.Namespace(**merged), run_dir, ckpt
    check_name(args.name)
    run_dir = os.path.join(args.log_dir, run_name(args))
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise UserError(f"{run_dir} exists and is not a directory")
    if os.path.isdir(run_dir) and os.listdir(run_dir) and not args.overwrite:
        raise UserError(f"{run_dir} already exists: pass --resume {run_dir} to continue it, "
                        f"--overwrite to start it again, or --name to make another")
    return args, run_dir, None


def create(run_dir, args, fresh):
    """Create (or, fresh, empty) the run directory and write args.json. Returns the run's
    lock, held while the process lives."""
    if os.path.isdir(run_dir) and is_locked(run_dir):
        raise UserError(f"{run_dir} is being trained by another process right now")
    try:
        if fresh and os.path.isdir(run_dir):
            shutil.rmtree(run_dir)
        os.makedirs(run_dir, exist_ok=True)
        held = lock(run_dir)
        # on resume too: --epochs may have grown, and the pictures read the plan from here
        atomic_write_text(os.path.join(run_dir, "args.json"), json.dumps(vars(args), indent=2) + "\n")
    except OSError as e:
        raise UserError(f"cannot write the run directory {run_dir}: {e.strerror or e}") from None
    return held


# ----------------------------------------------------------------------------- checkpoints

def checkpoint_state(net, optimizer, scheduler, averaged, epoch, best, history, args, rng):
    """The one checkpoint dict: plain data (state dicts, numbers, vars(args)) that
    torch.load(weights_only=True) reads back."""
    return {"model": net.model.state_dict(), "objective": net.objective.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": None if scheduler is None else scheduler.state_dict(),
            "averaged": None if averaged is None else averaged.state_dict(),
            "epoch": epoch, "best": best, "history": history,
            "args": args if isinstance(args, dict) else vars(args), "rng": rng}


def save_checkpoint(state, path):
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint as data (weights_only=True: never runs code from the file). A
    UserError with one line for a missing, truncated, corrupt or foreign file."""
    import warnings
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint at {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # garbage bytes can fail anywhere in the unpickler (IndexError, ...)
        why = "it holds objects other than tensors and plain data (not made by main.py?)" \
            if "weights_only" in str(e) else "truncated or corrupt"
        raise UserError(f"{path} is not a readable checkpoint: {why}; it was not loaded") from None
    if not isinstance(state, dict) or not all(k in state for k in CHECKPOINT_KEYS):
        raise UserError(f"{path} is not a checkpoint of this project (expected the keys "
                        f"{', '.join(CHECKPOINT_KEYS)})")
    problem = args_problem(state["args"])
    if problem:
        problem = f"its args: {problem}"
    elif not (isinstance(state["epoch"], int) and isinstance(state["history"], list)
              and all(isinstance(r, dict) and "epoch" in r for r in state["history"])):
        problem = "its epoch or history is not what main.py saves"
    if problem:
        raise UserError(f"{path} is not a checkpoint of this project ({problem})")
    return state


# ----------------------------------------------------------------------------- logs

class RunLog:
    """train.log (readable) and metrics.jsonl (one JSON object per epoch) of one run."""

    def __init__(self, run_dir):
        self.text_path = os.path.join(run_dir, "train.log")
        self.jsonl_path = os.path.join(run_dir, "metrics.jsonl")

    def info(self, line, echo=True, stream=None):
        if echo:
            print(line, file=stream or sys.stdout, flush=True)
        if os.path.isdir(os.path.dirname(self.text_path)):
            with open(self.text_path, "a") as f:
                f.write(line + "\n")

    def metrics(self, record):
        with open(self.jsonl_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def rewrite_metrics(self, history):
        """On resume: metrics.jsonl becomes exactly the checkpoint's history, so an epoch
        that ran after the last checkpoint (and will run again) is not listed twice."""
        atomic_write_text(self.jsonl_path, "".join(json.dumps(r) + "\n" for r in history))

    @staticmethod
    def line(record, epochs):
        """train.log's line for one metrics record (of a run of `epochs` epochs)."""
        terms = loss_terms(record)
        line = (f"epoch {epochs_text(epochs_done(record)):>3}/{epochs_text(epochs)}  "
                f"lr {record['lr']:.2e}  ")
        if record.get("lr_centers") is not None:
            line += f"(centers {record['lr_centers']:.2e})  "
        line += f"loss {record['train_loss']:.4f}"
        if terms:
            line += " (" + " ".join(f"{t} {record['train_' + t]:.4f}" for t in terms) + ")"
        line += f"  train acc {record['train_acc']:.4f}"
        if record.get("train_eval_acc") is not None:
            line += f" (clean {record['train_eval_acc']:.4f})"
        for split in ("val", "test", "seen"):
            if record.get(f"{split}_acc") is not None:
                line += f"  {split} acc {record[f'{split}_acc']:.4f}"
                if record.get(f"{split}_nc_acc") is not None:
                    line += f" (nearest center {record[f'{split}_nc_acc']:.4f})"
            if record.get(f"{split}_map_at_r") is not None:
                line += (f"  P@1 {record[f'{split}_precision_at_1']:.4f} R-prec "
                         f"{record[f'{split}_r_precision']:.4f} MAP@R {record[f'{split}_map_at_r']:.4f}")
        if record.get("unseen_map_at_r") is not None:
            line += (f"  unseen P@1 {record['unseen_precision_at_1']:.4f} MAP@R "
                     f"{record['unseen_map_at_r']:.4f}")
        return line + f"  {record['seconds']:.1f}s"


TIMING = "seconds: "  # train.log's line of where a process's time went


def timing_line(seconds):
    """train.log's line of {phase: seconds} (start-up, imports, data, ...) and their total."""
    return TIMING + ", ".join(f"{name} {value:.2f}" for name, value in
                              {**seconds, "total": sum(seconds.values())}.items())


def read_timings(run_dir):
    """{phase: seconds} of the last timing line in a run's train.log ({} if none): the fixed
    costs of the process that finished the run."""
    found = {}
    try:
        with open(os.path.join(run_dir, "train.log")) as f:
            lines = [line for line in f if line.startswith(TIMING)]
    except OSError:
        return found
    for part in lines[-1][len(TIMING):].strip().split(", ") if lines else []:
        name, _, value = part.rpartition(" ")
        try:
            found[name] = float(value)
        except ValueError:
            continue
    return found


def epochs_text(epochs):
    """An epoch count as the log and the pictures show it: 2, 1.5, 1.52 (2 decimals at most)."""
    return f"{round(epochs, 2):g}"


def epochs_done(record):
    """The epochs trained by the end of a metrics record: its epoch index, less the part of a
    partial last epoch that did not run (`epoch_fraction`: 0.5 of epoch 2 is 1.5)."""
    fraction = record.get("epoch_fraction")
    return record["epoch"] if fraction is None else record["epoch"] - 1 + fraction


def loss_terms(record):
    """The weighted loss terms of a metrics record (xent, center, intra, inter, ...): its
    train_* keys other than the total loss, the accuracies and the clean measurements."""
    return [k[len("train_"):] for k in record if k.startswith("train_")
            and k not in ("train_loss", "train_acc", "train_nc_acc")
            and not k.startswith("train_eval_")]


def read_jsonl(path, tolerate_torn_last=False, need=()):
    """The records (JSON objects) of a JSONL file. tolerate_torn_last: a last line that is not
    JSON (a write cut by a kill) is skipped with a warning; any other bad line, or a record
    without the keys in `need`, is a UserError naming it."""
    try:
        with open(path) as f:
            lines = f.read().split("\n")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text file: the run directory is damaged") from None
    except OSError as e:
        raise UserError(f"{path} cannot be read: {e.strerror or e}") from None
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    records = []
    for k, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
        except ValueError:
            if tolerate_torn_last and k == len(numbered) - 1:
                print(f"warning: {path}: line {number} is cut short (an interrupted write); "
                      f"read without it", file=sys.stderr, flush=True)
                break
            raise UserError(f"{path}: line {number} is not JSON") from None
        if not isinstance(record, dict) or not all(key in record for key in need):
            raise UserError(f"{path}: line {number} is not a record of this file (a JSON object"
                            + (f" with {', '.join(need)})" if need else ")"))
        records.append(record)
    return records


RENAMED = ("acc", "nc_acc", "precision_at_1", "r_precision", "map_at_r", "dist_to_center_mean",
           "dist_to_center_std", "center_distances")


def normalize_record(record, args):
    """Runs made before the validation split measured `val_*` on the official test split:
    their record gets the `test_*` names."""
    if "val_size" in args or any(k.startswith("test_") for k in record):
        return record
    return {(f"test_{k[4:]}" if k.startswith("val_") and k[4:] in RENAMED else k): v
            for k, v in record.items()}


def read_run(run_dir, need_metrics=True):
    """args.json and metrics.jsonl (a torn last line skipped) of a run directory, checked:
    a UserError (one line) for a missing or empty directory, or one that is not a run."""
    if not os.path.isdir(run_dir):
        raise UserError(f"{run_dir}: no such run directory")
    if not os.listdir(run_dir):
        raise UserError(f"{run_dir} is empty: not a run directory (nothing trained there yet?)")
    args = read_args(run_dir)
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    records = (read_jsonl(metrics_path, tolerate_torn_last=True, need=("epoch",))
               if os.path.exists(metrics_path) else [])
    for record in records:
        if isinstance(record["epoch"], bool) or not isinstance(record["epoch"], int):
            raise UserError(f"{metrics_path}: the epoch {record['epoch']!r} is not a whole number: "
                            f"the run directory is damaged")
    if need_metrics and not records:
        raise UserError(f"{run_dir} has no metrics yet (metrics.jsonl missing or empty): "
                        f"no epoch has finished")
    return args, [normalize_record(r, args) for r in records]


def state_of(run_dir):
    """'finished', 'started' (continue with --resume) or 'new', read from the directory alone:
    finished when its last logged epoch reaches the epochs planned in args.json."""
    if not os.path.isfile(os.path.join(run_dir, "args.json")):
        return "new"
    try:
        args, records = read_run(run_dir, need_metrics=False)
    except UserError:
        return "started"
    return "finished" if finished(args, records) else "started"


def finished(args, records):
    """Whether a run's records reach the epochs planned in its args.json."""
    done = epochs_done(records[-1]) if records else 0
    # a plan given in steps is a ratio of steps: let rounding not leave it unfinished
    return done >= args.get("epochs", float("inf")) - 1e-9


def export(run_dirs, out_dir):
    """Copy args.json and metrics.jsonl of each finished run to out_dir/<run>/ (the small
    files behind the results page; no checkpoints, no snapshots)."""
    finished = [d for d in run_dirs if os.path.isdir(d) and state_of(d) == "finished"]
    if not finished:
        raise UserError("no finished runs among the directories given: nothing to export")
    writable_dir(out_dir, "--export folder")
    copied = []
    for d in finished:
        target = os.path.join(out_dir, os.path.basename(os.path.normpath(d)))
        try:
            os.makedirs(target, exist_ok=True)
            for f in ("args.json", "metrics.jsonl"):
                shutil.copyfile(os.path.join(d, f), os.path.join(target, f))
        except OSError as e:
            raise UserError(f"cannot export {d} to {target}: {e.strerror or e}") from None
        copied.append(target)
    return copied


# ----------------------------------------------------------------------------- snapshots
# features/epoch_NNN.npz: train_features, train_labels, val_features (absent on epochs
# without evaluation), val_labels, centers, classes (the legend's names), unseen_features,
# unseen_labels and unseen_classes (open-set runs), and the epoch's metrics as JSON. "val" is the
# split evaluated every epoch: the held-out validation split, or (--val-size 0) the test split.

def snapshot_indices(n, feat_dim, size, device=None):
    """Which samples a split's snapshots keep: all of them for 2-D features; above that a
    fixed random subset of `size`, the same every epoch."""
    if feat_dim <= 2 or n <= size:
        return torch.arange(n, device=device)
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:size]
    return keep.sort().values.to(device)


def save_snapshot(run_dir, epoch, arrays, record):
    """arrays: {name: tensor, numpy array or None}; None entries are left out."""
    folder = os.path.join(run_dir, "features")
    os.makedirs(folder, exist_ok=True)
    out = {k: v if isinstance(v, np.ndarray) else v.detach().cpu().numpy()
           for k, v in arrays.items() if v is not None}
    for k in [k for k in out if k.endswith("_labels")]:
        out[k] = out[k].astype(np.int16)
    out["record"] = np.array(json.dumps(record))

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **out)
    atomic_write(os.path.join(folder, f"epoch_{epoch:03d}.npz"), write)


def snapshot_paths(run_dir):
    return sorted(glob.glob(os.path.join(run_dir, "features", "epoch_*.npz")))


def load_snapshot(path):
    """One snapshot: a dict of numpy arrays plus `record` (the epoch's metrics); a UserError
    (one line) for a damaged file."""
    try:
        with np.load(path) as z:
            snap = {k: z[k] for k in z.files if k != "record"}
            snap["record"] = json.loads(str(z["record"]))
    except Exception as e:  # zipfile, pickle and JSON errors alike: the file is damaged
        raise UserError(f"{path} is not a readable feature snapshot ({type(e).__name__}); "
                        f"delete it to draw the other epochs") from None
    problem = snapshot_problem(snap)
    if problem:
        raise UserError(f"{path} is not a feature snapshot of main.py ({problem}); delete it "
                        f"to draw the other epochs")
    return snap


def snapshot_problem(snap):
    """Why the arrays of a snapshot do not fit together, or None: the pictures index one by
    the other and would fail, or quietly draw the wrong points."""
    if not isinstance(snap["record"], dict) or "epoch" not in snap["record"]:
        return "its record has no epoch"
    for key in ("train_features", "train_labels", "centers"):
        if key not in snap:
            return f"no {key}"
    dim = snap["train_features"].shape[-1] if snap["train_features"].ndim == 2 else None
    if dim is None or snap["centers"].ndim != 2 or snap["centers"].shape[1] != dim:
        return "train_features and centers are not (n, d) arrays of one d"
    for split in ("train", "val", "unseen"):
        features, labels = snap.get(f"{split}_features"), snap.get(f"{split}_labels")
        if features is not None and labels is None:  # (labels alone: an epoch not evaluated)
            return f"{split}_features without {split}_labels"
        if features is not None and (features.ndim != 2 or features.shape[1] != dim
                                     or labels.shape != (len(features),)):
            return f"{split}_features {features.shape} do not fit {split}_labels {labels.shape}"
        if split != "unseen" and labels is not None and len(labels) and not (
                0 <= labels.min() and labels.max() < len(snap["centers"])):
            return f"{split}_labels outside the {len(snap['centers'])} classes"
    return None


def last_snapshot_with(paths, key):
    for path in reversed(paths):
        snap = load_snapshot(path)
        if key in snap:
            return snap
    return None


def load_snapshots(run_dir):
    """The snapshots of a run in epoch order."""
    return [load_snapshot(p) for p in snapshot_paths(run_dir)]


def split_names(args):
    """(deciding, tested) for a run's args (dict or Namespace): the prefix of the split
    evaluated every epoch, which the plateau scheduler, best.pt and the tuner read (`val`
    with --val-size, else the test split), and the prefix of the official test split (`seen`
    with --held-out-classes). Older runs (no val_size) evaluated the test split."""
    a = args if isinstance(args, dict) else vars(args)
    tested = "seen" if a.get("held_out_classes") else "test"
    return ("val" if a.get("val_size") else tested), tested
