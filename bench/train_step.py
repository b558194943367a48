"""Throughput of the project's training step against a conventional DataLoader baseline,
its FLOP rate, and the per-epoch cost of evaluation, snapshots and checkpoints.

    python bench/train_step.py                       # LeNet++ and the ResNet, standalone and cent, batch 128
    python bench/train_step.py --quick --fake        # smoke run on generated data, well under a minute
    python bench/train_step.py --amp --channels-last --compile --threads 1   # also time those options

"ours" is the project's own code: main.Net, optim.build_optimizer and main.train_one_epoch
over datasets.train_batches (the whole split as uint8 on the device, batched augmentation),
on a split of exactly --steps batches. The baseline is the usual recipe, built here:
torchvision.datasets.MNIST + per-image RandomRotation(5), ToTensor + DataLoader(num_workers =
cores, shuffle, drop_last), the same model and objective classes, SGD, loss.item() every step.
Repeats of ours and the baseline are interleaved (the order alternating) so that machine
noise hits both alike; throughputs are medians over repeats, ratios medians of the paired
per-repeat ratios. Nothing here is asserted: it measures and reports.
"""
import argparse
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

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import datasets  # noqa: E402
import fakedata  # noqa: E402
import main  # noqa: E402
import visualize  # noqa: E402
from losses import build_objective  # noqa: E402
from models import MODELS, build_model  # noqa: E402
from utils import UserError, pick_device, rng_state, save_checkpoint  # noqa: E402

TRAIN_IMAGES, VAL_IMAGES, NUM_CLASSES = 60000, 10000, 10  # full MNIST, for per-epoch estimates
LOSSES = ("standalone", "cent", "xent")
LR = {"lenet": 0.001, "resnet": 0.01}  # README: LeNet++ (no BatchNorm) wants --lr 0.001
MM_SIZE = 1024


def eval_batch_sizes(args, device):
    """extract_features batch sizes timed: what main.py uses on this device, and the other
    usual choice (1024, or 128 where main uses 1024)."""
    mine = main.eval_batch_size(args, device)
    return mine, (128 if mine == 1024 else 1024)


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


# ----------------------------------------------------------------------------- measuring

def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_rate(fn, work, device, repeats=10, warmup=3):
    """Median of work / seconds over timed calls of fn."""
    for _ in range(warmup):
        fn()
    rates = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        rates.append(work / (time.perf_counter() - t0))
    return statistics.median(rates)


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


# ----------------------------------------------------------------------------- data

def repeat_split(split, n):
    """The first n samples of split (cycled if it is smaller): one 'epoch' of n // batch steps."""
    idx = torch.arange(n, device=split.labels.device) % len(split)
    return datasets.Split(split.images[idx].contiguous(), split.labels[idx], split.classes)


# ----------------------------------------------------------------------------- the two loops

def project_args(model, loss, opts, batch_size, feat_dim, device):
    """main.py's flags for this (model, loss), with main's device-dependent defaults; opts
    turns amp / compile on, or sets channels_last either way."""
    argv = ["--model", model, "--loss", loss, "--batch-size", str(batch_size),
            "--feat-dim", str(feat_dim), "--lr", str(LR[model])]
    argv += [f"--{k}" for k in ("amp", "compile") if opts.get(k)]
    if "channels_last" in opts:
        argv.append("--channels-last" if opts["channels_last"] else "--no-channels-last")
    return main.resolve_auto(main.build_parser().parse_args(argv), device)


class Ours:
    """main.train_one_epoch on a split of exactly `steps` batches: the project's step, data
    path, device-side logging and its syncs every --log-interval steps, as users run them."""

    def __init__(self, model, loss, opts, train, spec, steps, batch_size, feat_dim, device):
        self.args = project_args(model, loss, opts, batch_size, feat_dim, device)
        self.threads = opts.get("threads")
        self.device, self.spec = device, spec
        self.split = repeat_split(train, steps * batch_size)
        channels, size = train.images.shape[1], train.images.shape[-1]
        torch.manual_seed(0)
        self.net, self.optimizer = main.build_net(self.args, NUM_CLASSES, channels, size, device)
        self.memory_format, self.amp_dtype = main.memory_format_of(self.args), self.net.amp_dtype
        self.step_net = torch.compile(self.net) if self.args.compile else self.net
        self.ddp = main.Dist()
        self.epoch = 0

    def run(self):
        """One timed pass; images/s."""
        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            self.epoch += 1
            sync(self.device)
            t0 = time.perf_counter()
            main.train_one_epoch(self.step_net, self.net, self.optimizer, self.split, self.spec,
                                 self.epoch, self.args, self.ddp, bar=False)
            sync(self.device)
            return len(self.split) / (time.perf_counter() - t0)
        finally:
            torch.set_num_threads(previous)


class Baseline:
    """The conventional recipe: torchvision dataset, per-image PIL transforms in DataLoader
    workers, the model and objective called directly, SGD, loss.item() every step."""

    def __init__(self, model, loss, data_dir, steps, batch_size, feat_dim, device, workers):
        transform = transforms.Compose([transforms.RandomRotation(5), transforms.ToTensor()])
        ds = torchvision.datasets.MNIST(data_dir, train=True, download=False, transform=transform)
        self.loader = DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True,
                                 num_workers=workers, persistent_workers=workers > 0,
                                 pin_memory=device.type == "cuda")
        torch.manual_seed(0)
        self.model = build_model(model, feat_dim, 1, 28).to(device)
        self.objective = build_objective(loss, NUM_CLASSES, feat_dim).to(device)
        self.optimizer = torch.optim.SGD(list(self.model.parameters()) + list(self.objective.parameters()),
                                         lr=LR[model], momentum=0.9)
        self.device, self.steps, self.batch_size = device, steps, batch_size
        self.iterator = iter(self.loader)

    def next_batch(self):
        try:
            return next(self.iterator)
        except StopIteration:  # a new epoch (persistent workers: no new processes)
            self.iterator = iter(self.loader)
            return next(self.iterator)

    def run(self):
        self.model.train()
        running = 0.0
        sync(self.device)
        t0 = time.perf_counter()
        for _ in range(self.steps):
            x, y = self.next_batch()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            terms = self.objective(self.model(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            self.optimizer.step()
            running += terms["loss"].item()
        sync(self.device)
        return self.steps * self.batch_size / (time.perf_counter() - t0)

    def worker_pids(self):
        return [w.pid for w in getattr(self.iterator, "_workers", [])]

    def close(self):
        shutdown = getattr(self.iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        del self.iterator


# ----------------------------------------------------------------------------- per-epoch extras

def flops_per_image(ours, batch_size):
    """Forward + backward FLOPs of one training step (uncompiled net), per image."""
    x = torch.rand(batch_size, *ours.split.images.shape[1:], device=ours.device)
    x = x.contiguous(memory_format=ours.memory_format)
    y = torch.arange(batch_size, device=ours.device) % NUM_CLASSES
    counter = FlopCounterMode(display=False)
    with counter:
        _, terms = ours.net(x, y)
        terms["loss"].backward()
    ours.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch_size


def epoch_overhead(ours, val, feat_dim, device, repeats):
    """Seconds per epoch of what main.train does besides training, at full-MNIST sizes:
    extract_features of the val split (scaled to 10,000 images if the split is smaller),
    main.evaluate on 59,904 train + 10,000 val features, visualize.save_snapshot and one
    utils.save_checkpoint (last.pt; best.pt, when the accuracy improves, is one more)."""
    net, ddp = ours.net, ours.ddp
    rates = {}
    batches = eval_batch_sizes(ours.args, device)
    for batch_size in batches:  # what main.py uses first
        extract = lambda: main.extract_features(net.model, val, ddp, feat_dim, batch_size=batch_size,
                                                memory_format=ours.memory_format, amp_dtype=ours.amp_dtype)
        rates[batch_size] = median_rate(extract, len(val), device, repeats=repeats, warmup=1)
    g = torch.Generator().manual_seed(0)
    n_train = TRAIN_IMAGES // ours.args.batch_size * ours.args.batch_size
    train_f, val_f = torch.randn(n_train, feat_dim, generator=g), torch.randn(VAL_IMAGES, feat_dim, generator=g)
    train_l = torch.randint(0, NUM_CLASSES, (n_train,), generator=g)
    val_l = torch.randint(0, NUM_CLASSES, (VAL_IMAGES,), generator=g)
    train_f, val_f, train_l, val_l = (t.to(device) for t in (train_f, val_f, train_l, val_l))
    timings = {}

    def timed(name, fn):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        timings[name] = time.perf_counter() - t0
        return out

    main.evaluate(net.objective, train_f, train_l, val_f, val_l, NUM_CLASSES)  # warm-up
    stats, centers = timed("evaluate_s", lambda: main.evaluate(
        net.objective, train_f, train_l, val_f, val_l, NUM_CLASSES))
    record = {"epoch": 1, "lr": ours.args.lr, "train_loss": 0.0, **stats, "seconds": 1.0}
    folder = tempfile.mkdtemp(prefix="bench-")
    try:
        timed("snapshot_s", lambda: visualize.save_snapshot(folder, 1, train_f, train_l, val_f, val_l,
                                                            centers, record))
        state = {"model": net.model.state_dict(), "objective": net.objective.state_dict(),
                 "optimizer": ours.optimizer.state_dict(), "scheduler": None, "epoch": 1,
                 "best": {"val_acc": 0.0, "epoch": 1}, "history": [record], "args": vars(ours.args),
                 "rng": rng_state()}
        timed("checkpoint_s", lambda: save_checkpoint(state, os.path.join(folder, "last.pt")))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    timings["eval_batch_size"] = batches[0]
    timings["eval_img_s"] = rates[batches[0]]
    timings["extract_s"] = VAL_IMAGES / rates[batches[0]]
    timings["eval_img_s_by_batch"] = {str(b): r for b, r in rates.items()}
    return timings


# ----------------------------------------------------------------------------- one (model, loss)

def variants_of(flags):
    """Options of the project's step to time beside its default: each one asked for, and
    their combinations (amp+channels_last, and all of them)."""
    on = [k for k in ("amp", "channels_last", "compile") if getattr(flags, k)]
    out = [(k, {k: True}) for k in on]
    if flags.channels_last:  # main.py's default on CPU: time the contiguous format as well
        out.append(("contiguous", {"channels_last": False}))
    if len(on) == 3:
        out.append(("amp+channels_last", {"amp": True, "channels_last": True}))
    if len(on) > 1:
        out.append(("+".join(on), {k: True for k in on}))
    out += [(f"threads={n}", {"threads": n}) for n in flags.threads]
    return out


def bench_pair(model, loss, flags, train, val, spec, device, log):
    steps, bs, fd = flags.steps, flags.batch_size, flags.feat_dim
    memory = PeakMemory(device)
    ours = Ours(model, loss, {}, train, spec, steps, bs, fd, device)
    baseline = Baseline(model, loss, flags.data_dir, steps, bs, fd, device, flags.workers)
    variants = []
    for name, opts in variants_of(flags):
        t0 = time.perf_counter()
        v = Ours(model, loss, opts, train, spec, steps, bs, fd, device)
        v.run()  # warm-up (compiles)
        variants.append((name, v, time.perf_counter() - t0))
    t0 = time.perf_counter()
    for _ in range(flags.warmup):
        ours.run()
        baseline.run()
    log(f"  {model}/{loss}: warm-up {time.perf_counter() - t0:.1f}s")

    runs = {"ours": [], "baseline": [], **{name: [] for name, _, _ in variants}}
    peaks = {"ours": [0.0, 0.0], "baseline": [0.0, 0.0]}  # peak, growth over the run's start
    for r in range(flags.repeats):
        order = [("ours", ours), ("baseline", baseline)] + [(name, v) for name, v, _ in variants]
        if r % 2:
            order.reverse()
        for name, runner in order:
            memory.reset()
            runs[name].append(runner.run())
            if name in peaks:
                peaks[name] = [max(a, b) for a, b in zip(peaks[name], memory.read_mb())]
        log(f"  {model}/{loss} repeat {r + 1}/{flags.repeats}: " +
            "  ".join(f"{k} {v[-1]:.0f}" for k, v in runs.items()) + " img/s")
    workers_mb = [process_status_mb(pid, "VmHWM:") for pid in baseline.worker_pids()]
    baseline.close()

    ours_img_s = statistics.median(runs["ours"])
    flops = flops_per_image(ours, bs)
    overhead = epoch_overhead(ours, val, fd, device, repeats=1 if flags.quick else 2)
    train_epoch_s = (TRAIN_IMAGES // bs * bs) / ours_img_s
    overhead_s = overhead["extract_s"] + overhead["evaluate_s"] + overhead["snapshot_s"] + overhead["checkpoint_s"]
    gflops = flops * ours_img_s / 1e9
    result = {
        "ours_img_s": ours_img_s,
        "baseline_img_s": statistics.median(runs["baseline"]),
        "ratio": statistics.median(o / b for o, b in zip(runs["ours"], runs["baseline"])),
        "ours_img_s_repeats": runs["ours"],
        "baseline_img_s_repeats": runs["baseline"],
        "flops_per_image": flops,
        "achieved_gflops": gflops,
        "eval_img_s": overhead["eval_img_s"],
        "eval_batch_size": overhead["eval_batch_size"],
        "eval_img_s_by_batch": overhead["eval_img_s_by_batch"],
        "train_epoch_s_est": train_epoch_s,
        "extract_s": overhead["extract_s"],
        "evaluate_s": overhead["evaluate_s"],
        "snapshot_s": overhead["snapshot_s"],
        "checkpoint_s": overhead["checkpoint_s"],
        "overhead_s": overhead_s,
        "overhead_frac": overhead_s / train_epoch_s,
        "peak_mem_mb_ours": peaks["ours"][0],
        "peak_mem_mb_baseline": peaks["baseline"][0],
        "peak_mem_growth_mb_ours": peaks["ours"][1],
        "peak_mem_growth_mb_baseline": peaks["baseline"][1],
        "peak_mem_kind": memory.kind,
        "baseline_workers_peak_rss_mb": sum(m for m in workers_mb if m is not None),
        "variants": {},
    }
    for name, _, setup_s in variants:
        result["variants"][name] = {
            "img_s": statistics.median(runs[name]),
            "speedup": statistics.median(v / o for v, o in zip(runs[name], runs["ours"])),
            "img_s_repeats": runs[name],
            "setup_s": setup_s,
        }
    return result


# ----------------------------------------------------------------------------- report

def fixed_width(report, columns):
    """Header, rule and one row per (model, loss): columns are (title, width, format(result))."""
    head = f"{'model':<7}{'loss':<11}" + "".join(f"{t:>{w}}" for t, w, _ in columns)
    rows = [f"{model:<7}{loss:<11}" + "".join(f"{fmt(r):>{w}}" for _, w, fmt in columns)
            for model, per_loss in report["results"].items() for loss, r in per_loss.items()]
    return [head, "-" * len(head), *rows]


def table(report):
    meta, rates = report["meta"], report["rates"]
    lines = [f"train_step.py  {meta['date']}  torch {meta['torch']}  device {meta['device']}  "
             f"threads {meta['threads']}  cores {meta['cores']}  data {meta['data']}",
             f"batch {meta['batch_size']}  feat-dim {meta['feat_dim']}  steps {meta['steps']} x "
             f"repeats {meta['repeats']} (medians, interleaved)  baseline workers {meta['workers']}  "
             f"load avg {meta['loadavg_start']:.2f} -> {meta['loadavg_end']:.2f}",
             f"fp32 torch.mm {MM_SIZE}x{MM_SIZE}: {rates['mm_gflops']:.0f} GFLOP/s;  "
             f"conv ref (128x64x14x14, 64->64 5x5): {rates['conv_ref_gflops']:.0f} GFLOP/s", ""]
    lines += fixed_width(report, [
        ("ours img/s", 11, lambda r: f"{r['ours_img_s']:.0f}"),
        ("base img/s", 11, lambda r: f"{r['baseline_img_s']:.0f}"),
        ("ratio", 7, lambda r: f"{r['ratio']:.2f}"),
        ("MFLOP/img", 10, lambda r: f"{r['flops_per_image'] / 1e6:.0f}"),
        ("GFLOP/s", 9, lambda r: f"{r['achieved_gflops']:.0f}"),
        ("/mm", 6, lambda r: f"{r['frac_of_mm']:.2f}"),
        ("/conv", 6, lambda r: f"{r['frac_of_conv_ref']:.2f}"),
        ("eval img/s", 11, lambda r: f"{r['eval_img_s']:.0f}"),
        ("epoch s*", 9, lambda r: f"{r['train_epoch_s_est']:.1f}"),
        ("ovh %", 7, lambda r: f"{100 * r['overhead_frac']:.1f}"),
        ("RSS MB o/b", 12, lambda r: f"{r['peak_mem_mb_ours']:.0f}/{r['peak_mem_mb_baseline']:.0f}"),
    ])
    lines += ["", "epoch s* = estimated training seconds of one full-MNIST epoch (59,904 images / "
              "ours img/s). ovh % = (extract_features of 10,000 val + evaluate + save_snapshot + "
              "save_checkpoint) / epoch s*, itemised below.", ""]
    first = next(iter(next(iter(report["results"].values())).values()))
    mine = first["eval_batch_size"]
    small = next(k for k in first["eval_img_s_by_batch"] if int(k) != mine)

    def overhead_at_small(r):
        s = r["overhead_s"] - r["extract_s"] + VAL_IMAGES / r["eval_img_s_by_batch"][small]
        return f"{100 * s / r['train_epoch_s_est']:.1f}"

    lines += fixed_width(report, [
        ("extract s", 10, lambda r: f"{r['extract_s']:.3f}"),
        ("evaluate s", 11, lambda r: f"{r['evaluate_s']:.3f}"),
        ("snapshot s", 11, lambda r: f"{r['snapshot_s']:.3f}"),
        ("ckpt s", 8, lambda r: f"{r['checkpoint_s']:.3f}"),
        ("overhead s", 11, lambda r: f"{r['overhead_s']:.3f}"),
        ("epoch s*", 9, lambda r: f"{r['train_epoch_s_est']:.1f}"),
        ("ovh %", 7, lambda r: f"{100 * r['overhead_frac']:.1f}"),
        (f"eval img/s b{small}", 17, lambda r: f"{r['eval_img_s_by_batch'][small]:.0f}"),
        (f"ovh % b{small}", 12, overhead_at_small),
        ("step +MB o/b", 14, lambda r: f"{r['peak_mem_growth_mb_ours']:.0f}/"
                                       f"{r['peak_mem_growth_mb_baseline']:.0f}"),
        ("workers MB", 11, lambda r: f"{r['baseline_workers_peak_rss_mb']:.0f}"),
    ])
    lines += [f"extract s = 10,000 val images / eval img/s at the evaluation batch "
              f"{mine} (what main.py runs); the next two columns: the same at batch {small}.",
              f"RSS MB o/b: the process's peak RSS ({report['meta']['peak_mem_kind']}) while ours / the "
              "baseline ran, libraries and both datasets included; step +MB: its growth over the "
              "run's start; workers MB: the baseline's DataLoader workers' peak RSS, summed (shared "
              "pages counted in each)."]
    rows = [(m, l, n, v) for m, pl in report["results"].items() for l, r in pl.items()
            for n, v in r["variants"].items()]
    if rows:
        head = (f"{'model':<7}{'loss':<12}{'option':<30}{'img/s':>8}{'vs default':>11}"
                f"{'setup s':>9}")
        lines += ["", head, "-" * len(head)]
        lines += [f"{m:<7}{l:<12}{n:<30}{v['img_s']:>8.0f}{v['speedup']:>10.2f}x{v['setup_s']:>9.1f}"
                  for m, l, n, v in rows]
        lines += ["vs default: median of the paired per-repeat ratios to the default step; setup s: "
                  "building it and its first (warm-up) pass, torch.compile's compilation included."]
    if "resnet_epoch_s_est" in report:
        lines += ["", f"reference ResNet, full-MNIST training epoch: {report['resnet_epoch_s_est']:.1f} s "
                  f"(estimate: 59,904 images / ours img/s, {report['resnet_epoch_loss']}; without "
                  "the per-epoch overhead above)"]
    return "\n".join(lines)


def parse_flags(argv=None):
    p = main.OneLineParser(description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--data-dir", default="./data", help="holds MNIST/raw in torchvision's layout")
    p.add_argument("--fake", action="store_true", help="generated images of MNIST's shape, fakedata.py (smoke runs)")
    p.add_argument("--quick", action="store_true", help="tiny step counts: a smoke run under a minute")
    p.add_argument("--steps", type=int, default=None, help="timed steps per repeat (default 30, quick 3)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5, quick 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes of --steps before the repeats")
    p.add_argument("--models", default="lenet,resnet")
    p.add_argument("--losses", default="standalone,cent")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--feat-dim", type=int, default=2)
    p.add_argument("--workers", type=int, default=cores(), help="baseline DataLoader workers")
    p.add_argument("--amp", action="store_true", help="also time the step with bf16 autocast")
    p.add_argument("--channels-last", action="store_true", help="also time it with channels_last on, and off")
    p.add_argument("--compile", action="store_true", help="also time it under torch.compile")
    p.add_argument("--threads", default="", help="also time it with torch.set_num_threads(N), e.g. 1,4")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/bench-<device>-<date>.json)")
    f = p.parse_args(argv)
    f.steps = f.steps or (3 if f.quick else 30)
    f.repeats = f.repeats or (2 if f.quick else 5)
    f.models = [m for m in f.models.split(",") if m]
    f.losses = [l for l in f.losses.split(",") if l]
    try:
        f.threads = [int(n) for n in f.threads.split(",") if n]
    except ValueError:
        p.error(f"--threads takes integers separated by commas, got {f.threads!r}")
    for m in f.models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    for l in f.losses:
        if l not in LOSSES:
            p.error(f"unknown loss {l!r}; choose from {', '.join(LOSSES)}")
    for name in ("steps", "repeats", "batch_size", "feat_dim"):
        if getattr(f, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if f.warmup < 0 or f.workers < 0 or any(n <= 0 for n in f.threads):
        p.error("--warmup and --workers must not be negative, --threads must be positive")
    return f


def run(flags):
    log = lambda line: print(line, file=sys.stderr, flush=True)
    device = pick_device(flags.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    fake_dir = None
    data = "real MNIST"
    if flags.fake:
        fake_dir = tempfile.mkdtemp(prefix="bench-fake-mnist-")
        n_train, n_val = (4096, 1024) if flags.quick else (TRAIN_IMAGES, VAL_IMAGES)
        flags.data_dir = fakedata.write_mnist(fake_dir, n_train=n_train, n_test=n_val)
        data = f"FAKE (generated, {n_train} train / {n_val} val images; smoke use only)"
    try:
        try:
            train = datasets.load_split("mnist", flags.data_dir, True, device, download=False)
            val = datasets.load_split("mnist", flags.data_dir, False, device, download=False)
        except UserError:
            raise UserError(f"MNIST not found in {flags.data_dir}: bench/train_step.py reads "
                            f"{os.path.join(flags.data_dir, 'MNIST', 'raw')}/{{train,t10k}}-"
                            "{images-idx3,labels-idx1}-ubyte and never downloads; pass --data-dir, "
                            "or --fake for generated data of MNIST's shape") from None
        if flags.quick and len(val) > 1024:
            val = datasets.Split(val.images[:1024], val.labels[:1024], val.classes)
        spec = datasets.augmentation("mnist")
        date = datetime.datetime.now().strftime("%Y-%m-%d")
        meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
                "torchvision": torchvision.__version__, "python": platform.python_version(),
                "device": str(device),
                "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                                else cpu_name()),
                "threads": torch.get_num_threads(), "cores": cores(), "data": data,
                "data_dir": None if flags.fake else os.path.abspath(flags.data_dir),
                "train_images": len(train), "val_images": len(val), "batch_size": flags.batch_size,
                "feat_dim": flags.feat_dim, "steps": flags.steps, "repeats": flags.repeats,
                "warmup": flags.warmup, "workers": flags.workers, "quick": flags.quick,
                "loadavg_start": os.getloadavg()[0],
                "peak_mem_kind": PeakMemory(device).kind}
        log(f"bench: {meta['device']}, {meta['threads']} threads, {data}")
        mm1, conv1 = matmul_gflops(device)
        results = {}
        for model in flags.models:
            for loss in flags.losses:
                results.setdefault(model, {})[loss] = bench_pair(
                    model, loss, flags, train, val, spec, device, log)
        mm2, conv2 = matmul_gflops(device)  # again at the end: the machine's rate may drift
        rates = {"mm_gflops": (mm1 + mm2) / 2, "conv_ref_gflops": (conv1 + conv2) / 2,
                 "mm_gflops_start_end": [mm1, mm2], "conv_ref_gflops_start_end": [conv1, conv2],
                 "mm": f"fp32 torch.mm {MM_SIZE}x{MM_SIZE} @ {MM_SIZE}x{MM_SIZE}, median of 10",
                 "conv_ref": "fp32 F.conv2d 128x64x14x14, 64->64 5x5 pad 2 (LeNet++ conv4), median of 10"}
        for per_loss in results.values():  # fractions against the start/end mean rate
            for r in per_loss.values():
                r["frac_of_mm"] = r["achieved_gflops"] / rates["mm_gflops"]
                r["frac_of_conv_ref"] = r["achieved_gflops"] / rates["conv_ref_gflops"]
        meta["loadavg_end"] = os.getloadavg()[0]
        report = {"meta": meta, "rates": rates, "results": results}
        if "resnet" in results:
            loss = next(iter(results["resnet"]))
            report["resnet_epoch_s_est"] = results["resnet"][loss]["train_epoch_s_est"]
            report["resnet_epoch_loss"] = loss
        text = table(report)
        print(text, flush=True)
        out = flags.out or os.path.join("bench", "results", f"bench-{device.type}-{date}.json")
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        report["table"] = text
        with open(out, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"wrote {out}", flush=True)
        return report
    finally:
        if fake_dir:
            shutil.rmtree(fake_dir, ignore_errors=True)


def main_cli(argv=None):
    flags = parse_flags(argv)
    try:
        run(flags)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except main.NonFiniteError as e:
        print(f"error: the training step diverged while benchmarking: {e}", file=sys.stderr, flush=True)
        sys.exit(3)


if __name__ == "__main__":
    main_cli()
