"""report.py: the results page equals what its command writes, the fair table's intervals and
tests against scipy and a hand computation, the open-set table, old run directories."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

import flags
import plots
import report
from conftest import ROOT


def test_committed_results_page_is_what_the_command_writes():
    """A table can never drift from its runs: results/README.md regenerated from results/ alone."""
    results = os.path.join(ROOT, "results")
    with open(os.path.join(results, "README.md")) as f:
        committed = f.read()
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        assert report.results_page("results", "imgs") == committed
    finally:
        os.chdir(cwd)


def test_interval_matches_a_hand_computation():
    mean, std, half = report.interval([0.90, 0.92, 0.91])
    assert mean == pytest.approx(0.91) and std == pytest.approx(0.01)
    # t(0.975, 2) = 4.302652729911275; sem = 0.01 / sqrt(3)
    assert half == pytest.approx(4.302652729911275 * 0.01 / math.sqrt(3))
    assert report.interval([0.5]) == (0.5, None, None)


def test_welch_matches_scipy_and_a_hand_computation():
    a, b = [0.91, 0.93, 0.92, 0.90], [0.89, 0.90, 0.88]
    diff, (low, high), p = report.welch(a, b)
    assert diff == pytest.approx(np.mean(a) - np.mean(b))
    va, vb = np.var(a, ddof=1) / 4, np.var(b, ddof=1) / 3
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2)  # Welch-Satterthwaite
    assert p == pytest.approx(2 * stats.t.sf(abs(t), df))
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert (low, high) == pytest.approx((diff - half, diff + half))
    assert report.welch([0.9], b) is None


def write_run(folder, name, args, records):
    run = os.path.join(folder, name)
    os.makedirs(run)
    with open(os.path.join(run, "args.json"), "w") as f:
        json.dump(args, f)
    with open(os.path.join(run, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return run


def tuned_args(loss, seed):
    return {"loss": loss, "dataset": "mnist", "feat_dim": 2, "epochs": 2, "recipe": "tuned",
            "val_size": 100, "seed": seed, "lr": 0.05, "weight_decay": 1e-4,
            "recipe_source": {"trials": 4, "epochs": 2, "searched": ["lr", "weight_decay"]}}


def quick_args(loss, seed, *extra):
    """args.json of `main.py --recipe quick --val-size 10000 --no-test` and extra flags."""
    import flags
    args = vars(flags.parse_args(["--recipe", "quick", "--loss", loss, "--dataset", "mnist",
                                  "--feat-dim", "2", "--seed", str(seed), "--val-size", "10000",
                                  "--no-test", *extra])[0])
    return json.loads(json.dumps(args, default=str))


def test_choices_table_rows_against_hand_numbers(tmp_path):
    """One row per departure from the recipe, each seed's validation accuracy and their mean;
    a run that stopped short counts as unfinished, not as a number; a test-split run refused."""
    done = lambda acc, epochs: [{"epoch": 1, "val_acc": 0.5}, {"epoch": epochs, "val_acc": acc}]  # noqa: E731
    write_run(tmp_path, "a", quick_args("xent", 0), done(0.9887, 3))
    write_run(tmp_path, "b", quick_args("xent", 1), done(0.9876, 3))
    write_run(tmp_path, "c", quick_args("xent", 0, "--label-smoothing", "0"), done(0.9867, 3))
    write_run(tmp_path, "d", quick_args("xent", 1, "--label-smoothing", "0"),
              [{"epoch": 1, "val_acc": 0.97}])  # stopped after its first epoch
    # 3.75 epochs end on a whole step: 3.7513 epochs done is finished
    write_run(tmp_path, "e", quick_args("standalone", 2), [{"epoch": 4, "epoch_fraction":
                                                           0.7512820512820513, "val_acc": 0.9889}])
    rows = table_rows(report.choices_table(sorted(str(p) for p in tmp_path.iterdir())))
    assert [(r["loss"], r["settings"], r["epochs"], r["val acc by seed"], r["mean"]) for r in rows] == [
        ("xent", "quick", "3", "s0 0.9887, s1 0.9876",
         f"{np.mean([0.9887, 0.9876]):.4f} ± {np.std([0.9887, 0.9876], ddof=1):.4f} (n=2)"),
        ("xent", "quick, label_smoothing 0", "3", "s0 0.9867, s1 unfinished (1 epochs)", "0.9867 (n=1)"),
        ("standalone", "quick", "3.75", "s2 0.9889", "0.9889 (n=1)")]
    assert {r["protocol"] for r in rows} == {"val 10000"}
    assert report.summarize(str(tmp_path / "e"))[1]["epochs"] == "3.75"  # the every-run table
    write_run(tmp_path, "f", dict(quick_args("xent", 2), val_size=0), done(0.99, 3))
    with pytest.raises(report.UserError, match="decided on the test split"):
        report.choices_table([str(tmp_path / "f")])


def test_fair_table_rows_against_hand_numbers(tmp_path):
    acc = {"xent": [0.90, 0.92, 0.91], "standalone": [0.93, 0.94, 0.95]}
    dirs = []
    for loss, values in acc.items():
        for seed, a in enumerate(values):
            records = [{"epoch": 1, "val_acc": 0.5, "seconds": 1.0},
                       {"epoch": 2, "val_acc": 0.8, "test_acc": a, "test_map_at_r": a - 0.1,
                        "seconds": 1.0}]
            dirs.append(write_run(str(tmp_path), f"{loss}-mnist-feat=2-seed{seed}",
                                  tuned_args(loss, seed), records))
    lines = report.fair_table(dirs).strip().splitlines()
    rows = [dict(zip([c.strip() for c in lines[0].strip("|").split("|")],
                     [c.strip() for c in line.strip("|").split("|")])) for line in lines[2:]]
    assert [r["loss"] for r in rows] == ["xent", "standalone"]
    xent, standalone = rows
    assert xent["test acc"] == "0.9100 ± 0.0100" and xent["n"] == "3"
    assert xent["vs xent (points)"] == "-" and xent["budget"] == "4 x 2 ep"
    diff, (low, high), p = report.welch(acc["standalone"], acc["xent"])
    assert standalone["vs xent (points)"] == (f"{100 * diff:+.2f} [{100 * low:+.2f}, "
                                               f"{100 * high:+.2f}], p={p:.2g}")
    assert standalone["MAP@R"] == "0.8400 ± 0.0100"


def test_openset_table(tmp_path):
    dirs = []
    for seed, (m, acc) in enumerate([(0.6, 0.99), (0.7, 0.98)]):
        args = {"loss": "standalone", "dataset": "mnist", "feat_dim": 2, "epochs": 1,
                "held_out_classes": "5,6,7,8,9", "seed": seed}
        dirs.append(write_run(str(tmp_path), f"run{seed}", args, [
            {"epoch": 1, "seen_acc": acc, "unseen_map_at_r": m, "unseen_precision_at_1": m + 0.1,
             "seconds": 1.0}]))
    table = report.openset_table(dirs)
    assert "0.6500 ± 0.0707" in table and "0.9850 ± 0.0071" in table and "| 2 " in table


def test_family_table_rows_geometry_gif_and_notes(tmp_path):
    """The every-objective table: 2-D finished runs only, in registry order within a dataset,
    the geometry of the last record, the GIF where it exists, the note where one is given."""
    results, imgs = tmp_path / "family", tmp_path / "imgs"
    geometry = {"test_center_ratio": 12.345, "test_nc1": 0.0123, "test_norm_mean": 20.0,
                "test_norm_std": 2.5, "test_min_center_angle": 30.0}
    dirs = []
    for loss, dataset, dim, epochs_done in [("ring", "mnist", 2, 1), ("standalone", "mnist", 2, 1),
                                            ("triplet", "fashion-mnist", 2, 1),
                                            ("xent", "mnist", 128, 1), ("git", "mnist", 2, 0)]:
        name = f"{loss}-{dataset}-feat={dim}-seed0"
        records = [{"epoch": 1, "test_acc": 0.9, "test_precision_at_1": 0.8,
                    "test_r_precision": 0.7, "test_map_at_r": 0.6, "seconds": 1.0, **geometry}]
        made = flags.parse_args(["--recipe", "fast", "--loss", loss, "--dataset", dataset,
                                 "--feat-dim", str(dim), "--epochs", "1"])[0]
        dirs.append(write_run(str(results), name, vars(made), records[:epochs_done]))
    (imgs / "standalone-mnist-feat=2-seed0").mkdir(parents=True)
    (imgs / "standalone-mnist-feat=2-seed0" / "val.gif").write_bytes(b"GIF89a")
    notes = {"standalone-mnist-feat=2-seed0": "ten clusters on a circle"}
    rows = table_rows(report.family_table(dirs, "../imgs", notes, exists=str(imgs)))
    # registry order within MNIST (standalone before ring), then Fashion-MNIST; 128-D and the
    # unfinished git run left out
    assert [(r["loss"], r["dataset"]) for r in rows] == [
        ("standalone", "mnist"), ("ring", "mnist"), ("triplet", "fashion-mnist")]
    standalone, ring, _ = rows
    assert standalone["test acc"] == "0.9000" and standalone["MAP@R"] == "0.6000"
    assert (standalone["dist/spread"], standalone["NC1"], standalone["norm"],
            standalone["min angle"]) == ("12.3", "0.0123", "20 ± 2.5", "30")
    assert standalone["val.gif"] == "![standalone-mnist-feat=2-seed0](../imgs/standalone-mnist-feat=2-seed0/val.gif)"
    assert standalone["what it shows"] == "ten clusters on a circle"
    assert ring["val.gif"] == "-" and ring["what it shows"] == "-" and ring["recipe"] == "fast"
    assert ring["weights"] == "w_ring=0.01"  # the paper's default, named


def test_old_runs_read_their_test_split_under_the_new_names(tmp_path):
    """Runs made before the validation split logged val_* for the test split: every table
    reads them as test_*."""
    run = write_run(str(tmp_path), "xent-mnist-feat=2-seed0",
                    {"loss": "xent", "dataset": "mnist", "feat_dim": 2, "epochs": 1},
                    [{"epoch": 1, "val_acc": 0.97, "val_map_at_r": 0.9, "seconds": 1.0}])
    row = report.summarize(run)[1]
    assert row["test acc"] == "0.9700" and row["MAP@R"] == "0.9000" and row["protocol"] == "published"


def test_report_command_writes_the_page(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    write_run(str(results), "xent-mnist-feat=2-seed0",
              {"loss": "xent", "dataset": "mnist", "feat_dim": 2, "epochs": 1, "recipe": "fast"},
              [{"epoch": 1, "test_acc": 0.97, "seconds": 60.0}])
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "sweep.py"), "--report", str(results),
                           "--img-dir", str(tmp_path / "imgs")], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    page = (results / "README.md").read_text()
    assert "| xent | mnist | 2 " in page.replace("  ", " ").replace("  ", " ") or "0.9700" in page
    assert page == report.results_page(str(results), str(tmp_path / "imgs"))


def test_budget_table_and_figure_against_hand_numbers(tmp_path):
    """The budget section: the fair runs at the tuning's length plus longer runs of the same
    tuned settings, mean ± std per budget, the first budget that reaches the published number."""
    fair, longer = tmp_path / "fair", tmp_path / "budget"
    fair.mkdir(), longer.mkdir()
    for seed, (a, ratio) in enumerate([(0.98, 4.0), (0.99, 5.0), (0.97, 6.0)]):  # tuned for 2 epochs
        write_run(str(fair), f"xent-mnist-feat=2-seed{seed}", tuned_args("xent", seed),
                  [{"epoch": 2, "test_acc": a, "train_eval_acc": a + 0.01, "val_center_ratio": ratio,
                    "seconds": 1.0}])
    for epochs, a in [(5, 0.990), (10, 0.9925)]:  # one grid folder per budget
        args = dict(tuned_args("xent", 0), epochs=epochs)
        (longer / f"e{epochs}").mkdir()
        write_run(str(longer / f"e{epochs}"), "xent-mnist-feat=2-seed0", args,
                  [{"epoch": epochs, "test_acc": a, "seconds": 1.0}])
    # a loss, or a (dataset, feat_dim), without longer runs has no budget curve
    write_run(str(fair), "cent-mnist-feat=2-seed0", tuned_args("cent", 0),
              [{"epoch": 2, "test_acc": 0.97, "seconds": 1.0}])
    write_run(str(fair), "xent-mnist-feat=128-seed0", dict(tuned_args("xent", 0), feat_dim=128),
              [{"epoch": 2, "test_acc": 0.99, "seconds": 1.0}])
    points = report.budget_points(report.run_dirs_in(str(fair)), report.budget_dirs(str(tmp_path)))
    assert {k: {loss: [(e, r["test_acc"]) for e, r in pairs] for loss, pairs in v.items()}
            for k, v in points.items()} == {("mnist", 2): {"xent": [
                (2.0, 0.98), (2.0, 0.99), (2.0, 0.97), (5.0, 0.990), (10.0, 0.9925)]}}
    lines = report.budget_table(points).strip().splitlines()
    row = dict(zip([c.strip() for c in lines[0].strip("|").split("|")],
                   [c.strip() for c in lines[2].strip("|").split("|")]))
    assert row["2 ep"] == "0.9800 ± 0.0100 (n=3)" and row["5 ep"] == "0.9900 (n=1)"
    assert row["published (100 ep, all data)"] == "0.991" and row["reaches it at"] == "10 ep"
    lines = report.separation_table(points).strip().splitlines()
    row = dict(zip([c.strip() for c in lines[0].strip("|").split("|")],
                   [c.strip() for c in lines[2].strip("|").split("|")]))
    assert row["2 ep"] == "0.9900 ± 0.01 / 5 ± 1" and row["5 ep"] == "-"
    [(caption, path)] = report.budget_figures(points, str(tmp_path / "figures"), draw=True)
    import matplotlib.image
    image = matplotlib.image.imread(path)
    assert caption == "budget, mnist, feat_dim 2" and image.shape[0] > 300 and image.shape[1] > 500


def test_tuning_minutes_read_from_an_optuna_journal(tmp_path):
    """The counted trials' wall time (complete, pruned), not a failed one's; no journal, no number."""
    import datetime
    import optuna
    study_dir = tmp_path / "xent-mnist-feat=2"
    study_dir.mkdir()
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study_dir / "journal.log")))
    study = optuna.create_study(study_name="xent-mnist-feat=2", storage=storage, direction="maximize")
    start = datetime.datetime(2026, 1, 1, 12, 0, 0)
    for minutes, state in [(3, optuna.trial.TrialState.COMPLETE), (1.5, optuna.trial.TrialState.PRUNED),
                           (60, optuna.trial.TrialState.FAIL)]:
        study.add_trial(optuna.trial.FrozenTrial(
            number=0, trial_id=0, state=state, value=0.9 if state.name != "FAIL" else None,
            values=None, datetime_start=start, datetime_complete=start + datetime.timedelta(minutes=minutes),
            params={}, distributions={}, user_attrs={}, system_attrs={}, intermediate_values={}))
    assert report.tuning_minutes(str(tmp_path), "xent-mnist-feat=2") == pytest.approx(4.5)
    assert report.tuning_minutes(str(tmp_path), "cent-mnist-feat=2") is None


def speed_report(tmp_path):
    """A hand-made report of bench/time_to_accuracy.py: reference seed 0 (stopped by the
    budget), fast seed 0 and quick seeds 0-2 of one loss, quick seed 2 short of the target."""
    def run(label, seed, target_s, acc, wall, curve, status="finished"):
        return {"dataset": "mnist", "loss": "xent", "recipe": label, "label": label, "seed": seed,
                "target_s": target_s, "final_acc": acc, "wall_s": wall, "curve": curve,
                "epochs": {"reference": 100, "fast": 5}.get(label, 1.5), "amp": label == "quick",
                "steps_per_s": 4.0 if label != "quick" else 8.0, "status": status,
                "frac_of_conv_ref": {"reference": 0.5, "fast": 0.6}.get(label, 0.7 + seed / 10)}
    runs = [run("reference", 0, None, 0.985, 905.0, [[450.0, 0.97], [900.0, 0.985]], "budget"),
            run("fast", 0, 300.0, 0.991, 310.0, [[100.0, 0.95], [200.0, 0.98], [300.0, 0.991]]),
            run("quick", 0, 90.0, 0.990, 90.0, [[90.0, 0.990]]),
            run("quick", 1, 100.0, 0.992, 100.0, [[100.0, 0.992]]),
            run("quick", 2, None, 0.985, 110.0, [[110.0, 0.985]])]
    report_ = {"meta": {"device_name": "Some CPU", "threads": 2, "torch": "2.14.1",
                        "date": "2026-12-03T06:00:00", "targets": {"mnist": 0.99},
                        "budget_seconds": 900.0},
               "results": {"mnist": {"xent": {"ratios": {"fast/quick": None,
                                                          "reference/quick": None}}}},
               "runs": runs}
    (tmp_path / "speed").mkdir()
    path = tmp_path / "speed" / "time_to_accuracy-cpu.json"
    path.write_text(json.dumps(report_))
    return str(path), report_


def table_rows(markdown_text):
    lines = markdown_text.strip().splitlines()
    names = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(names, [c.strip() for c in line.strip("|").split("|")])) for line in lines[2:]]


def test_speed_table_headline_and_figure_against_hand_numbers(tmp_path):
    path, made = speed_report(tmp_path)
    [(found, read)] = report.speed_reports(str(tmp_path))
    assert found == path and read == made
    reference, fast, quick = table_rows(report.speed_table(read))
    assert (reference["recipe"], reference["epochs"], reference["s to target"]) == ("reference", "100", "> 900")
    assert (fast["recipe"], fast["epochs"], fast["bf16"], fast["s to target"]) == ("fast", "5", "no", "300")
    assert fast["test acc"] == "0.9910 (n=1)" and fast["wall s"] == "310"
    assert quick["s to target"] == "not reached (2/3)" and quick["steps/s"] == "8.0"
    mean, std = np.mean([0.990, 0.992, 0.985]), np.std([0.990, 0.992, 0.985], ddof=1)
    assert quick["test acc"] == f"{mean:.4f} ± {std:.4f} (n=3)" and quick["wall s"] == "100"
    assert (reference["of conv"], fast["of conv"], quick["of conv"]) == ("0.50", "0.60", "0.80")
    # quick fell short on a seed: no ratio; the ratios sit on the slower recipes' rows
    assert (reference["/ quick"], fast["/ quick"], quick["/ quick"]) == ("-", "-", "-")
    ratios = read["results"]["mnist"]["xent"]["ratios"]
    ratios["fast/quick"], ratios["reference/quick"] = 300 / 95, {"at_least": 900 / 95}
    reference, fast, _ = table_rows(report.speed_table(read))
    assert (reference["/ quick"], fast["/ quick"]) == ("> 9.5", "3.2")
    head = report.speed_headline(str(tmp_path))
    assert head.startswith("Some CPU, 2 threads, torch 2.14.1, 2026-12-03: mnist (`")
    [row] = table_rows(head.split("\n\n", 1)[1])
    assert (row["2-D, end to end"], row["loss"]) == ("mnist to 0.99", "xent")
    assert row["fast: s to target"] == "300" and row["quick: wall s"] == "100"
    assert (row["reference: s to target"], row["reference / quick"]) == ("> 900", "-")
    assert row["fast / quick"] == "-"  # the file on disk: quick fell short on seed 2
    # a run that ended short of the target without the budget stopping it: not reached
    ended = dict(read, runs=[dict(read["runs"][0], status="finished")] + read["runs"][1:])
    assert table_rows(report.speed_table(ended))[0]["s to target"] == "not reached"
    # a later report of quick alone (--main-flags): on the page, not in the README's table
    alone = dict(made, runs=made["runs"][2:], meta=dict(made["meta"], main_flags=["--no-amp"]))
    (tmp_path / "speed" / "zz-quick-fp32.json").write_text(json.dumps(alone))
    assert report.speed_headline(str(tmp_path)) == head
    assert report.speed_machine(alone).endswith("2026-12-03, main.py --no-amp")
    (tmp_path / "speed" / "zz-quick-fp32.json").unlink()
    # newest is the date it was made, not the file name: a later report on another machine
    # under a name that sorts first takes the README's table; an earlier one does not
    other = dict(made, meta=dict(made["meta"], device_name="Other CPU", date="2026-12-03T09:00:00"))
    (tmp_path / "speed" / "a-other.json").write_text(json.dumps(other))
    assert report.speed_headline(str(tmp_path)).startswith("Other CPU, 2 threads")
    other["meta"]["date"] = "2026-12-02T09:00:00"
    (tmp_path / "speed" / "a-other.json").write_text(json.dumps(other))
    assert report.speed_headline(str(tmp_path)) == head
    (tmp_path / "speed" / "a-other.json").unlink()
    # a later report of another dataset adds its rows under MNIST's, which it does not displace
    fashion = {"meta": dict(made["meta"], date="2026-12-04T09:00:00", targets={"fashion-mnist": 0.9}),
               "results": {"fashion-mnist": {"cent": {"ratios": {"fast/quick": 4.0}}}},
               "runs": [dict(r, dataset="fashion-mnist", loss="cent") for r in made["runs"]]}
    (tmp_path / "speed" / "a-fashion.json").write_text(json.dumps(fashion))
    both = report.speed_headline(str(tmp_path))
    assert both.startswith("mnist: Some CPU, 2 threads, torch 2.14.1, 2026-12-03 (`")
    assert "; fashion-mnist: Some CPU, 2 threads, torch 2.14.1, 2026-12-04 (`" in both
    assert "speed/a-fashion.json`):" in both
    rows = table_rows(both.split("\n\n", 1)[1])
    assert [(r["2-D, end to end"], r["loss"], r["fast / quick"]) for r in rows] == [
        ("mnist to 0.99", "xent", "-"), ("fashion-mnist to 0.9", "cent", "4.0")]
    (tmp_path / "speed" / "a-fashion.json").unlink()
    [(caption, figure)] = report.speed_figures([(path, made)], str(tmp_path / "figures"), draw=True)
    import matplotlib.image
    image = matplotlib.image.imread(figure)
    assert figure.endswith("time_to_accuracy-cpu.png") and image.shape[0] > 300
    page = report.results_page(str(tmp_path), str(tmp_path / "imgs"))
    assert "## Time to accuracy" in page and "figures/time_to_accuracy-cpu.png" in page
    (tmp_path / "speed" / "broken.json").write_text("{")
    with pytest.raises(report.UserError, match="broken.json is not a report"):
        report.speed_reports(str(tmp_path))


def test_readme_blocks_are_replaced_one_by_one():
    text = (f"a\n{report.HEADLINE_BEGIN}\nold\n{report.HEADLINE_END}\nb\n{report.SPEED_BEGIN}\n"
            f"old speed\n{report.HEADLINE_END}\nc\n")
    text = report.with_headline(text, "glance\n")
    text = report.with_headline(text, "speed\n", report.SPEED_BEGIN)
    assert text == (f"a\n{report.HEADLINE_BEGIN}\nglance\n{report.HEADLINE_END}\nb\n"
                    f"{report.SPEED_BEGIN}\nspeed\n{report.HEADLINE_END}\nc\n")


def test_fixed_costs_table_against_hand_numbers(tmp_path):
    """Medians over the quick runs of each report and dataset, phases summed as the columns
    say, exit = wall - train.log's total; runs without a timing line left out."""
    path, made = speed_report(tmp_path)
    phases = {"start-up and imports": 2.0, "setup": 0.01, "data": 0.07, "build": 0.02,
              "first step": 0.1, "training": 50.0, "evaluation": 2.5, "saving": 0.05,
              "drawing": 2.0}
    for run, scale in zip(made["runs"][2:], (1.0, 2.0, 3.0)):  # quick seeds 0, 1, 2
        run["timings"] = {k: v * scale for k, v in phases.items()}
        run["timings"]["total"] = sum(run["timings"].values())
        run["wall_s"] = run["timings"]["total"] + 0.5 * scale
    made["runs"][1]["timings"] = dict(phases, total=99.0)  # fast: not a quick run
    made["runs"][4].pop("timings")  # stopped: no timing line, left out
    [row] = table_rows(report.fixed_costs_table([(path, made)]))
    assert (row["report"], row["dataset"], row["runs"]) == ("cpu", "mnist", "2")
    # the median of two runs at scales 1 and 2: 1.5 times each phase
    assert row["start-up"] == "3.00" and row["setup to build"] == f"{1.5 * 0.10:.2f}"
    assert (row["first step"], row["evaluation"], row["saving"], row["drawing"]) == (
        "0.15", "3.75", f"{(0.05 + 0.1) / 2:.2f}", "3.00")
    assert row["exit"] == "0.75" and row["training"] == "75.00"
    fixed = 1.5 * (2.0 + 0.1 + 0.1 + 2.5 + 0.05 + 2.0 + 0.5)
    assert row["fixed"] == f"{fixed:.2f}"
    assert row["wall s"] == f"{1.5 * (sum(phases.values()) + 0.5):.1f}"
    assert report.fixed_costs_table([(path, dict(made, runs=made["runs"][:2]))]) == ""


def test_repeats_table_against_hand_numbers_and_on_the_page(tmp_path):
    """One row per repeated report, the older first: quick's runs only, how many reached the
    target, the median, least and most wall seconds and how many within the bound; the page
    shows them from results/speed/repeats/ and leaves them out of the per-report tables."""
    _, made = speed_report(tmp_path)
    (tmp_path / "speed" / "time_to_accuracy-cpu.json").unlink()
    (tmp_path / "speed" / "repeats").mkdir()
    later = json.loads(json.dumps(made))
    later["meta"]["date"], later["rates"] = "2026-12-03T07:30:00", {"conv_ref_gflops": 312.4}
    for run, wall in zip(later["runs"][2:], (58.0, 61.5, 59.9)):
        run["wall_s"], run["target_s"] = wall, wall - 2
    for name, made_ in (("b-first.json", made), ("a-later.json", later)):
        (tmp_path / "speed" / "repeats" / name).write_text(json.dumps(made_))
    reports = report.speed_reports(str(tmp_path), os.path.join("speed", "repeats"))
    first, second = table_rows(report.repeats_table(reports))
    assert (first["report"], first["started"], first["conv GFLOP/s"]) == (
        "b-first", "2026-12-03 06:00", "0")
    # quick walls 90, 100, 110: seed 2 short of the target, none within a minute
    assert (first["runs"], first["at target"], first["wall s"], first["least - most"],
            first["within 60 s"]) == ("3", "2", "100.0", "90.0 - 110.0", "0")
    assert (second["report"], second["conv GFLOP/s"], second["at target"], second["wall s"],
            second["least - most"], second["within 60 s"]) == (
        "a-later", "312", "3", "59.9", "58.0 - 61.5", "2")
    assert table_rows(report.repeats_table(reports, bound=61.5))[1]["within 61.5 s"] == "3"
    assert report.repeats_table([]) == "" and report.speed_reports(str(tmp_path)) == []
    page = report.results_page(str(tmp_path))
    assert "## Quick again and again" in page and "| b-first | 2026-12-03 06:00 |" in page
    assert "Time to accuracy" not in page


def test_time_to_accuracy_figure_axes_hold_every_point(tmp_path):
    """Seconds on a log axis and accuracy on a logit one: a chance-level first evaluation, a
    perfect one and a run at second 0 still draw, inside the axes, with plain tick labels."""
    import matplotlib.image
    curves = {"mnist, xent": {"reference": [[[0.0, 0.0], [80.0, 0.58], [900.0, 0.985]]],
                              "quick": [[[52.0, 0.9906]], [[55.0, 1.0]]]}}
    targets = {"mnist, xent": 0.99}
    path = plots.draw_time_to_accuracy(curves, str(tmp_path / "t.png"), "a title", targets)
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300 and image.shape[2] in (3, 4)
    [ax] = plots.time_to_accuracy_figure(curves, "a title", targets).axes
    assert ax.get_xscale() == "log" and ax.get_yscale() == "logit"
    low, high = ax.get_ylim()
    assert 0 < low < 0.58 and 0.999 < high < 1
    assert [t.get_text() for t in ax.get_yticklabels()][-1] in ("0.999", "0.998", "0.997")
    assert 0 < ax.get_xlim()[0] < 52 and ax.get_xlim()[1] > 900
