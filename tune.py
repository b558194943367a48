"""The tuner: each objective's settings searched with Optuna on the validation split, with
the same budget (trials x epochs) for every objective, the test split never opened.

    python sweep.py --tune --loss xent cent standalone --dataset fashion-mnist --feat-dim 2 \\
        --trials 16 -- --recipe fast --data-dir DIR

Per (loss, dataset, feat_dim) one study: a seeded TPE sampler, a median pruner on the
validation accuracy of each epoch, and a journal file in <log-dir>/tune/ that makes a killed
search resume. A trial is one main.py run (--val-size, --no-test) in <log-dir>/tune/<study>/;
the tuner reads its metrics.jsonl as it grows, reports each epoch and stops it when pruned.
A trial left running by a killed tuner is marked failed and its settings run again, so no
trial is lost or counted twice. The best settings go to the tuned-recipe file, which
`--recipe tuned` reads.
"""
import json
import math
import os
import subprocess
import sys
import time

import flags
import recipes
import rundir
from losses import build_objective, hypers_of
from losses.hyper import suggest
from optim import center_parameters
from utils import UserError, die_with_parent

HERE = os.path.dirname(os.path.abspath(__file__))
# What every objective searches, beside the hyperparameters its registry entry declares.
COMMON = {"lr": (0.005, 0.3), "weight_decay": (1e-5, 3e-3)}   # log scale
CENTERS = {"lr_cent": (0.0005, 0.3)}                           # objectives with centers


def optuna():
    try:
        import optuna as module
    except ImportError:
        raise UserError("--tune needs optuna: pip install optuna") from None
    # ERROR: a failed trial is our UserError, said in one line; optuna's warning would repeat
    # it with the whole traceback
    module.logging.set_verbosity(module.logging.ERROR)
    return module


def search_space(loss):
    """The names searched for `loss`: COMMON, CENTERS where it learns centers or proxies (the
    optimizer's "centers" group; a pair loss's class means are buffers, which --lr-cent does
    not move), and each of its numeric hyperparameters that declares a search range and
    always applies (a choice such as --head-loss, and what applies only with one choice, keep
    their defaults)."""
    names = list(COMMON)
    if center_parameters(build_objective(loss, 2, 2)):
        names += list(CENTERS)
    return names + [h.name for h in hypers_of(loss) if h.search is not None
                    and h.type is not str and h.only_if is None]


def suggest_all(trial, loss):
    values = {}
    for name in search_space(loss):
        if name in COMMON or name in CENTERS:
            low, high = {**COMMON, **CENTERS}[name]
            values[name] = trial.suggest_float(name, low, high, log=True)
        else:
            values[name] = suggest(trial, next(h for h in hypers_of(loss) if h.name == name))
    return values


def as_flags(values):
    """main.py flags of a dict of settings (dest -> value)."""
    out = []
    for name, value in values.items():
        out += [f"--{name.replace('_', '-')}", str(value)]
    return out


class Study:
    """One (loss, dataset, feat_dim) search."""

    def __init__(self, loss, dataset, feat_dim, opts):
        self.loss, self.dataset, self.feat_dim, self.opts = loss, dataset, feat_dim, opts
        self.name = rundir.run_name({"loss": loss, "dataset": dataset, "feat_dim": feat_dim})
        self.dir = os.path.join(opts.log_dir, "tune", self.name)
        os.makedirs(self.dir, exist_ok=True)
        self.held = rundir.lock(self.dir)  # one tuner per study at a time
        self.val_size = opts.val_size or recipes.val_size(dataset)
        planned = flags.parse_args(["--loss", loss, "--dataset", dataset, "--feat-dim",
                                    str(feat_dim), *opts.passthrough])[0]
        self.epochs = opts.epochs or planned.epochs

    def open(self):
        o = optuna()
        backend = o.storages.journal.JournalFileBackend(os.path.join(self.dir, "journal.log"))
        storage = o.storages.JournalStorage(backend)
        probe = o.create_study(study_name=self.name, storage=storage, direction="maximize",
                               load_if_exists=True)
        # a restarted tuner samples on from where it stopped, not the same first draws again
        sampler = o.samplers.TPESampler(seed=self.opts.tune_seed + len(probe.trials),
                                        n_startup_trials=max(2, self.opts.trials // 3))
        pruner = o.pruners.MedianPruner(n_startup_trials=max(2, self.opts.trials // 4),
                                        n_warmup_steps=1)
        study = o.create_study(study_name=self.name, storage=storage, sampler=sampler,
                               pruner=pruner, direction="maximize", load_if_exists=True)
        for t in study.trials:  # left running by a killed tuner: fail it, run its settings again
            if t.state == o.trial.TrialState.RUNNING:
                study._storage.set_trial_state_values(t._trial_id, o.trial.TrialState.FAIL)
                study.enqueue_trial(t.params)
                print(f"[tune] {self.name}: trial {t.number} was cut off; its settings run again",
                      flush=True)
        return study

    def counted(self, study):
        o = optuna()
        return [t for t in study.trials if t.state in (o.trial.TrialState.COMPLETE,
                                                        o.trial.TrialState.PRUNED)]

    def run(self):
        study = self.open()
        while len(self.counted(study)) < self.opts.trials:
            study.optimize(self.objective, n_trials=1, catch=())
        best = study.best_trial
        print(f"[tune] {self.name}: {len(self.counted(study))} trials of {self.epochs} epochs, "
              f"best val acc {best.value:.4f} with {best.params}", flush=True)
        return study

    def argv(self, trial, values):
        return [sys.executable, os.path.join(HERE, "main.py"), "--loss", self.loss, "--dataset",
                self.dataset, "--feat-dim", str(self.feat_dim), *self.opts.passthrough,
                "--epochs", str(self.epochs), *as_flags(values), "--val-size", str(self.val_size),
                "--no-test", "--no-plots", "--no-progress", "--log-dir", self.dir, "--name",
                f"trial{trial.number}", "--overwrite"]

    def objective(self, trial):
        """One main.py run; its validation accuracy by epoch reported to the pruner."""
        o = optuna()
        values = suggest_all(trial, self.loss)
        run_dir = os.path.join(self.dir, rundir.run_name(
            {"loss": self.loss, "dataset": self.dataset, "feat_dim": self.feat_dim,
             "name": f"trial{trial.number}"}))
        out = open(os.path.join(self.dir, f"trial{trial.number}.out"), "w")
        proc = subprocess.Popen(self.argv(trial, values), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=HERE, preexec_fn=die_with_parent)
        reported, last = 0, 0.0
        try:
            while True:
                done = proc.poll() is not None
                for record in new_records(run_dir, reported):
                    reported = record["epoch"]
                    last = record.get("val_acc")
                    last = 0.0 if last is None or not math.isfinite(last) else last
                    trial.report(last, reported)
                    if trial.should_prune():
                        proc.terminate()
                        proc.wait()
                        raise o.TrialPruned()
                if done:
                    break
                time.sleep(0.5)
        finally:
            out.close()
        if proc.returncode == 3:  # the loss went non-finite: these settings diverge
            return 0.0
        if proc.returncode != 0:
            with open(out.name) as f:
                lines = [line.strip() for line in f if line.strip()]
            raise UserError(f"{self.name} trial {trial.number} failed: "
                            f"{lines[-1] if lines else f'exit code {proc.returncode}'}")
        return last


def new_records(run_dir, after):
    """The metrics records of epochs after `after` that have been written so far."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:  # a line being written right now
                break
            if record["epoch"] > after:
                records.append(record)
    return records


def tune(opts):
    """Every study of the grid, one after the other; the best settings of each written to
    opts.recipe_file. Returns the studies."""
    studies = []
    for dataset in opts.dataset:
        for feat_dim in opts.feat_dim:
            for loss in opts.loss:
                study = Study(loss, dataset, feat_dim, opts)
                result = study.run()
                best = result.best_trial
                recipes.write_tuned(opts.recipe_file, loss, dataset, feat_dim, best.params, {
                    "trials": len(study.counted(result)), "epochs": study.epochs,
                    "val_size": study.val_size, "best_val_acc": round(best.value, 4),
                    "passthrough": " ".join(opts.passthrough)})
                studies.append(result)
    return studies
