"""Every table and the results page, computed from run directories alone (rundir.read_run):

    runs_table          one row per run: accuracies, retrieval, settings
    reproduction_table  ours (mean ± std over seeds) against the published table
    choices_table       the validation probes behind a recipe's values (results/choices/)
    gallery             the GIFs (2-D) or projections (above 2-D) of each run
    speed_table         the time to a target accuracy by recipe, from bench/time_to_accuracy.py's
                        reports committed in results/speed/
    fixed_costs_table   where a quick run's seconds go besides training, report by report
    results_page        results/README.md, written whole by `python sweep.py --report results`

A test regenerates results/README.md from the committed run directories and compares it
with the committed file, so no table drifts from its runs.
"""
import glob
import json
import os
import statistics

import numpy as np

import datasets
import flags
import losses
from rundir import epochs_done, finished, read_run, run_name, split_names, state_of
from utils import UserError

LOSS_ORDER = tuple(losses.OBJECTIVES)  # the registry's order: the study's three first


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


def weights(args):
    """The run's loss's hyperparameters as the registry declares them (`w_cent=1`), "-" for
    none; a run older than a hyperparameter shows its default."""
    return losses.describe_hypers(args["loss"], args)


RETRIEVAL_COLUMNS = {"P@1": "precision_at_1", "R-prec": "r_precision", "MAP@R": "map_at_r"}
# the geometry of the evaluated split's features at the last evaluation (losses.geometry)
GEOMETRY_COLUMNS = {"dist/spread": "center_ratio", "NC1": "nc1", "norm": "norm_mean",
                    "min angle": "min_center_angle"}


def protocol(args):
    """How the run decided: `published` (train on all, decide on test) or `val N`."""
    return f"val {args['val_size']}" if args.get("val_size") else "published"


def test_acc(record):
    """The official test split's accuracy of a record (its seen classes in an open-set run)."""
    return record.get("test_acc", record.get("seen_acc"))


def epochs_run(record):
    """epochs_done to the 2 decimals the log shows (rundir.epochs_text), a whole count kept an
    int: a plan of 3.75 epochs ends on a whole step, 3.7513 epochs of batch 128 on 60,000
    images, shown as 3.75."""
    return round(epochs_done(record), 2)


def summarize(run_dir):
    """One row of the every-run table (a dict of strings) and its sort key: the final test
    accuracy and retrieval, as measured once at the end (never a best over epochs)."""
    args, records = read_run(run_dir, need_metrics=False)
    done, planned = (epochs_run(records[-1]) if records else 0), args.get("epochs")
    deciding, tested = split_names(args)
    last = records[-1] if records else {}
    acc = test_acc(last)
    row = {"loss": args["loss"], "dataset": args["dataset"], "feat_dim": str(args["feat_dim"]),
           "model": args.get("model", "?"), "protocol": protocol(args),
           "test acc": f"{acc:.4f}" if acc is not None else "-",
           **{column: f"{last[f'{tested}_{key}']:.4f}" if last.get(f"{tested}_{key}") is not None
              else None for column, key in RETRIEVAL_COLUMNS.items()},
           **{column: number(last[f"{deciding}_{key}"]) if last.get(f"{deciding}_{key}") is not None
              else None for column, key in GEOMETRY_COLUMNS.items()},
           "epochs": f"{done:g}" if done == planned else f"{done:g}/{planned:g}",
           "weights": weights(args), "run": os.path.basename(os.path.normpath(run_dir))}
    if row["norm"] is not None and last.get(f"{deciding}_norm_std") is not None:
        row["norm"] += f" ± {number(last[f'{deciding}_norm_std'])}"
    key = (rank(args["dataset"], list(datasets.DATASETS)), args["feat_dim"],
           rank(args["loss"], LOSS_ORDER), row["run"])
    return key, row


def number(v):
    """Three significant digits; inf and nan as words."""
    return f"{v:.3g}" if np.isfinite(v) else str(v)


def rank(name, order):
    """Sorts as `order` does; names not in it after, alphabetically."""
    return (order.index(name), "") if name in order else (len(order), name)


def runs_table(run_dirs):
    """A Markdown table of the runs, one row each, sorted by dataset, feat_dim, then loss
    (LOSS_ORDER). Plain files among run_dirs (log/README.md in log/*) are skipped. The
    retrieval columns (final P@1, R-precision and MAP@R) appear when a run has them ("-" for
    those without)."""
    rows = [row for _, row in sorted((summarize(d) for d in run_dirs if not os.path.isfile(d)),
                                     key=lambda kr: kr[0])]
    if not rows:
        raise UserError("no run directories given")
    columns = [c for c in rows[0] if c not in {**RETRIEVAL_COLUMNS, **GEOMETRY_COLUMNS}
               or any(r[c] is not None for r in rows)]
    return markdown([{c: r[c] if r[c] is not None else "-" for c in columns} for r in rows])


def markdown(rows):
    """A Markdown table of rows (dicts of strings with the same keys), columns aligned."""
    columns = list(rows[0])
    width = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    line = lambda cells: "| " + " | ".join(cells) + " |"  # noqa: E731
    out = [line(c.ljust(width[c]) for c in columns), line("-" * width[c] for c in columns)]
    out += [line(r[c].ljust(width[c]) for c in columns) for r in rows]
    return "\n".join(out) + "\n"


def finished_runs(run_dirs):
    """(run name, args, records) of the finished runs among run_dirs; plain files are skipped."""
    return [(os.path.basename(os.path.normpath(d)), *read_run(d))
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
    recipe = args.get("recipe", "reference")
    run = ["--loss", args["loss"], "--dataset", args["dataset"],
           "--feat-dim", str(args["feat_dim"])]
    resolved = vars(flags.parse_args(["--recipe", recipe, *run])[0])
    # a flag newer than the run: the run had its default (the reference recipe's value)
    args = {**vars(flags.parse_args(run)[0]), **args}
    unused = {k for k in losses.declared() if resolved.get(k) is None}  # hypers of other losses
    ignored = NOT_SETTINGS | flags.RESUMABLE_FLAGS | unused

    def shown(k, v):  # None: the flag was left to its default (lr_cent: the lr)
        return f"{k} {v:g}" if isinstance(v, float) else f"{k} {'unset' if v is None else v}"
    changed = [shown(k, v) for k, v in sorted(args.items())  # "auto": whatever it resolved to
               if k in resolved and k not in ignored and v != resolved[k] and resolved[k] != "auto"]
    return ", ".join([recipe] + changed), bool(changed), resolved["epochs"]


def choices_table(run_dirs):
    """Markdown: the probes behind a recipe's values, one row per (dataset, feat_dim, loss,
    settings, epochs): the settings in which the runs depart from their recipe as it is today
    (recipe_of), each seed's validation accuracy after the last step (`unfinished (k epochs)`
    for a run that stopped short: a loss gone NaN, a collapse stopped by hand) and their mean
    ± sample std (n) over those that finished. The test split is not read: these runs decide."""
    groups = {}
    for run_dir in run_dirs:
        args, records = read_run(run_dir, need_metrics=False)
        if not args.get("val_size"):
            raise UserError(f"{run_dir} decided on the test split (no --val-size): it cannot "
                            "stand behind a choice")
        label = recipe_of({k: v for k, v in args.items() if k != "val_size"})[0]
        key = (rank(args["dataset"], list(datasets.DATASETS)), args["feat_dim"],
               rank(args["loss"], LOSS_ORDER), label, args["epochs"])
        # an unfinished run (its train.log says why: a loss gone NaN, a collapse stopped by
        # hand) has no accuracy, only how far it got
        acc = records[-1]["val_acc"] if finished(args, records) else None
        groups.setdefault(key, []).append(
            (args["seed"], acc, epochs_run(records[-1]) if records else 0, args))
    if not groups:
        raise UserError("no run directories given")
    rows = []
    for key, runs in sorted(groups.items()):  # keys are unique: the runs are never compared
        args = runs[0][3]
        accs = [acc for _, acc, _, _ in runs if acc is not None]
        rows.append({"loss": args["loss"], "dataset": args["dataset"],
                     "feat_dim": str(args["feat_dim"]), "protocol": protocol(args),
                     "settings": key[3], "epochs": f"{key[4]:g}",
                     "val acc by seed": ", ".join(
                         f"s{seed} " + (f"{acc:.4f}" if acc is not None else
                                        f"unfinished ({done:g} epochs)")
                         for seed, acc, done, _ in sorted(runs, key=lambda r: r[0])),
                     "mean": mean_std(accs) if accs else "-"})
    return markdown(rows)


def reproduction_table(run_dirs, published=PUBLISHED, not_run="not run", as_recipe=False):
    """Markdown: one row per (loss, dataset, feat_dim) of the published table and per (loss,
    dataset, feat_dim, recipe, epochs) of the finished runs (runs of another length or with
    another setting are another experiment, not another seed), with the published accuracy,
    the recipe and the settings the runs changed in it, ours as mean ± std over seeds (final
    val accuracy, sample std, n), the difference in points, epochs and minutes per run
    (training + evaluation, from metrics.jsonl's seconds). A published row without a finished
    run says `not_run`. With `as_recipe`, only the runs made as their recipe makes them today
    (no setting changed, the recipe's epochs)."""
    groups, other = {}, set()
    finished = finished_runs(run_dirs)
    if not finished:
        raise UserError("found no finished runs in the directories given (missing, empty, or "
                        "not run directories of main.py)")
    for _, args, records in finished:
        recipe, changed, epochs = recipe_of(args)
        key = (args["loss"], args["dataset"], args["feat_dim"], epochs_run(records[-1]), recipe)
        if as_recipe and (changed or key[3] != epochs):
            other.add(key[:3])
            continue
        groups.setdefault(key, []).append((args, records))
    ran = {k[:3] for k in groups}
    keys = set(groups) | {k + (None, "-") for k in published if k not in ran}  # None: not run
    keys = sorted(keys, key=lambda k: (rank(k[1], list(datasets.DATASETS)),
                                       k[2], rank(k[0], LOSS_ORDER), k[3] or 0,
                                       k[4]))
    rows = []
    for key in keys:
        runs = groups.get(key, [])
        pub = published.get(key[:3])
        row = {"loss": key[0], "dataset": key[1], "feat_dim": str(key[2]), "recipe": key[4],
               "published": f"{pub:.3f}" if pub is not None else "-"}
        if runs:
            acc = np.array([test_acc(records[-1]) for _, records in runs])
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
    return markdown(rows)


def gallery(run_dirs, img_dir="imgs", exists=None):
    """Markdown, laid out as the published gallery: one row per loss and dataset, the train
    and val GIF (2-D) or PNG (above 2-D) of each run. exists: a folder where the pictures
    must be found for a run to be shown (img_dir as seen from the current directory)."""
    cells = []
    for name, args, records in finished_runs(run_dirs):
        if exists is not None and not os.path.isdir(os.path.join(exists, name)):
            continue
        ext = "gif" if args["feat_dim"] <= 2 else "png"
        key = (rank(args["dataset"], list(datasets.DATASETS)),
               rank(args["loss"], LOSS_ORDER), args["feat_dim"], name)
        cells.append((key, args, records, name, ext))
    if not cells:
        raise UserError("no finished runs given")
    out = ["| loss | dataset | feat_dim | epochs | test acc | train | val |",
           "|---|---|---|---|---|---|---|"]
    for _, args, records, name, ext in sorted(cells, key=lambda c: c[0]):
        pics = [f"![{name} {split}]({img_dir}/{name}/{split}.{ext})" for split in ("train", "val")]
        out.append(f"| {args['loss']} | {args['dataset']} | {args['feat_dim']} | "
                   f"{records[-1]['epoch']} | {test_acc(records[-1]):.4f} | {pics[0]} | {pics[1]} |")
    return "\n".join(out) + "\n"




# ----------------------------------------------------------------------------- the fair comparison

def interval(values, confidence=0.95):
    """(mean, sample std, half-width of the t interval of the mean) of a few seeds' values;
    std and half-width None for one value."""
    from scipy import stats
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float(values.mean()), None, None
    sem = values.std(ddof=1) / np.sqrt(len(values))
    return (float(values.mean()), float(values.std(ddof=1)),
            float(sem * stats.t.ppf((1 + confidence) / 2, len(values) - 1)))


def mean_std(values, n=True):
    """`0.9850 ± 0.0025 (n=3)`: the mean and sample std of a few seeds' values (no std for one),
    and their count where `n`."""
    mean, std, _ = interval(values)
    return (f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")
            + (f" (n={len(values)})" if n else ""))


def welch(a, b, confidence=0.95):
    """Welch's t-test of mean(a) - mean(b): (difference, its interval (low, high), p-value);
    None where either side has fewer than 2 values."""
    from scipy import stats
    if len(a) < 2 or len(b) < 2:
        return None
    result = stats.ttest_ind(a, b, equal_var=False)
    ci = result.confidence_interval(confidence)
    return float(np.mean(a) - np.mean(b)), (float(ci.low), float(ci.high)), float(result.pvalue)


def tuned_runs(run_dirs):
    """{(dataset, feat_dim, loss): [(args, records), ...]} of the finished --recipe tuned runs."""
    groups = {}
    for _, args, records in finished_runs(run_dirs):
        if args.get("recipe") == "tuned":
            groups.setdefault((args["dataset"], args["feat_dim"], args["loss"]), []).append(
                (args, records))
    return groups


def setting_of(args):
    """The tuned values of a run, short: lr 0.05, wd 3e-4, and the loss's own."""
    names = {"lr": "lr", "weight_decay": "wd", "lr_cent": "lr_cent"}
    import tune  # the search space, for runs whose args.json does not list it
    keys = args.get("recipe_source", {}).get("searched") or tune.search_space(args["loss"])
    return ", ".join(f"{names.get(k, k)} {args[k]:.3g}" for k in keys if isinstance(args.get(k), float))


def data_of(args):
    """The images a run trained on and held out: `train 10000, val 10000`."""
    return (f"subset {args['subset']}, val {args.get('val_size', 0)}" if args.get("subset")
            else f"val {args.get('val_size', 0)}")


def budget_of(args):
    s = args.get("recipe_source", {})
    return f"{s.get('trials', '?')} x {s.get('epochs', '?')} ep" if s else "-"


def study_table(run_dirs):
    """Markdown: per (dataset, feat_dim, loss) of the tuned runs, mean ± std over seeds at the
    last epoch of the clean train - val and clean train - test gaps, and on the validation
    features the center distance over spread at the first and the last epoch and NC1."""
    def shown(values):
        mean, std, _ = interval(values)
        return f"{mean:+.4f} ± {std:.4f}" if std is not None else f"{mean:+.4f}"

    def plain(values):
        mean, std, _ = interval(values)
        return f"{mean:.3g} ± {std:.2g}" if std is not None else f"{mean:.3g}"
    rows = []
    groups = tuned_runs(run_dirs)
    for key in sorted(groups, key=lambda k: (rank(k[0], list(datasets.DATASETS)), k[1],
                                             rank(k[2], LOSS_ORDER))):
        last = [r[-1] for _, r in groups[key]]
        first = [r[0] for _, r in groups[key]]
        rows.append({"dataset": key[0], "feat_dim": str(key[1]), "loss": key[2],
                     "train - val": shown([r["train_eval_acc"] - r["val_acc"] for r in last]),
                     "train - test": shown([r["train_eval_acc"] - r["test_acc"] for r in last]),
                     "dist/spread, first epoch": plain([r["val_center_ratio"] for r in first]),
                     "dist/spread, last epoch": plain([r["val_center_ratio"] for r in last]),
                     "NC1, last epoch": plain([r["val_nc1"] for r in last]),
                     "n": str(len(last))})
    return markdown(rows)


def budget_points(fair_dirs, budget_dirs):
    """{(dataset, feat_dim): {loss: [(epochs, last record), ...]}} of the tuned runs of the
    (dataset, feat_dim, loss) that have runs in budget_dirs (longer runs of the tuned
    settings), with the fair comparison's runs (the tuning's own length) as the shortest budget."""
    longer = tuned_runs(budget_dirs)
    points = {}
    for runs in (tuned_runs(fair_dirs), longer):
        for (dataset, feat_dim, loss), group in sorted(runs.items()):
            if (dataset, feat_dim, loss) in longer:
                points.setdefault((dataset, feat_dim), {}).setdefault(loss, []).extend(
                    (float(args["epochs"]), records[-1]) for args, records in group)
    return {key: {loss: sorted(pairs, key=lambda p: p[0]) for loss, pairs in
                  sorted(by_loss.items(), key=lambda kv: rank(kv[0], LOSS_ORDER))}
            for key, by_loss in sorted(points.items())}


def budget_dirs(results_dir):
    """The longer runs of the tuned settings: results/budget/e<E>/<run>/, one grid per budget
    (a grid names its runs by loss, dataset, feat_dim and seed alone)."""
    return [d for sub in sorted(glob.glob(os.path.join(results_dir, "budget", "*")))
            for d in run_dirs_in(sub)]


def budget_table(points, published=PUBLISHED):
    """Markdown: per (dataset, feat_dim, loss), test accuracy at each budget as mean ± std
    (n), the published number and the first budget that reaches it."""
    rows = []
    for (dataset, feat_dim), by_loss in points.items():
        budgets = sorted({e for pairs in by_loss.values() for e, _ in pairs})
        for loss, pairs in by_loss.items():
            target = published.get((loss, dataset, feat_dim))
            row = {"dataset": dataset, "feat_dim": str(feat_dim), "loss": loss}
            reached = "not within these budgets"
            for e in budgets:
                values = [test_acc(r) for b, r in pairs if b == e]
                if not values:
                    row[f"{e:g} ep"] = "-"
                    continue
                row[f"{e:g} ep"] = mean_std(values)
                if target is not None and np.mean(values) >= target and reached.startswith("not"):
                    reached = f"{e:g} ep"
            row["published (100 ep, all data)"] = f"{target:.3f}" if target is not None else "-"
            row["reaches it at"] = reached if target is not None else "-"
            rows.append(row)
    return markdown(rows)


def separation_table(points):
    """Markdown: per (dataset, feat_dim, loss) and budget, after the last epoch, the clean
    training accuracy and the validation features' center distance over within-class spread
    (mean ± std over the seeds): does the separation keep growing once training accuracy
    saturates?"""
    def shown(values, fmt):
        mean, std, _ = interval(values)
        return format(mean, fmt) + (f" ± {std:.2g}" if std is not None else "")
    rows = []
    for (dataset, feat_dim), by_loss in points.items():
        budgets = sorted({e for pairs in by_loss.values() for e, _ in pairs})
        for loss, pairs in by_loss.items():
            row = {"dataset": dataset, "feat_dim": str(feat_dim), "loss": loss}
            for e in budgets:
                last = [r for b, r in pairs if b == e and r.get("val_center_ratio") is not None]
                row[f"{e:g} ep"] = "-" if not last else (
                    f"{shown([r['train_eval_acc'] for r in last], '.4f')} / "
                    f"{shown([r['val_center_ratio'] for r in last], '.3g')}")
            rows.append(row)
    return markdown(rows)


def budget_figures(points, figures_dir, draw=False, published=PUBLISHED):
    """(caption, path) of the budget curves, one per (dataset, feat_dim); drawn when `draw`."""
    out = []
    for (dataset, feat_dim), by_loss in points.items():
        path = os.path.join(figures_dir, f"budget-{dataset}-feat={feat_dim}.png")
        if draw:
            import plots  # matplotlib: only when drawing
            os.makedirs(figures_dir, exist_ok=True)
            accuracy = {loss: [(e, test_acc(r)) for e, r in pairs] for loss, pairs in by_loss.items()}
            plots.draw_budget(accuracy, path, f"{dataset}, feat_dim {feat_dim}: tuned settings, "
                              "test accuracy by epochs trained",
                              targets={loss: published.get((loss, dataset, feat_dim)) for loss in by_loss})
        out.append((f"budget, {dataset}, feat_dim {feat_dim}", path))
    return out


def tuning_minutes(tune_dir, study):
    """Wall minutes of the trials that count toward a tuner's budget (complete and pruned) in
    its Optuna journal (<tune_dir>/<study>/journal.log): a cut-off trial's time ends only when
    the restarted tuner marks it failed. None without a journal."""
    path = os.path.join(tune_dir, study, "journal.log")
    if not os.path.isfile(path):
        return None
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
    trials = optuna.load_study(study_name=study, storage=storage).trials
    counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials
               if t.state in counted) / 60


def fair_table(run_dirs, tune_dir=None):
    """Markdown: per (dataset, feat_dim, loss) of the tuned runs, the tuned setting, the tuning
    budget, test accuracy and MAP@R as mean ± std over seeds with the 95% t interval of the
    mean and n, the difference to xent with Welch's 95% interval and p-value, and the wall
    minutes of the tuning (from its journal in tune_dir) and of the seeds' runs."""
    groups = tuned_runs(run_dirs)
    if not groups:
        raise UserError("found no finished --recipe tuned runs")
    rows = []
    for key in sorted(groups, key=lambda k: (rank(k[0], list(datasets.DATASETS)), k[1],
                                             rank(k[2], LOSS_ORDER))):
        runs = groups[key]
        acc = [test_acc(r[-1]) for _, r in runs]
        maps = [r[-1].get("test_map_at_r", float("nan")) for _, r in runs]
        mean, std, half = interval(acc)
        map_mean, map_std, _ = interval(maps)
        base = groups.get((key[0], key[1], "xent"))
        diff = welch(acc, [test_acc(r[-1]) for _, r in base]) if base and key[2] != "xent" else None
        rows.append({
            "dataset": key[0], "feat_dim": str(key[1]), "loss": key[2],
            "tuned setting": setting_of(runs[0][0]), "budget": budget_of(runs[0][0]),
            "data": data_of(runs[0][0]),
            "test acc": f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f}",
            "95% CI": f"[{mean - half:.4f}, {mean + half:.4f}]" if half is not None else "-",
            "MAP@R": f"{map_mean:.4f} ± {map_std:.4f}" if map_std is not None else f"{map_mean:.4f}",
            "n": str(len(acc)),
            "vs xent (points)": "-" if diff is None else
            f"{100 * diff[0]:+.2f} [{100 * diff[1][0]:+.2f}, {100 * diff[1][1]:+.2f}], p={diff[2]:.2g}"})
        if tune_dir is not None:
            tuning = tuning_minutes(tune_dir, run_name(
                {"loss": key[2], "dataset": key[0], "feat_dim": key[1]}))
            seeds = sum(r.get("seconds", 0.0) for _, records in runs for r in records) / 60
            rows[-1]["minutes (tuning + seeds)"] = \
                f"{'?' if tuning is None else f'{tuning:.0f}'} + {seeds:.0f}"
    return markdown(rows)


# ----------------------------------------------------------------------------- open set

def openset_table(run_dirs):
    """Markdown: per (dataset, feat_dim, loss) of the finished --held-out-classes runs, the
    retrieval among the unseen classes' test images (P@1, MAP@R) beside the seen classes'
    test accuracy, mean ± std over seeds, n."""
    groups = {}
    for _, args, records in finished_runs(run_dirs):
        if args.get("held_out_classes"):
            key = (args["dataset"], args["feat_dim"], args["loss"], args["held_out_classes"],
                   recipe_of({k: v for k, v in args.items() if k != "held_out_classes"})[0])
            groups.setdefault(key, []).append(records[-1])
    if not groups:
        raise UserError("found no finished --held-out-classes runs")
    rows = []
    for key in sorted(groups, key=lambda k: (rank(k[0], list(datasets.DATASETS)), k[1],
                                             rank(k[2], LOSS_ORDER))):
        last = groups[key]
        rows.append({"dataset": key[0], "feat_dim": str(key[1]), "loss": key[2],
                     "held out": key[3], "recipe": key[4],
                     "unseen MAP@R": mean_std([r["unseen_map_at_r"] for r in last], n=False),
                     "unseen P@1": mean_std([r["unseen_precision_at_1"] for r in last], n=False),
                     "seen acc": mean_std([r["seen_acc"] for r in last], n=False),
                     "n": str(len(last))})
    return markdown(rows)


# ----------------------------------------------------------------------------- every objective

FAMILY_NOTES = "gifs.json"  # in results/family/: {run name: what its val.gif shows, one line}


def family_table(run_dirs, img_dir, notes=None, exists=None):
    """Markdown: one row per finished 2-D run of run_dirs (each objective's run on each
    dataset), sorted by dataset then registry order: its recipe and the objective's own
    hyperparameters, test accuracy and retrieval after the last epoch, the geometry of the
    evaluated split's features then (losses.geometry_metrics: dist/spread, NC1, the feature
    norm as mean ± std, the smallest angle between two centers), its val.gif (in
    img_dir/<run>/; `exists`: where to look for it from the current directory) and `notes`'
    line on what the GIF shows."""
    notes = notes or {}
    rows = []
    for run in run_dirs:
        if not (os.path.isdir(run) and state_of(run) == "finished"):
            continue
        key, row = summarize(run)
        if row["feat_dim"] != "2":
            continue
        name = row["run"]
        gif = os.path.join(exists if exists is not None else img_dir, name, "val.gif")
        rows.append((key, {
            **{c: row[c] for c in ("loss", "dataset", "epochs")},
            "recipe": recipe_of(read_run(run)[0])[0], "weights": row["weights"],
            **{c: row[c] or "-" for c in ("test acc", *RETRIEVAL_COLUMNS, *GEOMETRY_COLUMNS)},
            "val.gif": f"![{name}]({img_dir}/{name}/val.gif)" if os.path.isfile(gif) else "-",
            "what it shows": notes.get(name, "-")}))
    if not rows:
        raise UserError("found no finished 2-D runs")
    return markdown([row for _, row in sorted(rows, key=lambda kr: kr[0])])


def family_notes(folder):
    """results/family/gifs.json: {run name: one line}; {} where there is none."""
    path = os.path.join(folder, FAMILY_NOTES)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


# ----------------------------------------------------------------------------- time to accuracy

def speed_reports(results_dir, folder="speed"):
    """The reports of bench/time_to_accuracy.py committed in results/<folder>/, read."""
    out = []
    for path in sorted(glob.glob(os.path.join(results_dir, folder, "*.json"))):
        try:
            with open(path) as f:
                report = json.load(f)
            report["meta"]["targets"], report["runs"]  # noqa: B018 (the keys the page reads)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path} is not a report of bench/time_to_accuracy.py: {e}") from None
        out.append((path, report))
    return out


def speed_groups(report):
    """{(dataset, loss, label): [runs]} of a time_to_accuracy report, in the order it ran them."""
    groups = {}
    for run in report["runs"]:
        groups.setdefault((run["dataset"], run["loss"], run["label"]), []).append(run)
    return groups


def speed_machine(report):
    m = report["meta"]
    flags_ = " ".join(m.get("main_flags") or [])
    return (f"{m['device_name']}, {m['threads']} threads, torch {m['torch']}, {m['date'][:10]}"
            + (f", main.py {flags_}" if flags_ else ""))


def seconds_to_target(runs, budget=None):
    """Median seconds to the target over the runs, `> budget` where the runs that fell short
    were stopped by the budget (its seconds), else `not reached`, and (k/n) where there were
    several runs."""
    times = [r["target_s"] for r in runs if r["target_s"] is not None]
    count = f" ({len(times)}/{len(runs)})" if len(runs) > 1 else ""
    if len(times) == len(runs):
        return f"{statistics.median(times):.0f}{count}"
    short = [r for r in runs if r["target_s"] is None]
    if budget and all(r.get("status") == "budget" for r in short):
        return f"> {budget:.0f}{count}"
    return "not reached" + count


def ratio_cell(report, dataset, loss, slow):
    """`slow`'s time to the target over quick's: `3.2`, `> 3.2` where `slow` was stopped by the
    budget short of it, `-` where quick did not reach it or `slow` did not run."""
    ratio = report["results"][dataset][loss].get("ratios", {}).get(f"{slow}/quick")
    return (f"{ratio:.1f}" if isinstance(ratio, (int, float)) else
            f"> {ratio['at_least']:.1f}" if isinstance(ratio, dict) else "-")


def conv_fraction(runs):
    """The median of the runs' achieved training GFLOP/s over the convolution rate measured on
    the machine, `-` where the report has none."""
    fractions = [r["frac_of_conv_ref"] for r in runs if r.get("frac_of_conv_ref") is not None]
    return f"{statistics.median(fractions):.2f}" if fractions else "-"


def speed_table(report):
    """Markdown: per (dataset, loss, recipe) of a time_to_accuracy report, the seconds to the
    target, the final test accuracy, wall seconds, training steps/s, their share of the
    measured convolution rate and bf16, and on the reference and fast rows their time to the
    target over quick's."""
    rows = []
    for (dataset, loss, label), runs in speed_groups(report).items():
        rows.append({
            "dataset": dataset, "loss": loss, "recipe": label,
            "epochs": f"{runs[0]['epochs']:g}" if runs[0].get("epochs") else "-",
            "bf16": "yes" if runs[0].get("amp") else "no",
            "target": f"{report['meta']['targets'][dataset]:g}",
            "s to target": seconds_to_target(runs, report["meta"].get("budget_seconds")),
            "test acc": mean_std([r["final_acc"] for r in runs if r["final_acc"] is not None]),
            "wall s": f"{statistics.median(r['wall_s'] for r in runs):.0f}",
            "steps/s": f"{statistics.median(r['steps_per_s'] or 0 for r in runs):.1f}",
            "of conv": conv_fraction(runs),
            "/ quick": (ratio_cell(report, dataset, loss, label)
                        if label in ("reference", "fast") else "-")})
    return markdown(rows)


def runs_by_report(reports, label, keep=lambda run: True):
    """(report name, report, dataset, runs) per report, in the order they were made, and per
    dataset: `label`'s runs that `keep` holds for, where there are any."""
    for path, report in sorted(reports, key=lambda pr: pr[1]["meta"]["date"]):
        by_dataset = {}
        for run in report["runs"]:
            if run["label"] == label and keep(run):
                by_dataset.setdefault(run["dataset"], []).append(run)
        name = os.path.splitext(os.path.basename(path))[0].replace("time_to_accuracy-", "")
        for dataset, runs in by_dataset.items():
            yield name, report, dataset, runs


FIXED_COSTS = (("start-up", ("start-up and imports",)), ("setup to build", ("setup", "data", "build")),
               ("first step", ("first step",)), ("evaluation", ("evaluation",)),
               ("saving", ("saving",)), ("drawing", ("drawing",)))


def fixed_costs_table(reports, label="quick"):
    """Markdown: per report and dataset, where `label`'s runs spent their seconds besides
    training (the phases of train.log's timing line, medians over the runs of every loss and
    seed), `exit` (from train.log's last line to the process's end: wall s - total) and
    their sum, beside the training seconds and the wall time; reports in the order they were
    made. A stopped run has no timing line and is left out."""
    rows = []
    timed = runs_by_report(reports, label, lambda r: r.get("timings", {}).get("total") is not None)
    for report_name, _, dataset, runs in timed:
        costs = {name: [sum(r["timings"].get(p, 0.0) for p in phases) for r in runs]
                 for name, phases in FIXED_COSTS}
        costs["exit"] = [r["wall_s"] - r["timings"]["total"] for r in runs]
        fixed = [sum(values) for values in zip(*costs.values())]
        rows.append({"report": report_name, "dataset": dataset, "runs": str(len(runs)),
                     **{name: f"{statistics.median(v):.2f}" for name, v in costs.items()},
                     "fixed": f"{statistics.median(fixed):.2f}",
                     "training": "{:.2f}".format(statistics.median(
                         r["timings"].get("training", 0.0) for r in runs)),
                     "wall s": f"{statistics.median(r['wall_s'] for r in runs):.1f}"})
    return markdown(rows) if rows else ""


def repeats_table(reports, label="quick", bound=60.0):
    """Markdown: per report of the same command made again and again, and per dataset, when
    it started, the convolution rate measured before it, `label`'s runs, how many reached the
    target, and their wall seconds: median, least to most, and how many ended within
    `bound`; reports in the order they were made."""
    rows = []
    for name, report, dataset, runs in runs_by_report(reports, label):
        walls = [r["wall_s"] for r in runs]
        rows.append({
            "report": name, "started": report["meta"]["date"].replace("T", " ")[:16],
            "conv GFLOP/s": f"{report.get('rates', {}).get('conv_ref_gflops') or 0:.0f}",
            "dataset": dataset, "runs": str(len(runs)),
            "at target": str(sum(r["target_s"] is not None for r in runs)),
            "wall s": f"{statistics.median(walls):.1f}",
            "least - most": f"{min(walls):.1f} - {max(walls):.1f}",
            f"within {bound:g} s": str(sum(w <= bound for w in walls))})
    return markdown(rows) if rows else ""


def speed_figures(reports, figures_dir, draw=False):
    """(caption, path) of each report's accuracy-against-seconds figure; drawn when `draw`."""
    out = []
    for path, report in reports:
        name = os.path.splitext(os.path.basename(path))[0]
        figure = os.path.join(figures_dir, f"{name}.png")
        if draw:
            import plots  # matplotlib: only when drawing
            os.makedirs(figures_dir, exist_ok=True)
            curves, targets = {}, {}
            for (dataset, loss, label), runs in speed_groups(report).items():
                curves.setdefault(f"{dataset}, {loss}", {})[label] = [r["curve"] for r in runs]
                targets[f"{dataset}, {loss}"] = report["meta"]["targets"][dataset]
            plots.draw_time_to_accuracy(curves, figure, f"time to accuracy: "
                                        f"{speed_machine(report)}", targets)
        out.append((f"test accuracy against wall seconds, {name}", figure))
    return out


def speed_headline(results_dir):
    """The README's speed table: per dataset and loss, quick's accuracy over seeds and time
    beside reference's and fast's times to the target and their ratios to quick's, each
    dataset from the newest report in results/speed/ that has fast and quick on it (else its
    newest); datasets in the order they were first measured."""
    reports = speed_reports(results_dir)
    if not reports:
        return "(no report in results/speed/ yet)\n"
    by_date = sorted(reports, key=lambda pr: pr[1]["meta"]["date"])  # the date it was made
    grouped = [(p, r, speed_groups(r)) for p, r in by_date]
    datasets = list(dict.fromkeys(k[0] for _, _, groups in grouped for k in groups))
    rows, sources = [], []
    for dataset in datasets:
        found = [(entry, {k[2] for k in entry[2] if k[0] == dataset}) for entry in grouped]
        having = [entry for entry, labels in found if labels]
        both = [entry for entry, labels in found if {"fast", "quick"} <= labels]
        path, report, groups = (both or having)[-1]
        sources.append((dataset, speed_machine(report),
                        f"`{os.path.relpath(path, os.path.dirname(results_dir))}`"))
        target, budget = report["meta"]["targets"][dataset], report["meta"].get("budget_seconds")
        for (name, loss, label), runs in groups.items():
            if name != dataset or label != "quick":
                continue
            row = {"2-D, end to end": f"{dataset} to {target:g}", "loss": loss,
                   "quick: test acc": mean_std([r["final_acc"] for r in runs]),
                   "quick: wall s": f"{statistics.median(r['wall_s'] for r in runs):.0f}"}
            for slow in ("reference", "fast"):
                slow_runs = groups.get((dataset, loss, slow))
                row[f"{slow}: s to target"] = (seconds_to_target(slow_runs, budget)
                                               if slow_runs else "-")
                row[f"{slow} / quick"] = ratio_cell(report, dataset, loss, slow)
            rows.append(row)
    if len({machine for _, machine, _ in sources}) == 1:  # one machine: named once
        said = f"{sources[0][1]}: " + ", ".join(f"{d} ({p})" for d, _, p in sources)
    else:
        said = "; ".join(f"{d}: {machine} ({p})" for d, machine, p in sources)
    return f"{said}:\n\n{markdown(rows)}"


# ----------------------------------------------------------------------------- the results page

PAGE_HEAD = """# Results

Written by `python sweep.py --report results` from the run directories in `results/` (each
holds the args.json and metrics.jsonl of one run); a test checks that this page is what that
command writes. Accuracies are on the official test split after the last epoch. Protocols:
`published`, trained on the whole training split with every choice read on the test split,
as the reference runs did; `val N`, N training images held out and every choice read on
them, the test split read once. Pictures are in `imgs/<run>/`.
"""


FAIR_TEXT = """Each objective's lr, weight decay (and centers' lr, where it has centers) and its
own hyperparameters were searched by `python sweep.py --tune` (Optuna TPE, median pruning) on
a validation split held out of the training images, with the same budget for every objective
(the budget column: trials x epochs per trial); the test split was not opened while tuning.
Each row is then `--recipe tuned` on the same data (the data column: `--subset` of the
training and test splits where given, and the validation split held out of the training
images), trained for the tuning's epochs, the test split measured once after the last epoch. test acc and MAP@R: mean ± sample std over n
seeds; 95% CI: the t interval of the mean; vs xent: the difference of the means in points,
its 95% interval and p-value by Welch's t-test (scipy.stats.ttest_ind, equal_var=False).
minutes: wall minutes on two CPU cores of the tuning's counted trials (complete and pruned,
from the Optuna journal in `results/tune/`) and of the seeds' runs, some beside other work."""

STUDY_TEXT = """Per epoch, mean ± std over the seeds of the table above: the clean train - val gap
(the evaluated weights on unaugmented training images against the validation split), the
mean distance between centers (class means for xent) over the mean within-class spread, and
NC1 (Papyan, Han & Donoho 2020) on the validation features. The answers are in `docs/`."""

BUDGET_TEXT = """The tuned settings trained for longer than they were tuned for (`--recipe tuned
--epochs E` on the same data, in `results/budget/e<E>/`; the shortest budget is the fair
comparison's runs): test accuracy after the last epoch, mean ± sample std over n seeds. The
published numbers trained 100 epochs on the whole training split."""

SEPARATION_TEXT = """The same runs after their last epoch: clean training accuracy / the validation
features' mean center distance over mean within-class spread (class means for xent), mean
± std over the seeds."""

SPEED_TEXT = """How long a user waits, end to end: `python bench/time_to_accuracy.py` (its reports
in `results/speed/`, the flags in each report's meta) starts `python main.py --recipe R
--loss L --dataset D --feat-dim 2` as a user does, one run at a time on idle cores, and
stamps each metrics.jsonl record with the second it appeared. s to target: from the start to
the first evaluation at the target test accuracy, median over the seeds ((k/n): the seeds that
reached it); test acc: after the last evaluation (the quick recipe evaluates once, at its
end), mean ± sample std over n seeds; wall s: start to exit, median; of conv: training's
achieved GFLOP/s over the fp32 convolution rate the benchmark measured on the machine first
(quick trains in bf16, so it can pass 1); / quick: the reference or fast recipe's time to the
target over quick's (`> x` where the budget stopped it first). Runs with --stop-at-target
end at the target, unless it is their last evaluation."""

FIXED_COSTS_TEXT = """The quick recipe's runs in each report above, medians over every loss and seed
in seconds: start-up (the interpreter and the imports, from the process's start), setup to
build (device, data, model), the first step, the evaluation, the checkpoint and snapshot
writes, the pictures, and exit (from train.log's last line to the process's end, wall s -
total); fixed: their sum; training: the optimizer steps but the first."""

REPEATS_TEXT = """`python bench/time_to_accuracy.py --datasets mnist --recipes quick --losses
xent,cent,standalone --seeds 0,1,2 --slow-seeds 0 --stop-at-target --quick-epochs ""` made
again and again, one report after another on the same otherwise idle machine (reports in
`results/speed/repeats/`): how quick's wall time follows the host's speed from hour to hour.
The `crop-repeat` reports ran quick with MNIST's center 24x24 (`--center-crop 24`), the others
before it had one. conv: the fp32 convolution rate measured before the report's runs; wall
s: the median over its runs, then the least and the most, and how many ended within a
minute."""

CHOICES_TEXT = """The probes behind a recipe's values (in `results/choices/`): `python main.py
--recipe R --loss L --dataset D --feat-dim F --seed S --val-size N --no-test` with the
settings shown (where a run departs from its recipe as the recipe is today; `R` alone: the
recipe's own values), the test split never opened. Validation accuracy after the last step,
each seed and mean ± sample std over those that finished."""

OPENSET_TEXT = """Trained without the held-out classes; their test images are retrieved among
themselves (P@1, MAP@R on Euclidean distance), the seen classes keep their accuracy. Mean ±
sample std over n seeds."""

FAMILY_TEXT = """Every objective with the fair comparison's tuning budget, then one longer run
(`python sweep.py --tune --trials 4 --epochs 3 --loss ... --dataset D --feat-dim 2 --log-dir
log/family -- --recipe fast --subset 20000`, then `python sweep.py --loss ... --seed 0 --log-dir
log/family -- --recipe tuned --epochs E --amp --img-dir imgs/family`: MNIST 5 epochs,
Fashion-MNIST 10), exported to `results/family/`. One seed each, so a row shows what an
objective does, not that it beats another. weights: the objective's own hyperparameters as
tuned (recipe `tuned`) or its paper's defaults (any other recipe). After the last epoch:
accuracy and retrieval on the test split (read once), and the geometry of the deciding split's
features (validation; test under the published protocol), from `losses.geometry_metrics`:
dist/spread, the mean distance between two class centers over the mean distance of a sample
to its center; NC1, tr(Sigma_W Sigma_B^+) / C (Papyan, Han & Donoho 2020); norm, the
features' length, mean ± std; min angle, the smallest angle between two centers in degrees.
what it shows: the GIF's last frames, one line each (`results/family/gifs.json`)."""

# results/'s folders that are not a run of the reproduction table
NOT_RUNS = ("trials", "choices", "fair", "budget", "openset", "family", "figures", "tune", "speed")


def write_results(results_dir, img_dir="imgs"):
    """The results page and its figures, written into results_dir. Returns the paths."""
    import rundir
    figures = study_figures(run_dirs_in(os.path.join(results_dir, "fair")),
                            os.path.join(results_dir, "figures"), draw=True)
    fair = run_dirs_in(os.path.join(results_dir, "fair"))
    figures += budget_figures(budget_points(fair, budget_dirs(results_dir)),
                              os.path.join(results_dir, "figures"), draw=True)
    figures += speed_figures(speed_reports(results_dir), os.path.join(results_dir, "figures"),
                             draw=True)
    path = os.path.join(results_dir, "README.md")
    rundir.atomic_write_text(path, results_page(results_dir, img_dir))
    written = [p for _, p in figures] + [path]
    readme = os.path.join(os.path.dirname(os.path.abspath(results_dir)), "README.md")
    if os.path.exists(readme):  # the top-level README's results at a glance
        with open(readme) as f:
            text = f.read()
        new = text
        if HEADLINE_BEGIN in new:
            new = with_headline(new, headline(results_dir))
        if SPEED_BEGIN in new:
            new = with_headline(new, speed_headline(results_dir), SPEED_BEGIN)
        if new != text:
            rundir.atomic_write_text(readme, new)
            written.append(readme)
    return written


def run_dirs_in(folder):
    return sorted(d for d in glob.glob(os.path.join(folder, "*")) if os.path.isdir(d)
                  and os.path.isfile(os.path.join(d, "args.json")))


def results_page(results_dir, img_dir="imgs"):
    """results/README.md as text, from results_dir alone (and which pictures exist)."""
    runs = run_dirs_in(results_dir)
    trials = run_dirs_in(os.path.join(results_dir, "trials"))
    runs = [d for d in runs if os.path.basename(d) not in NOT_RUNS]
    pictures = os.path.relpath(img_dir, results_dir)
    out = [PAGE_HEAD]
    for title, text in page_sections(runs, trials, img_dir, pictures, results_dir):
        out.append(f"## {title}\n\n{text.rstrip()}\n")
    return "\n".join(out)


def study_figures(fair_runs, figures_dir, draw=False):
    """(caption, path) of the study's figures of the tuned runs, one per (dataset, feat_dim);
    drawn into figures_dir when `draw`."""
    by_group = {}
    for key, runs in sorted(tuned_runs(fair_runs).items()) if fair_runs else []:
        by_group.setdefault(key[:2], {})[key[2]] = [records for _, records in runs]
    out = []
    for (dataset, feat_dim), groups in sorted(by_group.items()):
        groups = dict(sorted(groups.items(), key=lambda kv: rank(kv[0], LOSS_ORDER)))
        path = os.path.join(figures_dir, f"study-{dataset}-feat={feat_dim}.png")
        if draw:
            import plots  # matplotlib: only when drawing
            os.makedirs(figures_dir, exist_ok=True)
            plots.draw_study(groups, path, f"{dataset}, feat_dim {feat_dim}: tuned settings, "
                             f"mean ± std over seeds")
        out.append((f"{dataset}, feat_dim {feat_dim}", path))
    return out


def page_sections(runs, trials, img_dir, pictures, results_dir="results"):
    """(title, Markdown) of each section of the results page that has runs."""
    sections = []
    fair = run_dirs_in(os.path.join(results_dir, "fair"))
    if fair:
        tuned = tuned_runs(fair)
        sections.append(("Fair comparison (validation protocol)", FAIR_TEXT + "\n\n" + fair_table(
            fair, os.path.join(results_dir, "tune"))))
        shown = [d for d in fair if d.endswith("-seed0")]
        fair_imgs = os.path.join(img_dir, "fair")
        if any(os.path.isdir(os.path.join(fair_imgs, os.path.basename(d))) for d in shown):
            sections.append(("Fair comparison: pictures", "Seed 0 of each tuned row.\n\n" + gallery(
                shown, os.path.relpath(fair_imgs, results_dir), exists=fair_imgs)))
        figures = study_figures(fair, os.path.join(results_dir, "figures"))
        if figures and tuned:
            sections.append(("The study's questions", STUDY_TEXT + "\n\n" + study_table(fair)
                             + "\n" + "\n\n".join(
                f"![{caption}]({os.path.relpath(path, results_dir)})" for caption, path in figures)))
        points = budget_points(fair, budget_dirs(results_dir))
        if points:
            sections.append(("Budget", BUDGET_TEXT + "\n\n" + budget_table(points) + "\n"
                             + SEPARATION_TEXT + "\n\n" + separation_table(points) + "\n"
                             + "\n\n".join(f"![{caption}]({os.path.relpath(path, results_dir)})"
                                             for caption, path in budget_figures(
                                                 points, os.path.join(results_dir, "figures")))))
    openset = run_dirs_in(os.path.join(results_dir, "openset"))
    if openset:
        sections.append(("Classes the net never saw (open set)", OPENSET_TEXT + "\n\n"
                         + openset_table(openset)))
        shown = [d for d in openset if d.endswith("-seed0") and "feat=2-" in d]
        openset_imgs = os.path.join(img_dir, "openset")
        if any(os.path.isdir(os.path.join(openset_imgs, os.path.basename(d))) for d in shown):
            sections.append(("Open set: pictures", "Seed 0 of each 2-D row: the seen classes' "
                             "features (dots) and the unseen classes' (triangles) by epoch.\n\n"
                             + gallery(shown, os.path.relpath(openset_imgs, results_dir),
                                       exists=openset_imgs)))
    family = run_dirs_in(os.path.join(results_dir, "family"))
    if family:
        family_imgs = os.path.join(img_dir, "family")
        sections.append(("Every objective", FAMILY_TEXT + "\n\n" + family_table(
            family, os.path.relpath(family_imgs, results_dir),
            family_notes(os.path.join(results_dir, "family")), exists=family_imgs)))
    reports = speed_reports(results_dir)
    if reports:
        sections.append(("Time to accuracy", SPEED_TEXT + "\n\n" + "\n".join(
            f"{speed_machine(report)} (`{os.path.relpath(path, results_dir)}`):\n\n"
            f"{speed_table(report)}\n![{caption}]({os.path.relpath(figure, results_dir)})\n"
            for (path, report), (caption, figure) in zip(
                reports, speed_figures(reports, os.path.join(results_dir, "figures"))))))
        costs = fixed_costs_table(reports)
        if costs:
            sections.append(("Where a quick run's seconds go", FIXED_COSTS_TEXT + "\n\n" + costs))
    repeats = repeats_table(speed_reports(results_dir, os.path.join("speed", "repeats")))
    if repeats:
        sections.append(("Quick again and again", REPEATS_TEXT + "\n\n" + repeats))
    if runs:
        sections.append(("Reproduction of the published table (published protocol)",
                         "Runs made as their recipe makes them today; mean ± sample std over "
                         "seeds, n seeds.\n\n" + reproduction_table(
                             runs, not_run="not run here: no data offline", as_recipe=True)))
        sections.append(("Every run", runs_table(runs)))
    if trials:
        sections.append(("Trials", "Shorter or changed runs behind the recipes' choices.\n\n"
                         + runs_table(trials)))
    choices = run_dirs_in(os.path.join(results_dir, "choices"))
    if choices:
        sections.append(("Choices on the validation split", CHOICES_TEXT + "\n\n"
                         + choices_table(choices)))
    shown = [d for d in runs if os.path.basename(d).endswith("-seed0")]
    if shown and any(os.path.isdir(os.path.join(img_dir, os.path.basename(d))) for d in shown):
        sections.append(("Gallery", "Seed 0 of each recipe run: the training and evaluated "
                         "split's features by epoch (2-D), or a PCA of the last epoch.\n\n"
                         + gallery(shown, pictures, exists=img_dir)))
    return sections




# ----------------------------------------------------------------------------- the README's block

HEADLINE_BEGIN = "<!-- generated by `python sweep.py --report results`: do not edit -->"
HEADLINE_END = "<!-- end of generated block -->"
SPEED_BEGIN = "<!-- generated by `python sweep.py --report results` from results/speed/: do not edit -->"


def headline(results_dir):
    """The README's results at a glance: the study's three losses in the fair comparison
    (where run) and in the reproduction of the published table, compact."""
    out = []
    fair = run_dirs_in(os.path.join(results_dir, "fair"))
    study = ("xent", "cent", "standalone")
    if fair:
        rows = []
        for (dataset, feat_dim, loss), runs in tuned_runs(fair).items():
            if loss in study:
                mean, std, half = interval([test_acc(r[-1]) for _, r in runs])
                rows.append(((rank(dataset, list(datasets.DATASETS)), feat_dim, rank(loss, LOSS_ORDER)),
                             {"fair comparison": f"{loss}, {dataset}, {feat_dim}-D",
                              "test acc (tuned, val protocol)": f"{mean:.4f} ± {std or 0:.4f} (n={len(runs)})",
                              "budget": budget_of(runs[0][0])}))
        if rows:
            out.append(markdown([r for _, r in sorted(rows, key=lambda kr: kr[0])]))
    runs = [d for d in run_dirs_in(results_dir)
            if os.path.basename(d) not in NOT_RUNS]
    lines = reproduction_table(runs, not_run="not run here: no data offline", as_recipe=True)
    header, rule, *body = lines.strip().splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in body]
    names = [c.strip() for c in header.strip("|").split("|")]
    keep = [dict(zip(names, c)) for c in cells if c[0] in study and "not run" not in c[5]]
    out.append(markdown([{"published protocol": f"{r['loss']}, {r['dataset']}, {r['feat_dim']}-D",
                          "published": r["published"], "ours": r["ours"],
                          "epochs": r["epochs"]} for r in keep]))
    return "\n".join(out)


def with_headline(readme_text, block, begin=HEADLINE_BEGIN):
    """The README with its generated block that opens with `begin` replaced by `block`."""
    start = readme_text.index(begin) + len(begin)
    end = readme_text.index(HEADLINE_END, start)
    return readme_text[:start] + "\n" + block + readme_text[end:]
