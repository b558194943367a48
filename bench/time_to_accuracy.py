"""How long, end to end, until each study loss reaches its target test accuracy under each
recipe (reference, fast, quick)?

    python bench/time_to_accuracy.py --data-dir <root>            # MNIST and Fashion-MNIST, 2-D
    python bench/time_to_accuracy.py --data-dir <root> --recipes quick --losses xent \\
        --datasets mnist --seeds 0,1,2 --quick-epochs ""           # quick's accuracy over seeds
    python bench/time_to_accuracy.py --quick --fake                # smoke run on generated data

Each run is `python main.py --recipe R --loss L --dataset D --feat-dim 2` as a user starts
it, one after another (never two at once), in a temporary log folder. The wall clock starts
before the process does; metrics.jsonl is read every 50 ms, so each record gets the time it
appeared: the target's time is that of the first record whose test accuracy reaches it
(--targets: 0.99 on MNIST, 0.90 on Fashion-MNIST). A run still going after --budget-seconds
gets SIGTERM (main.py ends the step and exits), so `reference` need not run its 100 epochs.

Reported per run: wall seconds (start to exit), the target's seconds, final accuracy, the
fixed costs from train.log's timing line (start-up and imports, setup, data, build, first
step, training, evaluation, saving, drawing), training steps/s and img/s and the achieved
GFLOP/s (forward + backward FLOPs per image from torch.utils.flop_counter) against a
convolution and a matmul rate measured here before the runs (common.matmul_gflops; fp32,
while the quick recipe trains in bf16 where the CPU has it natively). Per (dataset, loss):
medians over seeds and the ratios of the recipes' times to the target, and the points of a
budget curve (seconds, accuracy) per recipe; --quick-epochs adds runs of the quick recipe
at other lengths to that curve. Also the interpreter's own start-up and `import torch`,
measured alone. The table is Markdown, for the README's speed section.
"""
import functools
import json
import os
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402
import datasets  # noqa: E402
import fakedata  # noqa: E402
import rundir  # noqa: E402
from losses import build_objective  # noqa: E402
from models import build_model  # noqa: E402
from utils import UserError  # noqa: E402

NAME = "time_to_accuracy"
MAIN = os.path.join(common.ROOT, "main.py")
RECIPES = ("reference", "fast", "quick")
DATASETS = ("mnist", "fashion-mnist")
TARGETS = {"mnist": 0.99, "fashion-mnist": 0.90}
FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
POLL_S = 0.05
GRACE_S = 120  # after SIGTERM, the step in flight and the exit; then SIGKILL
# --quick: batches of 32 (8 steps an epoch of the 256 generated images), 6 steps in all (a
# partial epoch), no pictures, at lr 0.05: the generated images' few steps at quick's 0.2 can
# blow the strided ResNet's stem up (standalone: non-finite evaluated features)
QUICK_FLAGS = ["--batch-size", "32", "--steps", "6", "--no-plots", "--lr", "0.05"]
QUICK_SIZES = (256, 128)


# ----------------------------------------------------------------------------- one run

def complete_lines(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return []
    return [line for line in text.split("\n")[:-1] if line.strip()]


def planned_epochs(run_dir):
    """args.json's epochs, or None before the run has written it."""
    try:
        return rundir.read_args(run_dir)["epochs"]
    except UserError:
        return None


def watch(cmd, run_dir, budget_s, log_path, stop_at=None):
    """Start cmd, stamp each metrics.jsonl record with the seconds since the start at which it
    appeared, stop the run at the budget (or, given stop_at, once a record's test accuracy
    reaches it, unless that record is its last: the run then ends as a user sees it end).
    Returns (records, arrivals, wall_s, returncode, stopped by the budget)."""
    jsonl = os.path.join(run_dir, "metrics.jsonl")
    arrivals, termed_at, budget_hit, planned = [], None, False, None
    with open(log_path, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=common.ROOT, stdout=out, stderr=subprocess.STDOUT)
        while True:
            finished = proc.poll() is not None
            now = time.perf_counter() - t0
            lines = complete_lines(jsonl)
            arrivals += [now] * (len(lines) - len(arrivals))
            if finished:
                break
            if termed_at is None:
                budget_hit = now > budget_s
                last = json.loads(lines[-1]) if lines else {}
                at_target = stop_at is not None and (last.get("test_acc") or 0) >= stop_at
                if at_target:  # and not its last record: what is left is its end, not training
                    planned = planned or planned_epochs(run_dir)
                    at_target = not (planned and "epoch" in last
                                     and rundir.epochs_done(last) >= planned)
                if budget_hit or at_target:
                    proc.send_signal(signal.SIGTERM)
                    termed_at = now
            elif now > termed_at + GRACE_S:
                proc.kill()
            time.sleep(POLL_S)
        wall = time.perf_counter() - t0
    records = [json.loads(line) for line in complete_lines(jsonl)]
    return records, arrivals[:len(records)], wall, proc.returncode, budget_hit


def train_size(data_dir, dataset, args):
    """Training images of a run: the labels file's count, less --subset and --val-size."""
    labels = datasets.split_files(dataset, data_dir, True)[1]
    with open(labels, "rb") as f:
        n = struct.unpack(">II", f.read(8))[1]
    return min(n, args.get("subset") or n) - (args.get("val_size") or 0)


def measure_run(cfg, spec, data_dir, work, rates):
    """One main.py run of spec (dataset, loss, recipe, label, seed, its own flags): its times,
    accuracy, fixed costs and training rate."""
    name = f"{spec['dataset']}-{spec['loss']}-{spec['label']}-s{spec['seed']}"
    log_dir = os.path.join(work, name)
    cmd = [sys.executable, MAIN, "--recipe", spec["recipe"], "--loss", spec["loss"], "--dataset",
           spec["dataset"], "--feat-dim", "2", "--seed", str(spec["seed"]), "--data-dir", data_dir,
           "--no-download", "--device", cfg.device_type, "--log-dir", log_dir, "--img-dir",
           os.path.join(log_dir, "imgs"), "--no-progress", "--name", "bench",
           *spec["flags"], *cfg.main_flags]
    run_dir = os.path.join(log_dir, rundir.run_name(
        {"loss": spec["loss"], "dataset": spec["dataset"], "feat_dim": 2, "name": "bench"}))
    common.log(f"  {name}: {' '.join(cmd[2:])}")
    out = os.path.join(work, name + ".out")
    target = cfg.targets[spec["dataset"]]
    records, arrivals, wall, code, budget_hit = watch(
        cmd, run_dir, cfg.budget_seconds, out, target if cfg.stop_at_target else None)
    curve = [[s, r["test_acc"]] for s, r in zip(arrivals, records) if r.get("test_acc") is not None]
    reached = next((s for s, acc in curve if acc >= target), None)
    run = {**{k: spec[k] for k in ("dataset", "loss", "recipe", "label", "seed")},
           "returncode": code, "wall_s": wall, "target": target, "target_s": reached,
           "curve": curve, "final_acc": curve[-1][1] if curve else None,
           "status": "budget" if budget_hit else "finished" if code == 0
           else "stopped at the target" if code in (130, -signal.SIGTERM) and cfg.stop_at_target
           and reached is not None
           else f"failed ({code})",
           **rate_of(run_dir, records, data_dir, spec, rates, cfg.device_type)}
    if code not in (0, 130) or not records:
        with open(out) as f:
            run["output_tail"] = f.read()[-2000:]
    common.log(f"    {run['status']}: {wall:.1f}s, target {target} at "
               f"{'-' if reached is None else f'{reached:.1f}s'}, final {run['final_acc']}")
    return run


def rate_of(run_dir, records, data_dir, spec, rates, device):
    """What the run directory says of a run: its settings, fixed costs (train.log's timing
    line), steps, and training rate (steps/s, img/s, GFLOP/s of its model, and of the
    convolution rate)."""
    try:
        args = rundir.read_args(run_dir)
    except UserError:  # it failed before writing args.json
        args = {}
    timings = rundir.read_timings(run_dir)
    batch = args.get("batch_size", 0)
    per_epoch = train_size(data_dir, spec["dataset"], args) // batch if batch else 0
    steps = round(sum(per_epoch * (r.get("epoch_fraction") or 1) for r in records))
    # stopped by the budget, a run has no timing line: its epochs' seconds (evaluation too)
    training_s = (timings.get("training", 0) + timings.get("first step", 0)
                  or sum(r.get("seconds", 0) for r in records))
    img_s = steps * batch / training_s if training_s else None
    model = args.get("model", "resnet")
    gflops = flops_per_image(model, spec["loss"], device) * img_s / 1e9 if img_s else None
    return {"model": model, "epochs": args.get("epochs"), "amp": args.get("amp"), "amp_auto": args.get("amp_auto"),
            "epochs_done": rundir.epochs_done(records[-1]) if records else 0, "steps": steps,
            "steps_per_s": steps / training_s if training_s else None, "img_s": img_s,
            "achieved_gflops": gflops,
            "frac_of_conv_ref": gflops / rates["conv_ref_gflops"] if gflops else None,
            "timings": timings}


# ----------------------------------------------------------------------------- the machine

@functools.cache
def flops_per_image(model_name, loss, device):
    """Forward + backward FLOPs per 28x28 image of the model with loss's objective (device:
    its type), counted once per process."""
    torch.manual_seed(0)
    model = build_model(model_name, 2, 1, 28).to(device)
    objective = build_objective(loss, 10, 2).to(device)
    x, y = torch.rand(16, 1, 28, 28, device=device), torch.arange(16, device=device) % 10
    counter = FlopCounterMode(display=False)
    with counter:
        objective(model(x), y)["loss"].backward()
    return counter.get_total_flops() / len(x)


def seconds_of(code, repeats):
    """Median wall seconds of `python -c code` in a fresh interpreter."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=common.ROOT)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def data_folder(cfg, work):
    """--data-dir, checked; or with --fake generated MNIST and Fashion-MNIST in `work`."""
    if cfg.fake:
        n_train, n_test = QUICK_SIZES if cfg.quick else (common.TRAIN_IMAGES, common.VAL_IMAGES)
        for dataset in cfg.datasets:
            fakedata.write_mnist(work, folder=FOLDERS[dataset], n_train=n_train, n_test=n_test)
        return work, f"FAKE (generated, {n_train} train / {n_test} test images; smoke use only)"
    for dataset in cfg.datasets:
        missing = [p for t in (True, False) for p in datasets.split_files(dataset, cfg.data_dir, t)
                   if not os.path.isfile(p)]
        if missing:
            raise UserError(f"{dataset} not found in {cfg.data_dir} (no {missing[0]}); the "
                            "benchmark never downloads: pass --data-dir, or --fake for "
                            "generated data")
    return os.path.abspath(cfg.data_dir), "real"


# ----------------------------------------------------------------------------- all runs

def specs(cfg):
    """The runs, seed by seed (so a noisy stretch of the machine hits every recipe alike)."""
    out = []
    for seed in sorted(set(cfg.seeds) | set(cfg.slow_seeds)):
        for dataset in cfg.datasets:
            for loss in cfg.losses:
                for recipe in cfg.recipes:
                    if seed not in (cfg.seeds if recipe == "quick" else cfg.slow_seeds):
                        continue
                    out.append({"dataset": dataset, "loss": loss, "recipe": recipe, "seed": seed,
                                "label": recipe, "flags": []})
                    if recipe == "quick":
                        out += [{"dataset": dataset, "loss": loss, "recipe": recipe, "seed": seed,
                                 "label": f"quick@{e:g}", "flags": ["--epochs", f"{e:g}"]}
                                for e in cfg.quick_epochs]
    return out


def summarize(runs, cfg):
    """{dataset: {loss: {recipe: medians over seeds, "ratios": ...}}} and the budget curve."""
    results, curve = {}, {}
    for run in runs:  # every evaluation of every run of the recipe, at any length
        curve.setdefault(run["dataset"], {}).setdefault(run["loss"], {}).setdefault(
            run["recipe"], []).extend(run["curve"])
    for dataset in cfg.datasets:
        for loss in cfg.losses:
            cell = results.setdefault(dataset, {}).setdefault(loss, {})
            for recipe in cfg.recipes:
                mine = [r for r in runs
                        if (r["dataset"], r["loss"], r["label"]) == (dataset, loss, recipe)]
                times = [r["target_s"] for r in mine if r["target_s"] is not None]
                accs = [r["final_acc"] for r in mine if r["final_acc"] is not None]
                stopped = [r for r in mine if r["target_s"] is None and r["status"] == "budget"]
                cell[recipe] = {
                    "runs": len(mine), "reached": len(times),
                    "target_s": statistics.median(times) if times and len(times) == len(mine)
                    else None,
                    # a seed stopped by the budget short of the target: the budget bounds it below
                    "at_least_s": cfg.budget_seconds if stopped else None,
                    "wall_s": statistics.median(r["wall_s"] for r in mine),
                    "final_acc": statistics.median(accs) if accs else None,
                    "final_accs": accs}
            cell["ratios"] = {f"{a}/{b}": ratio(cell[a], cell[b]) for a, b in
                              (("reference", "quick"), ("fast", "quick"), ("reference", "fast"))
                              if a in cell and b in cell}
    return results, curve


def ratio(slow, fast):
    """Time-to-target ratio; {"at_least": x} where the slower one was stopped by the budget
    short of the target; None where either did not reach it otherwise."""
    if fast["target_s"] is None:
        return None
    if slow["target_s"] is None:
        return {"at_least": slow["at_least_s"] / fast["target_s"]} if slow["at_least_s"] else None
    return slow["target_s"] / fast["target_s"]


def run(cfg):
    device = common.device_of(cfg)
    cfg.device_type = device.type
    with tempfile.TemporaryDirectory(prefix="bench-tta-") as work:
        data_dir, description = data_folder(cfg, work)
        mm, conv = common.matmul_gflops(device)
        rates = {"mm_gflops": mm, "conv_ref_gflops": conv}
        repeats = 1 if cfg.quick else 3
        m = common.meta(cfg, device, data_source=description, budget_seconds=cfg.budget_seconds,
                        targets=cfg.targets, seeds=cfg.seeds, slow_seeds=cfg.slow_seeds,
                        stop_at_target=cfg.stop_at_target, main_flags=cfg.main_flags,
                        interpreter_s=seconds_of("pass", repeats),
                        import_torch_s=seconds_of("import torch", repeats))
        common.log(f"bench: {m['device']}, {m['threads']} threads, {description}")
        runs = [measure_run(cfg, spec, data_dir, work, rates) for spec in specs(cfg)]
        flops = {}  # of the (model, loss) pairs the runs trained
        for r in runs:
            flops.setdefault(r["model"], {})[r["loss"]] = flops_per_image(r["model"], r["loss"],
                                                                          device.type)
    results, curve = summarize(runs, cfg)
    report = {"meta": m, "rates": rates, "flops_per_image": flops, "results": results,
              "budget_curve": curve, "runs": runs}
    return common.publish(NAME, cfg, device, report, table)


# ----------------------------------------------------------------------------- the table

def seconds_cell(cell):
    seeds = f" ({cell['reached']}/{cell['runs']})" if cell["runs"] > 1 else ""
    if cell["target_s"] is not None:
        return f"{cell['target_s']:.0f}{seeds}"
    return (f"> {cell['at_least_s']:.0f}" if cell["at_least_s"] else "not reached") + seeds


def ratio_cell(value):
    if value is None:
        return "-"
    return f">= {value['at_least']:.1f}" if isinstance(value, dict) else f"{value:.1f}"


def number(value, fmt):
    return "-" if value is None else format(value, fmt)


def table(report):
    m, results = report["meta"], report["results"]
    recipes = [r for r in RECIPES if any(r in c for d in results.values() for c in d.values())]
    lines = common.header("bench/time_to_accuracy.py", m) + [
        f"data {m['data_source']}  budget {m['budget_seconds']:.0f} s a run  seeds "
        f"{','.join(map(str, m['seeds']))}  interpreter {m['interpreter_s']:.2f} s, import torch "
        f"{m['import_torch_s']:.2f} s  conv ref {report['rates']['conv_ref_gflops']:.0f} "
        "GFLOP/s", "",
        "| dataset | loss | target | " + " | ".join(f"{r} s" for r in recipes)
        + " | ratios | " + " | ".join(f"{r} acc" for r in recipes) + " |",
        "|" + "---|" * (4 + 2 * len(recipes))]
    for dataset, per_loss in results.items():
        for loss, cell in per_loss.items():
            lines.append(
                f"| {dataset} | {loss} | {m['targets'][dataset]} | "
                + " | ".join(seconds_cell(cell[r]) for r in recipes) + " | "
                + ", ".join(f"{k} {ratio_cell(v)}" for k, v in cell["ratios"].items()) + " | "
                + " | ".join(number(cell[r]["final_acc"], ".4f") for r in recipes) + " |")
    phases = ["start-up and imports", "setup", "data", "build", "first step", "training",
              "evaluation", "saving", "drawing", "total"]
    lines += ["", "| run | wall s | " + " | ".join(phases) + " | steps/s | img/s | of conv |",
              "|" + "---|" * (len(phases) + 5)]
    for r in report["runs"]:
        lines.append(f"| {r['dataset']} {r['loss']} {r['label']} s{r['seed']}"
                     + (" bf16" if r["amp"] else "") + f" | {r['wall_s']:.1f} | "
                     + " | ".join(number(r["timings"].get(p), ".2f") for p in phases) + " | "
                     + f"{number(r['steps_per_s'], '.1f')} | {number(r['img_s'], '.0f')} | "
                     + f"{number(r['frac_of_conv_ref'], '.2f')} |")
    lines += ["", "s: wall seconds from the start of `python main.py` to the first metrics "
              "record at the target test accuracy (median over seeds; (n/N): seeds that reached "
              "it; > budget: stopped by the budget short of it). ratios: of those times. acc: "
              "final test accuracy (median; the quick recipe measures once, at its end). The "
              "second table: the seconds of each phase from train.log (a run stopped by the "
              "budget has none), training steps/s and img/s, and the achieved GFLOP/s over the "
              "fp32 convolution rate measured here."]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- flags

def parse_flags(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--data-dir", default="./data",
                   help="holds MNIST/raw and FashionMNIST/raw in torchvision's layout")
    p.add_argument("--losses", default=None, help="default xent,cent,standalone; quick standalone")
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--datasets", default=None, help="default mnist,fashion-mnist; quick mnist")
    p.add_argument("--seeds", default="0")
    p.add_argument("--slow-seeds", default=None,
                   help="the seeds of reference and fast, several times longer than quick's "
                   "(default: --seeds)")
    p.add_argument("--stop-at-target", action="store_true",
                   help="end a run (SIGTERM) once its test accuracy reaches the target: the "
                   "time to it is measured all the same, its budget curve ends there")
    p.add_argument("--targets", default=None,
                   help="test accuracy to reach: mnist=0.99,fashion-mnist=0.9 (the default)")
    p.add_argument("--budget-seconds", type=float, default=None,
                   help="wall seconds a run may take before SIGTERM (default 900, quick 120)")
    p.add_argument("--quick-epochs", default=None,
                   help="more lengths of the quick recipe, for its budget curve (default 1,2; "
                   "quick none; '' for none)")
    p.add_argument("--main-flags", default=None,
                   help="more flags for every main.py run, e.g. '--compile' (quick: "
                   f"'{' '.join(QUICK_FLAGS)}')")
    cfg = p.parse_args(argv)
    cfg.losses = names(p, cfg.losses or ("standalone" if cfg.quick else "xent,cent,standalone"),
                       common.LOSSES, "--losses")
    cfg.recipes = names(p, cfg.recipes, RECIPES, "--recipes")
    cfg.datasets = names(p, cfg.datasets or ("mnist" if cfg.quick else ",".join(DATASETS)),
                         DATASETS, "--datasets")
    cfg.seeds = seed_list(p, cfg.seeds, "--seeds")
    cfg.slow_seeds = (cfg.seeds if cfg.slow_seeds is None
                      else seed_list(p, cfg.slow_seeds, "--slow-seeds"))
    cfg.targets = dict(TARGETS, **targets(p, cfg.targets or ""))
    if cfg.budget_seconds is None:
        cfg.budget_seconds = 120.0 if cfg.quick else 900.0
    if not cfg.budget_seconds > 0:
        p.error("--budget-seconds must be positive")
    quick_epochs = cfg.quick_epochs
    if quick_epochs is None:
        quick_epochs = "" if cfg.quick else "1,2"
    try:
        cfg.quick_epochs = [float(e) for e in quick_epochs.split(",") if e]
    except ValueError:
        p.error(f"--quick-epochs takes numbers separated by commas, got {quick_epochs!r}")
    if any(not e > 0 for e in cfg.quick_epochs):
        p.error("--quick-epochs must be positive")
    cfg.main_flags = (cfg.main_flags.split() if cfg.main_flags is not None
                      else (QUICK_FLAGS if cfg.quick else []))
    return cfg


def seed_list(p, text, flag):
    try:
        seeds = [int(s) for s in text.split(",") if s]
    except ValueError:
        p.error(f"{flag} takes integers separated by commas, got {text!r}")
    if not seeds or min(seeds) < 0:
        p.error(f"{flag} takes integers >= 0")
    return seeds


def names(p, text, allowed, flag):
    found = [n for n in text.split(",") if n]
    for n in found:
        if n not in allowed:
            p.error(f"{flag}: unknown {n!r}; choose from {', '.join(allowed)}")
    if not found:
        p.error(f"{flag} names none")
    return found


def targets(p, text):
    out = {}
    for part in (t for t in text.split(",") if t):
        dataset, _, value = part.partition("=")
        try:
            out[dataset] = float(value)
        except ValueError:
            p.error(f"--targets takes dataset=accuracy pairs, got {part!r}")
        if dataset not in DATASETS:
            p.error(f"--targets: unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    return out


if __name__ == "__main__":
    common.cli(run, parse_flags())
