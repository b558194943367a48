"""What the benchmarks share: the machine (cores, CPU name), timing on any device (sync,
timed, median_rate), reference rates (matmul_gflops), peak memory, the data (MNIST files in
torchvision's layout, or fakedata.py's generated ones; synthetic feature snapshots), the
project's own training step (Ours), the flags every benchmark takes, the fixed-width table
printer and the JSON report.

Every benchmark takes --device cpu|cuda|auto, --quick (tiny sizes: a smoke run well under a
minute), --fake (generated data, fakedata.py) and --out (the JSON report; default
bench/results/<benchmark>-<device>-<date>.json). Nothing here is asserted: the benchmarks
measure and report.
"""
import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import datasets  # noqa: E402
import engine  # noqa: E402
import fakedata  # noqa: E402
import flags as project_flags  # noqa: E402
import rundir  # noqa: E402
from models import MODELS  # noqa: E402
from utils import Dist, OneLineParser, UserError, deterministic, pick_device  # noqa: E402

TRAIN_IMAGES, VAL_IMAGES, NUM_CLASSES = 60000, 10000, 10  # full MNIST, for per-epoch estimates
QUICK_TRAIN, QUICK_VAL = 4096, 1024  # --quick --fake: the generated split sizes
LOSSES = ("standalone", "cent", "xent")
MM_SIZE = 1024


def lr_of(model):
    """The learning rate a benchmark trains a model at: LeNet++ (no BatchNorm) wants 0.001,
    every ResNet 0.01."""
    return 0.001 if model == "lenet" else 0.01


# ----------------------------------------------------------------------------- the machine

def cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_of(cfg):
    """The torch device of --device (a UserError, one line, where it is missing)."""
    device = pick_device(cfg.device)
    deterministic(False, device)  # as main.py without --deterministic: cuDNN autotunes
    return device


# ----------------------------------------------------------------------------- measuring

def sync(device):
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device=None):
    """(seconds, result) of one call of fn(), the device synced before and after."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def median_rate(fn, work, device, repeats=10, warmup=3):
    """Median of work / seconds over timed calls of fn."""
    for _ in range(warmup):
        fn()
    return statistics.median(work / timed(fn, device)[0] for _ in range(repeats))


def median_seconds(fn, repeats, device=None):
    """Median seconds of fn(0), ..., fn(repeats - 1)."""
    return statistics.median(timed(lambda: fn(i), device)[0] for i in range(repeats))


def matmul_gflops(device):
    """fp32 torch.mm of MM_SIZE^2 (on CPU: MKL sgemm) and, for reference, the oneDNN/cuDNN
    rate of one of LeNet++'s own convolutions (128 x 64 x 14 x 14, 64 -> 64, 5x5)."""
    a, b = torch.randn(MM_SIZE, MM_SIZE, device=device), torch.randn(MM_SIZE, MM_SIZE, device=device)
    mm = median_rate(lambda: torch.mm(a, b), 2 * MM_SIZE ** 3, device) / 1e9
    x, w = torch.randn(128, 64, 14, 14, device=device), torch.randn(64, 64, 5, 5, device=device)
    conv = median_rate(lambda: F.conv2d(x, w, padding=2), 2 * 128 * 196 * 64 * 64 * 25, device) / 1e9
    return mm, conv


class PeakMemory:
    """High-water mark of the process's RSS (Linux: VmHWM, reset through clear_refs, so each
    phase gets its own), or of CUDA memory allocated; and its growth over the phase's start
    (the phase's own working memory, without what was resident before: libraries, data)."""

    def __init__(self, device):
        self.device = device
        self.kind = "cuda_max_memory_allocated" if device.type == "cuda" else "rss_high_water"
        self.start = 0.0

    def reset(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device) / 2 ** 20
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.kind = "ru_maxrss (process lifetime)"
        self.start = process_status_mb("self", "VmRSS:") or 0.0

    def read_mb(self):
        """(peak, peak - start) in MB."""
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        else:
            peak = process_status_mb("self", "VmHWM:")
            if peak is None:
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return peak, max(0.0, peak - self.start)


def process_status_mb(pid, field):
    """A memory field (VmHWM:, VmRSS:) of /proc/<pid>/status in MB, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def interleaved(runners, repeats, log, label, memory=None, watched=()):
    """Each runner (name -> object whose run() returns images/s) `repeats` times, the order
    reversed every other repeat so that machine noise hits all alike. Returns {name: [img/s
    per repeat]} and, for the names in `watched`, {name: [peak MB, growth MB]} (memory: a
    PeakMemory)."""
    runs = {name: [] for name in runners}
    peaks = {name: [0.0, 0.0] for name in watched}
    for r in range(repeats):
        order = list(runners.items())
        if r % 2:
            order.reverse()
        for name, runner in order:
            if memory is not None:
                memory.reset()
            runs[name].append(runner.run())
            if name in peaks:
                peaks[name] = [max(a, b) for a, b in zip(peaks[name], memory.read_mb())]
        log(f"  {label} repeat {r + 1}/{repeats}: "
            + "  ".join(f"{k} {v[-1]:.0f}" for k, v in runs.items()) + " img/s")
    return runs, peaks


def paired_ratio(runs, name, reference):
    """Median of the per-repeat ratios runs[name] / runs[reference]."""
    return statistics.median(a / b for a, b in zip(runs[name], runs[reference]))


# ----------------------------------------------------------------------------- data

@contextlib.contextmanager
def mnist(cfg, device):
    """MNIST on the device: SimpleNamespace(train, val (the official test split), spec,
    data_dir, description). --data-dir's files in torchvision's layout (never downloaded), or
    with --fake fakedata.py's generated ones (QUICK_TRAIN + QUICK_VAL images with --quick,
    else full MNIST's sizes) in a temporary folder, removed afterwards."""
    fake_dir = None
    try:
        data_dir, description = cfg.data_dir, "real MNIST"
        if cfg.fake:
            fake_dir = tempfile.mkdtemp(prefix="bench-fake-mnist-")
            n_train, n_val = (QUICK_TRAIN, QUICK_VAL) if cfg.quick else (TRAIN_IMAGES, VAL_IMAGES)
            data_dir = fakedata.write_mnist(fake_dir, n_train=n_train, n_test=n_val)
            description = f"FAKE (generated, {n_train} train / {n_val} val images; smoke use only)"
        try:
            train = datasets.load_split("mnist", data_dir, True, device, download=False)
            val = datasets.load_split("mnist", data_dir, False, device, download=False)
        except UserError:
            raise UserError(f"MNIST not found in {data_dir}: the benchmark reads "
                            f"{os.path.join(data_dir, 'MNIST', 'raw')}/{{train,t10k}}-"
                            "{images-idx3,labels-idx1}-ubyte and never downloads; pass --data-dir, "
                            "or --fake for generated data of MNIST's shape") from None
        if cfg.quick and len(val) > QUICK_VAL:
            val = datasets.Split(val.images[:QUICK_VAL], val.labels[:QUICK_VAL], val.classes)
        yield SimpleNamespace(train=train, val=val, spec=datasets.augmentation("mnist"),
                              data_dir=data_dir, description=description)
    finally:
        if fake_dir:
            shutil.rmtree(fake_dir, ignore_errors=True)


def repeat_split(split, n):
    """The first n samples of split (cycled if it is smaller)."""
    idx = torch.arange(n, device=split.labels.device) % len(split)
    return datasets.Split(split.images[idx].contiguous(), split.labels[idx], split.classes)


def synthetic_run(run_dir, epochs, n_train, n_val, device, seed=0):
    """A run directory of `epochs` snapshots of 2-D features (ten Gaussian classes drifting
    apart), written with rundir.save_snapshot, and its args.json. Returns (args, records)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(10, 2)) * 5
    args = {"loss": "standalone", "dataset": "mnist", "model": "resnet", "feat_dim": 2,
            "epochs": epochs}
    records = []
    for epoch in range(1, epochs + 1):
        scale = epoch / epochs
        centers = means * scale
        arrays = {"centers": torch.from_numpy(centers).float().to(device)}
        for split, n in (("train", n_train), ("val", n_val)):
            labels = rng.integers(0, 10, n)
            points = (centers[labels] + rng.normal(size=(n, 2))).astype(np.float32)
            arrays[f"{split}_features"] = torch.from_numpy(points).to(device)
            arrays[f"{split}_labels"] = torch.from_numpy(labels).to(device)
        distances = np.linalg.norm(centers[:, None] - centers[None], axis=2)
        record = {"epoch": epoch, "lr": 0.01, "train_loss": -1.0, "train_intra": 1.0,
                  "train_inter": -2.0, "train_acc": 0.9, "train_nc_acc": 0.9, "val_acc": 0.9,
                  "val_nc_acc": 0.9, "val_dist_to_center_mean": rng.uniform(1, 2, 10).tolist(),
                  "val_dist_to_center_std": rng.uniform(0, 1, 10).tolist(),
                  "val_center_distances": distances.tolist(), "seconds": 10.0}
        rundir.save_snapshot(run_dir, epoch, arrays, record)
        records.append(record)
    rundir.atomic_write_text(os.path.join(run_dir, "args.json"), json.dumps(args))
    return args, records


# ----------------------------------------------------------------------------- the project's step

def project_args(model, loss, options, batch_size, feat_dim, device):
    """main.py's flags for this (model, loss), the reference recipe applied and the
    device-dependent defaults resolved; options turns amp / compile on, or sets
    channels_last either way, and center_crop the images' size."""
    argv = ["--model", model, "--loss", loss, "--dataset", "mnist", "--batch-size", str(batch_size),
            "--feat-dim", str(feat_dim), "--lr", str(lr_of(model))]
    argv += [f"--{k}" for k in ("amp", "compile") if options.get(k)]
    if "channels_last" in options:
        argv.append("--channels-last" if options["channels_last"] else "--no-channels-last")
    if options.get("center_crop"):
        argv += ["--center-crop", str(options["center_crop"])]
    args, _ = project_flags.parse_args(argv)
    return engine.resolve_auto(args, device)


class Ours:
    """engine.train_one_epoch on a split of exactly --steps batches: the project's step, data
    path, device-side logging and its syncs every --log-interval steps, as users run them.
    options: amp, compile, channels_last, center_crop (see project_args) and threads."""

    def __init__(self, model, loss, cfg, data, device, options=None):
        options = options or {}
        self.args = project_args(model, loss, options, cfg.batch_size, cfg.feat_dim, device)
        self.threads = options.get("threads")
        self.device, self.spec = device, data.spec
        train = datasets.center_crop(data.train, self.args.center_crop, self.args.dataset)
        self.split = repeat_split(train, cfg.steps * cfg.batch_size)
        channels, size = train.images.shape[1], train.images.shape[-1]
        torch.manual_seed(0)
        self.net, self.optimizer = engine.build_net(self.args, NUM_CLASSES, channels, size, device)
        self.memory_format = engine.memory_format_of(self.args)
        self.step_net = torch.compile(self.net) if self.args.compile else self.net
        self.ddp = Dist()
        self.epoch = 0

    def run(self):
        """One timed pass; images/s."""
        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            self.epoch += 1
            seconds, _ = timed(lambda: engine.train_one_epoch(
                self.step_net, self.net, self.optimizer, self.split, self.spec, self.epoch,
                self.args, self.ddp, bar=False), self.device)
            return len(self.split) / seconds
        finally:
            torch.set_num_threads(previous)


def epoch_seconds(img_s, batch_size):
    """Estimated training seconds of one full-MNIST epoch (the whole batches of 60,000)."""
    return TRAIN_IMAGES // batch_size * batch_size / img_s


# ----------------------------------------------------------------------------- flags

def parser(doc, training=False):
    """The flags every benchmark takes; training: also those of the benchmarks that time the
    training step on MNIST."""
    p = OneLineParser(description=doc.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run well under a minute")
    p.add_argument("--fake", action="store_true",
                   help="generated data (fakedata.py; smoke runs)" if training else
                   "generated data (this benchmark's data is always generated)")
    p.add_argument("--out", default=None,
                   help="JSON path (default bench/results/<benchmark>-<device>-<date>.json)")
    if training:
        p.add_argument("--data-dir", default="./data", help="holds MNIST/raw in torchvision's layout")
        p.add_argument("--steps", type=int, default=None, help="timed steps per repeat (default 30, quick 2)")
        p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5, quick 2)")
        p.add_argument("--warmup", type=int, default=1, help="untimed passes of --steps before the repeats")
        p.add_argument("--models", default="lenet,resnet")
        p.add_argument("--losses", default=None, help="default standalone,cent; quick standalone")
        p.add_argument("--batch-size", type=int, default=128)
        p.add_argument("--feat-dim", type=int, default=2)
    return p


def parse(p, argv=None):
    """Parse and check the flags; fill in the defaults that depend on --quick."""
    cfg = p.parse_args(argv)
    if not hasattr(cfg, "models"):
        return cfg
    if cfg.steps is None:
        cfg.steps = 2 if cfg.quick else 30
    if cfg.losses is None:
        cfg.losses = "standalone" if cfg.quick else "standalone,cent"
    if cfg.repeats is None:
        cfg.repeats = 2 if cfg.quick else 5
    cfg.models = [m for m in cfg.models.split(",") if m]
    cfg.losses = [loss for loss in cfg.losses.split(",") if loss]
    for m in cfg.models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    for loss in cfg.losses:
        if loss not in LOSSES:
            p.error(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
    for name in ("steps", "repeats", "batch_size", "feat_dim"):
        if getattr(cfg, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if cfg.warmup < 0:
        p.error("--warmup must not be negative")
    return cfg


def int_list(p, text, flag):
    """'1,4' -> [1, 4], each positive; a one-line error otherwise."""
    try:
        values = [int(n) for n in text.split(",") if n]
    except ValueError:
        p.error(f"{flag} takes integers separated by commas, got {text!r}")
    if any(n <= 0 for n in values):
        p.error(f"{flag} takes positive integers, got {text!r}")
    return values


def log(line):
    print(line, file=sys.stderr, flush=True)


def cli(run, cfg):
    """run(cfg), with one line on stderr and exit code 2 for a user error, 3 for a diverged
    training step."""
    try:
        run(cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except engine.NonFiniteError as e:
        print(f"error: the training step diverged while benchmarking: {e}", file=sys.stderr, flush=True)
        sys.exit(3)


# ----------------------------------------------------------------------------- report

def meta(cfg, device, **extra):
    """What the numbers were measured on."""
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "python": platform.python_version(),
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
            "threads": torch.get_num_threads(), "cores": cores(), "quick": cfg.quick,
            "loadavg_start": os.getloadavg()[0], **extra}


def pair_report(cfg, device, measure_pair, **extra):
    """{"meta", "results"} of a benchmark that times the training step: results[model][loss]
    = measure_pair(model, loss, cfg, data, device) for every --models x --losses, on the data
    of the flags; extra: more of meta."""
    with mnist(cfg, device) as data:
        m = meta(cfg, device, data=data.description,
                 data_dir=None if cfg.fake else os.path.abspath(cfg.data_dir),
                 train_images=len(data.train), val_images=len(data.val), batch_size=cfg.batch_size,
                 feat_dim=cfg.feat_dim, steps=cfg.steps, repeats=cfg.repeats, warmup=cfg.warmup,
                 peak_mem_kind=PeakMemory(device).kind, **extra)
        log(f"bench: {m['device']}, {m['threads']} threads, {data.description}")
        results = {model: {loss: measure_pair(model, loss, cfg, data, device) for loss in cfg.losses}
                   for model in cfg.models}
    return {"meta": m, "results": results}


def header(name, m):
    """The table's first lines: what, when, on what (m: the report's meta)."""
    lines = [f"{name}  {m['date']}  torch {m['torch']}  device {m['device']} ({m['device_name']})  "
             f"threads {m['threads']}  cores {m['cores']}  load avg {m['loadavg_start']:.2f} -> "
             f"{m['loadavg_end']:.2f}"]
    if "data" in m:
        lines.append(f"data {m['data']}  batch {m['batch_size']}  feat-dim {m['feat_dim']}  steps "
                     f"{m['steps']} x repeats {m['repeats']} (medians, interleaved)")
    return lines


def fixed_width(rows, columns):
    """Header, rule and one line per row (a dict): columns are (title, width, format(row));
    a negative width aligns left; a column widens to one space more than its longest cell."""
    cells = [[fmt(row) for _, _, fmt in columns] for row in rows]
    widths = [max([abs(width), len(title) + 1] + [len(line[i]) + 1 for line in cells])
              * (-1 if width < 0 else 1) for i, (title, width, _) in enumerate(columns)]

    def cell(text, width):
        return f"{text:<{-width}}" if width < 0 else f"{text:>{width}}"
    head = "".join(cell(title, width) for (title, _, _), width in zip(columns, widths))
    return [head, "-" * len(head),
            *("".join(cell(text, width) for text, width in zip(line, widths)) for line in cells)]


PAIR_COLUMNS = [("model", -11, lambda r: r["model"]), ("loss", -11, lambda r: r["loss"])]


def pair_rows(results):
    """{model: {loss: result}} -> one row per (model, loss), model and loss included."""
    return [{"model": m, "loss": loss, **r} for m, per_loss in results.items()
            for loss, r in per_loss.items()]


def publish(name, cfg, device, report, table):
    """Print table(report) and write the report, the table included, as JSON to --out."""
    report["meta"].update(benchmark=name, loadavg_end=os.getloadavg()[0])
    text = table(report)
    print(text, flush=True)
    date = datetime.datetime.now().strftime("%Y-%m-%d")
    out = cfg.out or os.path.join(ROOT, "bench", "results", f"{name}-{device.type}-{date}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    report["table"] = text
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(f"wrote {out}", flush=True)
    return report
