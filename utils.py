"""What every script shares: one-line errors, seeding and RNG state, torchrun ranks, the device."""
import argparse
import ctypes
import os
import random
import signal
import sys
import time

import numpy as np
import torch
import torch.distributed as dist


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


def deterministic(on, device):
    """--deterministic: cuBLAS's fixed workspace (read when CUDA starts, so set first), the
    deterministic kernels where torch has them (a warning where it has none), cuDNN's
    deterministic algorithms. Off: cuDNN picks the fastest algorithm per shape (CUDA)."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = device.type == "cuda" and not on


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
        device = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"--device {name!r} is not a device torch knows: {e}") from None
    # torch.device() accepts any index and any known type; the first use would fail mid-run
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"--device {name} was asked for, but {torch.cuda.device_count()} CUDA "
                        f"devices are available")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                     and torch.backends.mps.is_available()):
        raise UserError(f"--device {name} was asked for, but MPS is not available here")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name}: this project runs on cpu, cuda or mps")
    return device


def error_exit(message, code=2):
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def die_with_parent():
    """In the child, before exec: get SIGKILL when the sweep dies, however it dies, so a
    rerun never finds an orphan still training. (The checkpoints are atomic: the rerun
    continues from the last one.)"""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Clock:
    """Seconds spent in each phase of a process, for the fixed-cost line of train.log:
    lap(name) adds the seconds since the previous lap (or `start`) to `name`; on CUDA, pass
    the device to count the queued work too."""

    def __init__(self, start=None):
        self.last = time.perf_counter() if start is None else start
        self.seconds = {}

    def lap(self, name, device=None):
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self.last
        self.last = now


def process_age():
    """Seconds since this process started (Linux: its start time in /proc, 10 ms ticks): what
    the interpreter took before the script's first line, measured from there. None elsewhere."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def available_memory(device):
    """Bytes the device can still give: CUDA's free memory, the host's available RAM; None
    where neither can be read."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
