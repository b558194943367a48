"""A grid of main.py runs, the results table against the published one, and the gallery.

    python sweep.py --loss xent cent standalone --dataset mnist fashion-mnist \\
        --feat-dim 2 128 --seed 0 1 2 -- --recipe fast --data-dir DIR
    python sweep.py ... --dry-run              # the main.py commands, and what each run needs
    python sweep.py ... --launcher slurm --partition gpu --time 60 --gpus 1
    python sweep.py --table results/*          # ours (mean ± std over seeds) vs published
    python sweep.py --gallery results/*-seed0  # Markdown: train / val GIFs (PNGs above 2-D)
    python sweep.py --export results log/*-seed*   # args.json + metrics.jsonl -> results/<run>/

Everything after `--` goes to main.py. Run k of the grid is log/<loss>-<dataset>-feat=<d>-seed<s>/,
and that directory is the only state: a run is finished when its last logged epoch equals
the epochs planned in its args.json (skipped), started when it holds args.json (continued
with --resume), and new otherwise. Kill the sweep at any moment and run it again: the
unfinished runs continue from their last checkpoint, the finished ones are not run again.
"""
import ctypes
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

import visualize
from utils import OneLineParser, UserError, error_exit, wait_unlocked

HERE = os.path.dirname(os.path.abspath(__file__))

# Test accuracy after 100 epochs of the original experiments (shared REFERENCE.md).
PUBLISHED = {
    ("xent", "mnist", 2): 0.991, ("cent", "mnist", 2): 0.990, ("standalone", "mnist", 2): 0.994,
    ("xent", "mnist", 128): 0.994, ("cent", "mnist", 128): 0.996,
    ("standalone", "mnist", 128): 0.996,
    ("xent", "fashion-mnist", 2): 0.913, ("cent", "fashion-mnist", 2): 0.913,
    ("standalone", "fashion-mnist", 2): 0.921, ("xent", "fashion-mnist", 128): 0.926,
    ("cent", "fashion-mnist", 128): 0.932, ("standalone", "fashion-mnist", 128): 0.922,
    ("xent", "cifar10", 2): 0.815, ("cent", "cifar10", 2): 0.775,
    ("standalone", "cifar10", 2): 0.787, ("xent", "cifar10", 128): 0.866,
    ("cent", "cifar10", 128): 0.858, ("standalone", "cifar10", 128): 0.806,
}
PUBLISHED_EPOCHS = 100


# ----------------------------------------------------------------------------- run state

def run_dir_of(log_dir, loss, dataset, feat_dim, seed):
    """main.py's run directory for --name seed<s> (main.run_name)."""
    return os.path.join(log_dir, f"{loss}-{dataset}-feat={feat_dim}-seed{seed}")


def state_of(run_dir):
    """'finished', 'started' (continue with --resume) or 'new', read from the directory alone."""
    if not os.path.isfile(os.path.join(run_dir, "args.json")):
        return "new"
    try:
        args, records = visualize.read_run(run_dir, need_metrics=False)
    except UserError:
        return "started"
    done = records[-1]["epoch"] if records else 0
    return "finished" if done >= args.get("epochs", float("inf")) else "started"


class Run:
    def __init__(self, loss, dataset, feat_dim, seed, log_dir, passthrough):
        self.dir = run_dir_of(log_dir, loss, dataset, feat_dim, seed)
        self.name = os.path.basename(self.dir)
        self.fresh = ["--loss", loss, "--dataset", dataset, "--feat-dim", str(feat_dim),
                      "--seed", str(seed), "--name", f"seed{seed}", "--log-dir", log_dir,
                      *passthrough]
        self.passthrough = passthrough

    def command(self, state):
        """main.py's argv for this run in `state`: the grid's flags for a new run; for a
        started one --resume plus the same flags (main.py checks they agree)."""
        head = [sys.executable, os.path.join(HERE, "main.py")]
        if state == "started":
            return head + ["--resume", self.dir, *self.passthrough]
        return head + self.fresh


def grid(flags):
    return [Run(loss, dataset, d, seed, flags.log_dir, flags.passthrough)
            for dataset, d, loss, seed in itertools.product(flags.dataset, flags.feat_dim,
                                                            flags.loss, flags.seed)]


# ----------------------------------------------------------------------------- launchers

def die_with_parent():
    """In the child, before exec: get SIGKILL when the sweep dies, however it dies, so a
    rerun never finds an orphan still training. (The checkpoints are atomic: the rerun
    continues from the last one.)"""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def cuda_devices():
    try:
        import torch
        return list(range(torch.cuda.device_count()))
    except Exception:
        return []


def run_local(runs, jobs, out_dir):
    """Run the grid as subprocesses, `jobs` at a time; on CUDA, one device each. Returns the
    runs that failed, with the last line of their output."""
    os.makedirs(out_dir, exist_ok=True)
    free = cuda_devices() or None  # the CUDA devices not in use; None: no GPU, no limit
    pending, running, failed = list(runs), {}, []
    while pending or running:
        while pending and len(running) < jobs and (free is None or free):
            run = pending.pop(0)
            wait_unlocked(run.dir)
            state = state_of(run.dir)
            if state == "finished":
                print(f"[sweep] {run.name}: finished, skipped", flush=True)
                continue
            env = dict(os.environ)
            device = None
            if free is not None:
                device = free.pop(0)
                env["CUDA_VISIBLE_DEVICES"] = str(device)
            out_path = os.path.join(out_dir, f"{run.name}.out")
            print(f"[sweep] {run.name}: {'continued' if state == 'started' else 'started'}"
                  + (f" on cuda:{device}" if device is not None else "") + f" (output: {out_path})",
                  flush=True)
            out = open(out_path, "a")
            proc = subprocess.Popen(run.command(state), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, cwd=HERE,
                                    preexec_fn=die_with_parent)
            running[proc] = (run, out, device)
        time.sleep(0.2)
        for proc in [p for p in running if p.poll() is not None]:
            run, out, device = running.pop(proc)
            out.close()
            if free is not None:
                free.append(device)
            if proc.returncode == 0:
                print(f"[sweep] {run.name}: done, {summary_line(run.dir)}", flush=True)
            else:
                with open(out.name) as f:
                    lines = [line.strip() for line in f if line.strip()]
                failed.append((run, lines[-1] if lines else f"exit code {proc.returncode}"))
                print(f"[sweep] {run.name}: FAILED (exit {proc.returncode}): {failed[-1][1]}",
                      flush=True)
    return failed


def run_submitit(runs, flags):
    """One submitit job per unfinished run: SLURM, or `submitit-local` (subprocesses, no
    cluster; the same code path). Waits for the jobs."""
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher slurm needs submitit: pip install submitit") from None
    cluster = "local" if flags.launcher == "submitit-local" else "slurm"
    executor = submitit.AutoExecutor(folder=os.path.join(flags.log_dir, "submitit"), cluster=cluster)
    params = dict(timeout_min=flags.time, gpus_per_node=flags.gpus, cpus_per_task=flags.cpus,
                  name="sweep")
    if cluster == "slurm":
        params.update(slurm_partition=flags.partition, slurm_array_parallelism=flags.jobs)
        if flags.mem_gb:
            params["mem_gb"] = flags.mem_gb
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    jobs = []
    for run in runs:
        state = state_of(run.dir)
        if state == "finished":
            print(f"[sweep] {run.name}: finished, skipped", flush=True)
            continue
        job = executor.submit(submitit.helpers.CommandFunction(run.command(state), cwd=HERE,
                                                               verbose=False))
        print(f"[sweep] {run.name}: submitted job {job.job_id}", flush=True)
        jobs.append((run, job))
    failed = []
    for run, job in jobs:
        try:
            job.result()
            print(f"[sweep] {run.name}: done, {summary_line(run.dir)}", flush=True)
        except Exception as e:  # submitit wraps the command's failure
            lines = [line for line in str(e).strip().splitlines() if line.strip()]
            failed.append((run, lines[-1] if lines else type(e).__name__))
            print(f"[sweep] {run.name}: FAILED: {failed[-1][1]}", flush=True)
    return failed


def summary_line(run_dir):
    _, records = visualize.read_run(run_dir, need_metrics=False)
    last = records[-1] if records else {}
    return f"val acc {last.get('val_acc', float('nan')):.4f} after {last.get('epoch', 0)} epochs"


# ----------------------------------------------------------------------------- results

def finished_runs(run_dirs):
    """(run name, args, records) of the finished runs among run_dirs; plain files are skipped."""
    return [(os.path.basename(os.path.normpath(d)), *visualize.read_run(d))
            for d in run_dirs if os.path.isdir(d) and state_of(d) == "finished"]


# args.json fields beyond main.RESUMABLE_FLAGS that are not a setting of the experiment: they
# name the row or the run (columns of their own), or change only how it runs.
NOT_SETTINGS = {"loss", "dataset", "feat_dim", "seed", "name", "recipe", "overwrite",
                "channels_last", "sync_bn", "eval_every", "snapshot_size"}


def recipe_of(args):
    """The run's recipe and the settings in which it departs from it, as the table shows it
    ("fast", or "fast, inter_delta 0.1"), and the epochs the recipe gives the run: args.json
    against main.py's resolution of the recipe today, so a run made before a recipe changed
    shows what it used. Returns that label, whether the run changed any setting, and the
    recipe's epochs."""
    import main  # torch: only for the table
    recipe = args.get("recipe", "reference")
    resolved = vars(main.parse_args(["--recipe", recipe, "--loss", args["loss"], "--dataset",
                                     args["dataset"], "--feat-dim", str(args["feat_dim"])])[0])
    unused = {k for k in main.declared() if resolved.get(k) is None}  # hypers of other losses
    ignored = NOT_SETTINGS | main.RESUMABLE_FLAGS | unused

    def shown(k, v):  # None: the flag was left to its default (lr_cent: the lr)
        return f"{k} {v:g}" if isinstance(v, float) else f"{k} {'unset' if v is None else v}"
    changed = [shown(k, v) for k, v in sorted(args.items())
               if k in resolved and k not in ignored and v != resolved[k]]
    return ", ".join([recipe] + changed), bool(changed), resolved["epochs"]


def results_table(run_dirs, published=PUBLISHED, not_run="not run", as_recipe=False):
    """Markdown: one row per (loss, dataset, feat_dim) of the published table and per (loss,
    dataset, feat_dim, recipe, epochs) of the finished runs (runs of another length or with
    another setting are another experiment, not another seed), with the published accuracy,
    the recipe and the settings the runs changed in it, ours as mean ± std over seeds (final
    val accuracy, sample std, n), the difference in points, epochs and minutes per run
    (training + evaluation, from metrics.jsonl's seconds). A published row without a finished
    run says `not_run`. With `as_recipe`, only the runs made as their recipe makes them today
    (no setting changed, the recipe's epochs)."""
    groups, other = {}, set()
    for _, args, records in finished_runs(run_dirs):
        recipe, changed, epochs = recipe_of(args)
        key = (args["loss"], args["dataset"], args["feat_dim"], records[-1]["epoch"], recipe)
        if as_recipe and (changed or records[-1]["epoch"] != epochs):
            other.add(key[:3])
            continue
        groups.setdefault(key, []).append((args, records))
    ran = {k[:3] for k in groups}
    keys = set(groups) | {k + (None, "-") for k in published if k not in ran}  # None: not run
    keys = sorted(keys, key=lambda k: (visualize.rank(k[1], list(visualize.datasets.DATASETS)),
                                       k[2], visualize.rank(k[0], visualize.LOSS_ORDER), k[3] or 0,
                                       k[4]))
    rows = []
    for key in keys:
        runs = groups.get(key, [])
        pub = published.get(key[:3])
        row = {"loss": key[0], "dataset": key[1], "feat_dim": str(key[2]), "recipe": key[4],
               "published": f"{pub:.3f}" if pub is not None else "-"}
        if runs:
            acc = np.array([records[-1]["val_acc"] for _, records in runs])
            std = acc.std(ddof=1) if len(acc) > 1 else None
            minutes = np.mean([sum(r["seconds"] for r in records) / 60 for _, records in runs])
            spread = f" ± {std:.4f}" if len(acc) > 1 else ""  # one seed has no spread
            row.update({"ours": f"{acc.mean():.4f}{spread} (n={len(acc)})",
                        "diff (points)": f"{100 * (acc.mean() - pub):+.2f}" if pub is not None else "-",
                        "epochs": str(key[3]),
                        "min/run": f"{minutes:.1f}"})
        else:
            ours = "other settings only" if key[:3] in other else not_run
            row.update({"ours": ours, "diff (points)": "-", "epochs": "-", "min/run": "-"})
        rows.append(row)
    return visualize.markdown(rows)


def gallery(run_dirs, img_dir="imgs"):
    """Markdown, laid out as the published gallery: one row per loss and dataset, the train
    and val GIF (2-D) or PNG (above 2-D) of each run."""
    cells = []
    for name, args, records in finished_runs(run_dirs):
        ext = "gif" if args["feat_dim"] <= 2 else "png"
        key = (visualize.rank(args["dataset"], list(visualize.datasets.DATASETS)),
               visualize.rank(args["loss"], visualize.LOSS_ORDER), args["feat_dim"], name)
        cells.append((key, args, records, name, ext))
    if not cells:
        raise UserError("no finished runs given")
    out = ["| loss | dataset | feat_dim | epochs | val acc | train | val |",
           "|---|---|---|---|---|---|---|"]
    for _, args, records, name, ext in sorted(cells, key=lambda c: c[0]):
        pics = [f"![{name} {split}]({img_dir}/{name}/{split}.{ext})" for split in ("train", "val")]
        out.append(f"| {args['loss']} | {args['dataset']} | {args['feat_dim']} | "
                   f"{records[-1]['epoch']} | {records[-1]['val_acc']:.4f} | {pics[0]} | {pics[1]} |")
    return "\n".join(out) + "\n"


def export(run_dirs, out_dir):
    """Copy args.json and metrics.jsonl of each finished run to out_dir/<run>/ (the small
    files behind the README's tables; no checkpoints, no snapshots)."""
    copied = []
    for d in run_dirs:
        if os.path.isdir(d) and state_of(d) == "finished":
            target = os.path.join(out_dir, os.path.basename(os.path.normpath(d)))
            os.makedirs(target, exist_ok=True)
            for f in ("args.json", "metrics.jsonl"):
                shutil.copyfile(os.path.join(d, f), os.path.join(target, f))
            copied.append(target)
    return copied


# ----------------------------------------------------------------------------- CLI

def build_parser():
    p = OneLineParser(description="Run a grid of main.py runs (skipping finished ones, "
                      "continuing interrupted ones), or tabulate / show / export runs. "
                      "Flags after -- go to main.py.")
    p.add_argument("--loss", nargs="+", default=["xent", "cent", "standalone"])
    p.add_argument("--dataset", nargs="+", default=["mnist"])
    p.add_argument("--feat-dim", "--feat_dim", nargs="+", type=int, default=[2])
    p.add_argument("--seed", nargs="+", type=int, default=[0])
    p.add_argument("--log-dir", "--log_dir", default="log")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (CUDA: one device each)")
    p.add_argument("--dry-run", action="store_true", help="print the main.py commands only")
    g = p.add_argument_group("launcher")
    g.add_argument("--launcher", default="local", choices=["local", "slurm", "submitit-local"],
                   help="local: subprocesses here; slurm: one submitit job per run; "
                   "submitit-local: submitit's local executor (no cluster)")
    g.add_argument("--partition", default=None, help="slurm partition")
    g.add_argument("--time", type=int, default=120, help="minutes per job")
    g.add_argument("--gpus", type=int, default=None, help="GPUs per job")
    g.add_argument("--cpus", type=int, default=None, help="CPUs per job")
    g.add_argument("--mem-gb", "--mem_gb", type=int, default=None)
    g = p.add_argument_group("results")
    g.add_argument("runs", nargs="*", metavar="RUN_DIR",
                   help="for --table, --gallery, --export: these run directories instead of the grid's")
    g.add_argument("--table", action="store_true",
                   help="print the results table (ours vs published) of the finished runs")
    g.add_argument("--not-run", "--not_run", default="not run", metavar="TEXT",
                   help="for --table: what a published row without a finished run says "
                        "(e.g. 'not run here: no data offline')")
    g.add_argument("--as-recipe", "--as_recipe", action="store_true",
                   help="for --table: only the runs made as their recipe makes them today "
                        "(no setting changed, the recipe's epochs)")
    g.add_argument("--gallery", action="store_true",
                   help="print the Markdown gallery of the finished runs")
    g.add_argument("--export", default=None, metavar="DIR",
                   help="copy args.json + metrics.jsonl of the finished runs to DIR/<run>/")
    g.add_argument("--img-dir", "--img_dir", default="imgs", help="where the gallery's pictures are")
    return p


def parse_flags(argv):
    argv = list(argv)
    passthrough = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    parser = build_parser()
    flags = parser.parse_args(argv)
    flags.passthrough = passthrough
    if flags.jobs < 1:
        parser.error(f"--jobs must be positive, got {flags.jobs}")
    return flags


def main(argv=None):
    flags = parse_flags(sys.argv[1:] if argv is None else argv)
    runs = grid(flags)
    try:
        if flags.table or flags.gallery or flags.export:
            dirs = flags.runs or [r.dir for r in runs]
            if flags.table:
                print(results_table(dirs, not_run=flags.not_run, as_recipe=flags.as_recipe), end="")
            if flags.gallery:
                print(gallery(dirs, flags.img_dir), end="")
            if flags.export:
                for path in export(dirs, flags.export):
                    print(path)
            return 0
        if flags.runs:
            raise UserError("run directories are for --table, --gallery or --export")
        if flags.dry_run:
            for run in runs:
                state = state_of(run.dir)
                print(f"# {run.name}: {state}" if state == "finished" else
                      " ".join(run.command(state)))
            return 0
        if flags.launcher == "local":
            failed = run_local(runs, flags.jobs, os.path.join(flags.log_dir, "sweep"))
        else:
            failed = run_submitit(runs, flags)
    except UserError as e:
        error_exit(str(e))
    if failed:
        print(f"[sweep] {len(failed)} of {len(runs)} runs failed: "
              + ", ".join(run.name for run, _ in failed), file=sys.stderr, flush=True)
        return 1
    print(f"[sweep] all {len(runs)} runs finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
