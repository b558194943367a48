"""sweep.py: a grid that finishes, skips what is finished, survives being killed, runs under
submitit's local executor; the results table, gallery and export from run directories."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import flags
import recipes
import sweep
import report
import rundir
from conftest import ROOT
from rundir import is_locked, read_jsonl

SWEEP = os.path.join(ROOT, "sweep.py")


def main_flags(data_dir, tmp_path, epochs=1):
    return ["--data-dir", data_dir, "--no-download", "--img-dir", str(tmp_path / "imgs"),
            "--no-plots", "--no-progress", "--batch-size", "64", "--model", "lenet",
            "--lr", "0.001", "--epochs", str(epochs)]


def grid_argv(tmp_path, data_dir, epochs=1, losses=("xent", "standalone"), extra=()):
    return ["--loss", *losses, "--dataset", "mnist", "--seed", "0",
            "--log-dir", str(tmp_path / "log"), *extra, "--", *main_flags(data_dir, tmp_path, epochs)]


def epochs_of(run_dir):
    return [r["epoch"] for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl"))]


def fresh_starts(run_dir):
    """How many times the run was started from scratch (main.py's first log line)."""
    with open(os.path.join(run_dir, "train.log")) as f:
        return sum(1 for line in f if "loss, lenet model" in line)


def test_grid_finishes_and_a_rerun_starts_nothing(tmp_path, data_dir, capsys):
    argv = grid_argv(tmp_path, data_dir)
    assert sweep.main(argv) == 0
    dirs = [str(tmp_path / "log" / f"{loss}-mnist-feat=2-seed0") for loss in ("xent", "standalone")]
    for d in dirs:
        assert rundir.state_of(d) == "finished" and epochs_of(d) == [1]
    stamps = {d: os.stat(os.path.join(d, "metrics.jsonl")).st_mtime_ns for d in dirs}
    capsys.readouterr()

    assert sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("finished, skipped") == 2 and "started" not in out
    assert {d: os.stat(os.path.join(d, "metrics.jsonl")).st_mtime_ns for d in dirs} == stamps

    assert sweep.main(["--dry-run"] + argv) == 0
    assert capsys.readouterr().out.splitlines() == [f"# {os.path.basename(d)}: finished" for d in dirs]

    # the same names asked for another experiment (a longer budget, another lr): one line, not
    # a silent skip of runs that are not the ones asked for, and nothing touched
    for changed in (grid_argv(tmp_path, data_dir, epochs=2),
                    [a if a != "0.001" else "0.01" for a in argv]):
        with pytest.raises(SystemExit) as exit_info:
            sweep.main(changed)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "finished with --" in err[0] and "another --log-dir" in err[0], err
    assert {d: os.stat(os.path.join(d, "metrics.jsonl")).st_mtime_ns for d in dirs} == stamps


def test_dry_run_prints_the_commands(tmp_path, data_dir, capsys):
    assert sweep.main(grid_argv(tmp_path, data_dir, extra=["--dry-run"])) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert "main.py --loss xent --dataset mnist --feat-dim 2 --seed 0 --name seed0" in lines[0]
    assert lines[0].endswith("--epochs 1")
    assert not (tmp_path / "log").exists()  # nothing run, nothing written


def test_a_killed_grid_completes_on_rerun_with_each_run_done_once(tmp_path, data_dir):
    argv = [sys.executable, SWEEP, *grid_argv(tmp_path, data_dir, epochs=2)]
    first = tmp_path / "log" / "xent-mnist-feat=2-seed0"
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    jsonl = first / "metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if jsonl.exists() and jsonl.read_text().count("\n") >= 1:
            break  # the first run is in its second epoch
        time.sleep(0.02)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30  # its child dies with it (and drops the run's lock)
    while is_locked(str(first)) and time.time() < deadline:
        time.sleep(0.05)
    assert not is_locked(str(first))
    assert rundir.state_of(str(first)) == "started"
    assert rundir.state_of(str(tmp_path / "log" / "standalone-mnist-feat=2-seed0")) == "new"

    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "xent-mnist-feat=2-seed0: continued" in done.stdout
    for loss in ("xent", "standalone"):
        run_dir = str(tmp_path / "log" / f"{loss}-mnist-feat=2-seed0")
        assert epochs_of(run_dir) == [1, 2]
        assert fresh_starts(run_dir) == 1


def test_submitit_local_executor_runs_a_grid(tmp_path, data_dir):
    pytest.importorskip("submitit")
    argv = grid_argv(tmp_path, data_dir, losses=("cent",), extra=["--launcher", "submitit-local"])
    assert sweep.main(argv) == 0
    run_dir = str(tmp_path / "log" / "cent-mnist-feat=2-seed0")
    assert rundir.state_of(run_dir) == "finished" and epochs_of(run_dir) == [1]
    assert os.listdir(tmp_path / "log" / "submitit")  # submitit's own job files


# ----------------------------------------------------------------------------- results

def make_run(root, loss, dataset, feat_dim, seed, accs, seconds, epochs=None, **settings):
    """A hand-made run directory: args.json and metrics.jsonl, nothing else."""
    run_dir = root / f"{loss}-{dataset}-feat={feat_dim}-seed{seed}"
    run_dir.mkdir(parents=True)
    args = {"loss": loss, "dataset": dataset, "feat_dim": feat_dim, "seed": seed,
            "epochs": epochs or len(accs), "name": f"seed{seed}", "log_dir": str(root),
            "model": "resnet", "lr": 0.01, **settings}
    (run_dir / "args.json").write_text(json.dumps(args))
    (run_dir / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": i + 1, "test_acc": a, "seconds": s}) + "\n"
        for i, (a, s) in enumerate(zip(accs, seconds))))
    return str(run_dir)


def test_recipe_label_names_a_setting_the_run_left_unset(tmp_path, monkeypatch):
    """A run made before its recipe set a flag shows that flag as unset, not as None."""
    monkeypatch.setitem(recipes.RECIPES, "reference", {"epochs": 2, "lr_cent": 0.005})
    run = make_run(tmp_path, "cent", "mnist", 2, 0, [0.9, 0.95], [30, 30], lr_cent=None)
    with open(os.path.join(run, "args.json")) as f:
        assert report.recipe_of(json.load(f)) == ("reference, lr_cent unset", True, 2)
    run = make_run(tmp_path / "set", "cent", "mnist", 2, 0, [0.9, 0.95], [30, 30], lr_cent=0.005)
    with open(os.path.join(run, "args.json")) as f:
        assert report.recipe_of(json.load(f)) == ("reference", False, 2)


def test_recipe_label_names_a_flag_newer_than_the_run():
    """A run made before a flag existed ran with the flag's default: where its recipe sets
    that flag today, the label says the run left it unset."""
    made = vars(flags.parse_args(["--recipe", "quick", "--loss", "xent"])[0])
    assert report.recipe_of(made) == ("quick", False, 3)
    del made["center_crop"]  # quick's crop on MNIST came after such runs
    assert report.recipe_of(made) == ("quick, center_crop unset", True, 3)
    made = vars(flags.parse_args(["--recipe", "fast", "--loss", "xent"])[0])
    del made["center_crop"]  # fast leaves it at its default: nothing to say
    assert report.recipe_of(made) == ("fast", False, 5)


def test_results_table_from_run_directories(tmp_path, monkeypatch):
    dirs = [
        make_run(tmp_path, "xent", "mnist", 2, 0, [0.5, 0.990], [60, 60]),
        make_run(tmp_path, "xent", "mnist", 2, 1, [0.5, 0.992], [90, 90]),
        make_run(tmp_path, "xent", "mnist", 2, 2, [0.5, 0.994], [120, 120]),
        make_run(tmp_path, "standalone", "mnist", 2, 0, [0.9, 0.9915], [30, 30]),
        make_run(tmp_path, "standalone", "mnist", 2, 1, [0.99], [30], epochs=2),  # unfinished
        make_run(tmp_path, "margin", "mnist", 2, 0, [0.97], [45]),  # not in the published table
        # a longer run of a row already there: a row of its own, not a fourth seed
        make_run(tmp_path / "long", "xent", "mnist", 2, 0, [0.5, 0.6, 0.995], [60, 60, 60]),
        # another setting, and a setting of a loss it does not train: a row, and no row
        make_run(tmp_path / "delta", "standalone", "mnist", 2, 0, [0.9, 0.9955], [30, 30],
                 inter_delta=0.1),
        make_run(tmp_path / "other", "standalone", "mnist", 2, 1, [0.9, 0.9925], [30, 30],
                 inter_delta=1.0, weight_cent=1.0),
    ]
    table = report.reproduction_table(dirs + [str(tmp_path / "README.md")])
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table.strip().splitlines()]
    assert cells[0][3] == "recipe" and cells[0][-2:] == ["epochs", "min/run"]
    rows = {(*c[:4], c[-2]): c[4:-2] + [c[-1]] for c in cells[2:]}
    # mean 0.992, sample std 0.002, 0.1 points above 0.991; minutes (2 + 3 + 4) / 3
    assert rows[("xent", "mnist", "2", "reference", "2")] == [
        "0.991", "0.9920 ± 0.0020 (n=3)", "+0.10", "3.0"]
    assert rows[("xent", "mnist", "2", "reference", "3")] == ["0.991", "0.9950 (n=1)", "+0.40", "3.0"]
    # mean 0.992, sample std 0.0005 * sqrt(2) = 0.000707
    assert rows[("standalone", "mnist", "2", "reference", "2")] == [
        "0.994", "0.9920 ± 0.0007 (n=2)", "-0.20", "1.0"]
    assert rows[("standalone", "mnist", "2", "reference, inter_delta 0.1", "2")] == [
        "0.994", "0.9955 (n=1)", "+0.15", "1.0"]
    assert rows[("margin", "mnist", "2", "reference", "1")] == ["-", "0.9700 (n=1)", "-", "0.8"]
    assert rows[("cent", "cifar10", "128", "-", "-")] == ["0.858", "not run", "-", "-"]
    labelled = report.reproduction_table(dirs, not_run="not run here: no data offline")
    cifar = [[c.strip() for c in line.strip("|").split("|")] for line in labelled.splitlines()
             if "cifar10" in line]
    assert len(cifar) == 6 and {c[5] for c in cifar} == {"not run here: no data offline"}
    # as the recipe makes them: the changed setting and the other length are left out
    # (reference: 100 epochs, so the hand-made runs say they are of a recipe with 2)
    monkeypatch.setitem(recipes.RECIPES, "reference", {"epochs": 2})
    only = report.reproduction_table(dirs, as_recipe=True)
    assert "inter_delta" not in only and "0.9950" not in only and "0.9920 ± 0.0020 (n=3)" in only
    assert "0.9700" not in only  # margin's run has 1 epoch
    monkeypatch.setitem(recipes.RECIPES, "reference", {"epochs": 3})  # only the long xent run
    long = {tuple(c.strip() for c in line.strip("|").split("|")[:3]): line
            for line in report.reproduction_table(dirs, as_recipe=True).splitlines()[2:]}
    assert "0.9950 (n=1)" in long[("xent", "mnist", "2")]
    assert "other settings only" in long[("standalone", "mnist", "2")]
    assert "not run" in long[("xent", "cifar10", "2")]
    assert len(rows) == len(report.PUBLISHED) + 3
    order = [k[:3] for k in rows]
    assert order.index(("xent", "mnist", "2")) < order.index(("standalone", "mnist", "2")) \
        < order.index(("margin", "mnist", "2")) < order.index(("xent", "mnist", "128"))
    assert order.count(("xent", "mnist", "2")) == 2


def test_gallery_and_export(tmp_path):
    log = tmp_path / "log"
    dirs = [make_run(log, "standalone", "mnist", 2, 0, [0.99], [1]),
            make_run(log, "xent", "fashion-mnist", 128, 0, [0.92], [1]),
            make_run(log, "xent", "mnist", 2, 1, [0.9], [1], epochs=3)]  # unfinished: left out
    md = report.gallery(dirs, "imgs").strip().splitlines()
    assert len(md) == 4
    assert md[2] == ("| standalone | mnist | 2 | 1 | 0.9900 | "
                     "![standalone-mnist-feat=2-seed0 train](imgs/standalone-mnist-feat=2-seed0/train.gif) | "
                     "![standalone-mnist-feat=2-seed0 val](imgs/standalone-mnist-feat=2-seed0/val.gif) |")
    assert "imgs/xent-fashion-mnist-feat=128-seed0/val.png" in md[3]
    (log / "standalone-mnist-feat=2-seed0" / "last.pt").write_bytes(b"x")
    copied = rundir.export(dirs, str(tmp_path / "results"))
    assert [os.path.basename(c) for c in copied] == ["standalone-mnist-feat=2-seed0",
                                                    "xent-fashion-mnist-feat=128-seed0"]
    assert sorted(os.listdir(copied[0])) == ["args.json", "metrics.jsonl"]
