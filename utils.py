"""Seeding, device choice, the run's logs (text + JSONL) and atomic checkpoints."""
import argparse
import fcntl
import json
import os
import random
import sys
import tempfile

import numpy as np
import torch
import torch.distributed as dist


UMASK = os.umask(0)
os.umask(UMASK)


class OneLineParser(argparse.ArgumentParser):
    """Bad flags get one line (not the whole usage) and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


class UserError(Exception):
    """A problem with the user's input: reported as one line, exit code 2."""


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state():
    """The global RNG states, as plain data that torch.load(weights_only=True) accepts."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]),
                  "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    s = state["numpy"]
    np.random.set_state({"bit_generator": s["bit_generator"],
                         "state": {"key": s["key"].numpy().astype(np.uint32), "pos": s["pos"]},
                         "has_gauss": s["has_gauss"], "gauss": s["gauss"]})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Dist:
    """rank / world size under torchrun (RANK in the environment), or 0 / 1."""

    def __init__(self):
        self.enabled = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.rank = int(os.environ.get("RANK", 0)) if self.enabled else 0
        self.world_size = int(os.environ.get("WORLD_SIZE", 1)) if self.enabled else 1
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0)) if self.enabled else 0
        self.main = self.rank == 0

    def init(self, device):
        if self.enabled and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def sum(self, tensor):
        if self.enabled:
            dist.all_reduce(tensor)
        return tensor

    def max(self, tensor):
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def close(self):
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def pick_device(name="auto", local_rank=0):
    """auto: cuda, then mps, then cpu. Under torchrun each rank takes cuda:LOCAL_RANK."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for, but no CUDA device is available")
        return torch.device("cuda", local_rank)
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise UserError(f"--device {name!r} is not a device torch knows: {e}") from None


def atomic_write(path, write):
    """Call write(tmp_path), then rename the temp file over `path`: a reader (or a kill)
    never sees a half-written file."""
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


def lock_run_dir(run_dir):
    """Hold an exclusive lock on run_dir/.lock for as long as the returned file stays open
    (the process's life): a second main.py on the same run directory, or a sweep's rerun,
    sees it. The kernel drops the lock when the process dies, however it dies."""
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
    """Block while another process trains in run_dir (holds the lock of lock_run_dir)."""
    path = os.path.join(run_dir, ".lock")
    if os.path.exists(path):
        with open(path) as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            fcntl.flock(f, fcntl.LOCK_UN)


def save_checkpoint(state, path):
    atomic_write(path, lambda tmp: torch.save(state, tmp))


CHECKPOINT_KEYS = ("model", "objective", "optimizer", "scheduler", "epoch", "args", "history")


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint as data (weights_only=True: never runs code from the file).
    Raises UserError with one line for a missing, truncated, corrupt or foreign file."""
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # garbage bytes can fail anywhere in the unpickler (IndexError, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} is not a readable checkpoint (truncated or corrupt?): {first}") from None
    if not isinstance(state, dict) or not all(k in state for k in CHECKPOINT_KEYS):
        raise UserError(f"{path} is not a checkpoint of this project (expected the keys "
                        f"{', '.join(CHECKPOINT_KEYS)})")
    return state


class RunLog:
    """train.log (readable) and metrics.jsonl (one JSON object per epoch) of one run."""

    def __init__(self, run_dir):
        self.text_path = os.path.join(run_dir, "train.log")
        self.jsonl_path = os.path.join(run_dir, "metrics.jsonl")

    def info(self, line, echo=True):
        if echo:
            print(line, flush=True)
        with open(self.text_path, "a") as f:
            f.write(line + "\n")

    def metrics(self, record):
        with open(self.jsonl_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    @staticmethod
    def line(record, epochs):
        """train.log's line for one metrics record (of a run of `epochs` epochs)."""
        terms = loss_terms(record)
        line = f"epoch {record['epoch']:>3}/{epochs}  lr {record['lr']:.2e}  "
        if record.get("lr_centers") is not None:
            line += f"(centers {record['lr_centers']:.2e})  "
        line += f"loss {record['train_loss']:.4f}"
        if terms:
            line += " (" + " ".join(f"{t} {record['train_' + t]:.4f}" for t in terms) + ")"
        line += f"  train acc {record['train_acc']:.4f}"
        if record.get("val_acc") is not None:
            line += f"  val acc {record['val_acc']:.4f} (nearest center {record['val_nc_acc']:.4f})"
        if record.get("val_map_at_r") is not None:
            line += (f"  P@1 {record['val_precision_at_1']:.4f} R-prec {record['val_r_precision']:.4f}"
                     f" MAP@R {record['val_map_at_r']:.4f}")
        return line + f"  {record['seconds']:.1f}s"

    def rewrite_metrics(self, history):
        """On resume: metrics.jsonl becomes exactly the checkpoint's history, so an epoch
        that ran after the last checkpoint (and will run again) is not listed twice."""
        atomic_write_text(self.jsonl_path, "".join(json.dumps(r) + "\n" for r in history))


def loss_terms(record):
    """The weighted loss terms of a metrics record (xent, center, intra, inter, ...): its
    train_* keys other than the total loss and the accuracies."""
    return [k[len("train_"):] for k in record if k.startswith("train_")
            and k not in ("train_loss", "train_acc", "train_nc_acc")]


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def error_exit(message, code=2):
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)
