"""A grid of main.py runs (local or SLURM), and the commands over finished runs: the table
against the published one, the gallery, the export and the results page (report.py).

    python sweep.py --loss xent cent standalone --dataset mnist fashion-mnist \\
        --feat-dim 2 128 --seed 0 1 2 -- --recipe fast --data-dir DIR
    python sweep.py ... --dry-run              # the main.py commands, and what each run needs
    python sweep.py ... --launcher slurm --partition gpu --time 60 --gpus 1
    python sweep.py --table results/*          # ours (mean ± std over seeds) vs published
    python sweep.py --gallery results/*-seed0  # Markdown: train / val GIFs (PNGs above 2-D)
    python sweep.py --export results log/*-seed*   # args.json + metrics.jsonl -> results/<run>/
    python sweep.py --report results           # results/README.md, written from results/ alone

Everything after `--` goes to main.py. Run k of the grid is log/<loss>-<dataset>-feat=<d>-seed<s>/,
and that directory is the only state: a run is finished when its last logged epoch equals
the epochs planned in its args.json (skipped), started when it holds args.json (continued
with --resume), and new otherwise. Kill the sweep at any moment and run it again: the
unfinished runs continue from their last checkpoint, the finished ones are not run again.
"""
import contextlib
import io
import itertools
import os
import shutil
import subprocess
import sys
import time

import datasets
import flags as main_flags
import recipes
import report
import rundir
from rundir import state_of, wait_unlocked
from utils import OneLineParser, UserError, die_with_parent, error_exit

HERE = os.path.dirname(os.path.abspath(__file__))

# ----------------------------------------------------------------------------- run state

class Run:
    def __init__(self, loss, dataset, feat_dim, seed, log_dir, passthrough):
        self.dir = os.path.join(log_dir, rundir.run_name(
            {"loss": loss, "dataset": dataset, "feat_dim": feat_dim, "name": f"seed{seed}"}))
        self.name, self.dataset = os.path.basename(self.dir), dataset
        self.fresh = ["--loss", loss, "--dataset", dataset, "--feat-dim", str(feat_dim),
                      "--seed", str(seed), "--name", f"seed{seed}", "--log-dir", log_dir,
                      *passthrough]
        self.passthrough = passthrough

    def command(self, state):
        """main.py's argv for this run in `state`: the grid's opts for a new run; for a
        started one --resume plus the same opts (main.py checks they agree)."""
        head = [sys.executable, os.path.join(HERE, "main.py")]
        if state == "started":
            return head + ["--resume", self.dir, *self.passthrough]
        return head + self.fresh


def grid(opts):
    return [Run(loss, dataset, d, seed, opts.log_dir, opts.passthrough)
            for dataset, d, loss, seed in itertools.product(opts.dataset, opts.feat_dim,
                                                            opts.loss, opts.seed)]


# ----------------------------------------------------------------------------- launchers

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


def run_submitit(runs, opts):
    """One submitit job per unfinished run: SLURM, or `submitit-local` (subprocesses, no
    cluster; the same code path). Waits for the jobs."""
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher slurm needs submitit: pip install submitit") from None
    cluster = "local" if opts.launcher == "submitit-local" else "slurm"
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise UserError("--launcher slurm: no SLURM here (sbatch not found); use --launcher "
                        "local, or run the sweep on the cluster's login node")
    executor = submitit.AutoExecutor(folder=os.path.join(opts.log_dir, "submitit"), cluster=cluster)
    params = dict(timeout_min=opts.time, gpus_per_node=opts.gpus, cpus_per_task=opts.cpus,
                  name="sweep")
    if cluster == "slurm":
        params.update(slurm_partition=opts.partition, slurm_array_parallelism=opts.jobs)
        if opts.mem_gb:
            params["mem_gb"] = opts.mem_gb
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
    _, records = rundir.read_run(run_dir, need_metrics=False)
    last = records[-1] if records else {}
    shown = [f"{k.replace('_', ' ')} {last[k]:.4f}" for k in ("val_acc", "test_acc", "seen_acc")
             if last.get(k) is not None]
    return f"{', '.join(shown) or 'no accuracy'} after {last.get('epoch', 0)} epochs"


# ----------------------------------------------------------------------------- CLI

def build_parser():
    p = OneLineParser(description="Run a grid of main.py runs (skipping finished ones, "
                      "continuing interrupted ones), or tabulate / show / export runs. "
                      "Flags after -- go to main.py.")
    p.add_argument("--loss", nargs="+", default=["xent", "cent", "standalone"],
                   help="the objectives of the grid")
    p.add_argument("--dataset", nargs="+", default=["mnist"], help="the datasets of the grid")
    p.add_argument("--feat-dim", "--feat_dim", nargs="+", type=int, default=[2],
                   help="the feature sizes of the grid")
    p.add_argument("--seed", nargs="+", type=int, default=[0], help="the seeds of the grid")
    p.add_argument("--log-dir", "--log_dir", default="log", help="where the runs go")
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
    g.add_argument("--mem-gb", "--mem_gb", type=int, default=None, help="memory per job (GB)")
    g = p.add_argument_group("tuning (Optuna, on the validation split; tune.py)")
    g.add_argument("--tune", action="store_true",
                   help="search each (loss, dataset, feat_dim)'s settings instead of running "
                   "the grid; write the best to --recipe-file for --recipe tuned")
    g.add_argument("--trials", type=int, default=16, help="trials per objective (default: 16)")
    g.add_argument("--epochs", type=int, default=None,
                   help="epochs per trial (default: those of the recipe after --)")
    g.add_argument("--val-size", "--val_size", type=int, default=None,
                   help="validation images held out (default: 10000, CIFAR 5000)")
    g.add_argument("--recipe-file", "--recipe_file", default=os.path.relpath(recipes.TUNED_FILE),
                   help="where the tuned settings go")
    g.add_argument("--tune-seed", "--tune_seed", type=int, default=0,
                   help="seed of the TPE sampler (default: 0)")
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
    g.add_argument("--report", default=None, metavar="DIR",
                   help="write DIR/README.md, the results page, from the run directories in DIR")
    return p


def parse_flags(argv):
    argv = list(argv)
    passthrough = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    parser = build_parser()
    opts = parser.parse_args(argv)
    opts.passthrough = passthrough
    for name in ("jobs", "time", "gpus", "cpus", "mem_gb", "trials", "epochs", "val_size"):
        value = getattr(opts, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    if not 0 <= opts.tune_seed <= main_flags.SEED_MAX:
        parser.error(f"--tune-seed must be from 0 to {main_flags.SEED_MAX}, got {opts.tune_seed}")
    for name in ("log_dir", "export", "report", "recipe_file", "img_dir"):
        value = getattr(opts, name)
        if value is not None and (not value or "\0" in value):  # "": the current folder, unasked
            parser.error(f"--{name.replace('_', '-')} {value!r} is not a folder name")
    return opts


def check_grid(runs):
    """Every run's main.py flags parsed as main.py will parse them, before anything starts:
    a bad --loss, --dataset, --feat-dim or flag after -- is one line, not N failed runs."""
    for run in runs:
        said = io.StringIO()
        try:
            with contextlib.redirect_stderr(said):
                planned, explicit = main_flags.parse_args(run.fresh)
                typed = main_flags.typed_flags(run.passthrough)
        except SystemExit:  # main.py's parser wrote its one line: pass it on as ours
            why = said.getvalue().strip().split("error: ", 1)[-1]
            raise UserError(f"{run.name}: {why}") from None
        # as argparse reads them: --loss=x and abbreviations (--los x) too
        if typed & {"loss", "dataset", "feat_dim", "seed", "name", "log_dir", "resume"}:
            raise UserError("pass --loss, --dataset, --feat-dim and --seed to sweep.py itself, "
                            "not after --: the grid names its runs by them")
        if "overwrite" in typed:
            raise UserError("--overwrite after --: the sweep continues started runs with "
                            "--resume; delete a run's directory to start it again")
        if state_of(run.dir) == "finished":  # skipped: only if it is the run this grid asks for
            saved = rundir.read_args(run.dir)
            for key in sorted(explicit - (main_flags.RESUMABLE_FLAGS - {"epochs", "steps"})):
                if key in saved and saved[key] != getattr(planned, key):
                    raise UserError(
                        f"{run.dir} finished with --{key.replace('_', '-')} {saved[key]}, and this "
                        f"grid asks for {getattr(planned, key)}: give the grid another --log-dir "
                        f"(its runs are named by loss, dataset, feat_dim and seed alone), or "
                        f"delete that directory")
        if datasets.is_folder(run.dataset) and not os.path.isdir(datasets.folder_path(run.dataset)):
            raise UserError(f"--dataset {run.dataset}: {datasets.folder_path(run.dataset)} is "
                            f"not a folder")


class TuneJob:
    """One study as a job for a launcher: sweep.py --tune of that study alone, locally."""

    def __init__(self, loss, dataset, feat_dim, opts, argv):
        self.name = f"tune-{rundir.run_name({'loss': loss, 'dataset': dataset, 'feat_dim': feat_dim})}"
        self.dir = os.path.join(opts.log_dir, "tune", self.name)
        cut = argv.index("--") if "--" in argv else len(argv)
        keep = [a for a in argv[:cut] if a not in ("--launcher", opts.launcher)]
        self.argv = [sys.executable, os.path.join(HERE, "sweep.py"), *keep, "--loss", loss,
                     "--dataset", dataset, "--feat-dim", str(feat_dim), "--", *opts.passthrough]

    def command(self, state):
        return self.argv


def tune_grid(opts, argv=()):
    """--tune: the studies here, one after the other, or one submitit job each."""
    import tune
    typed = main_flags.typed_flags(opts.passthrough)
    for loss in opts.loss:  # a trial's own flags come after these and would silently win
        overridden = sorted(typed & ({"val_size", "test", "steps"} | set(tune.search_space(loss))))
        if overridden:
            raise UserError(f"--tune sets {', '.join('--' + k.replace('_', '-') for k in overridden)} "
                            f"of each {loss} trial itself: leave {'it' if len(overridden) == 1 else 'them'} "
                            f"out after -- (sweep.py --val-size and --epochs set the budget)")
    recipes.read_tuned(opts.recipe_file)  # a damaged file: one line now, not after the search
    if not opts.dry_run:
        rundir.writable_dir(os.path.dirname(os.path.abspath(opts.recipe_file)), "--recipe-file's folder",
                            create=False)
    if opts.dry_run:
        for loss in opts.loss:
            print(f"# tune {loss}: {', '.join(tune.search_space(loss))}")
        return 0
    if opts.launcher == "local":
        tune.tune(opts)
        return 0
    jobs = [TuneJob(loss, d, f, opts, list(argv)) for d in opts.dataset for f in opts.feat_dim
            for loss in opts.loss]
    return 1 if run_submitit(jobs, opts) else 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    opts = parse_flags(argv)
    try:
        if opts.report:
            if not os.path.isdir(opts.report):
                raise UserError(f"--report {opts.report}: not a folder of run directories")
            if not any(report.run_dirs_in(os.path.join(opts.report, sub)) for sub in ("", "trials", "fair")):
                raise UserError(f"--report {opts.report}: found no run directories (folders with "
                                f"an args.json) in it: nothing to report")
            rundir.writable_dir(opts.report, "--report folder")
            try:
                for path in report.write_results(opts.report, opts.img_dir):
                    print(path)
            except OSError as e:
                raise UserError(f"--report {opts.report}: cannot write the results page: "
                                f"{e.strerror or e}") from None
            return 0
        runs = grid(opts)
        if opts.table or opts.gallery or opts.export:
            dirs = opts.runs or [r.dir for r in runs]
            if opts.table:
                print(report.reproduction_table(dirs, not_run=opts.not_run,
                                                as_recipe=opts.as_recipe), end="")
            if opts.gallery:
                print(report.gallery(dirs, opts.img_dir), end="")
            if opts.export:
                for path in rundir.export(dirs, opts.export):
                    print(path)
            return 0
        if opts.runs:
            raise UserError("run directories are for --table, --gallery or --export")
        check_grid(runs)
        if not opts.dry_run:  # the runs' folders and outputs go there: one line now, not later
            rundir.writable_dir(opts.log_dir, "--log-dir", create=False)
        if opts.tune:
            return tune_grid(opts, argv)
        if opts.dry_run:
            for run in runs:
                state = state_of(run.dir)
                print(f"# {run.name}: {state}" if state == "finished" else
                      " ".join(run.command(state)))
            return 0
        if opts.launcher == "local":
            failed = run_local(runs, opts.jobs, os.path.join(opts.log_dir, "sweep"))
        else:
            failed = run_submitit(runs, opts)
    except UserError as e:
        error_exit(str(e))
    if failed:
        print(f"[sweep] {len(failed)} of {len(runs)} runs failed: "
              + ", ".join(run.name for run, _ in failed), file=sys.stderr, flush=True)
        return 1
    print(f"[sweep] all {len(runs)} runs finished", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # each run stops with its own line and keeps its checkpoints
        error_exit("interrupted: run the same command again to continue the unfinished runs", 130)
