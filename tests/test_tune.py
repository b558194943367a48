"""tune.py through sweep.py --tune: N trials on tiny generated data, a resume after SIGKILL
with no trial lost or doubled, no test files needed, and a recipe that --recipe tuned reads."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import flags
import recipes
import tune
from conftest import ROOT

SWEEP = os.path.join(ROOT, "sweep.py")


def tune_argv(tmp_path, data_dir, trials, losses=("standalone",)):
    return ["--tune", "--loss", *losses, "--dataset", "mnist", "--feat-dim", "2",
            "--trials", str(trials), "--epochs", "2", "--val-size", "100",
            "--log-dir", str(tmp_path / "log"), "--recipe-file", str(tmp_path / "tuned.json"),
            "--", "--data-dir", data_dir, "--no-download", "--model", "lenet",
            "--batch-size", "64", "--recipe", "fast"]


def journal_trials(tmp_path, name="standalone-mnist-feat=2"):
    """(number, state, params) of each trial in the study's journal, read with Optuna."""
    o = tune.optuna()
    storage = o.storages.JournalStorage(o.storages.journal.JournalFileBackend(
        str(tmp_path / "log" / "tune" / name / "journal.log")))
    study = o.load_study(study_name=name, storage=storage)
    return [(t.number, t.state.name, t.params) for t in study.trials]


@pytest.fixture
def no_test_data(tmp_path, data_dir):
    """A copy of the generated data with every test file removed."""
    root = tmp_path / "data"
    shutil.copytree(os.path.join(data_dir, "MNIST"), root / "MNIST")
    for f in (root / "MNIST" / "raw").glob("t10k-*"):
        f.unlink()
    return str(root)


def test_search_space_comes_from_the_registry():
    assert tune.search_space("xent")[:2] == ["lr", "weight_decay"]
    assert "lr_cent" in tune.search_space("standalone") and "lr_cent" not in tune.search_space("xent")
    assert {"weight_inter", "inter_delta"} <= set(tune.search_space("standalone"))
    assert "weight_cent" in tune.search_space("cent")
    # a pair loss's class means are buffers, which --lr-cent does not move; proxies are learned
    assert "lr_cent" not in tune.search_space("triplet")
    assert "lr_cent" in tune.search_space("proxy-anchor")
    assert "lr_cent" not in tune.search_space("normface")  # class weights: the net's group


def test_tune_runs_n_trials_without_test_files_and_writes_a_recipe(tmp_path, no_test_data):
    argv = tune_argv(tmp_path, no_test_data, trials=3)
    proc = subprocess.run([sys.executable, SWEEP, *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    trials = journal_trials(tmp_path)
    assert len([t for t in trials if t[1] in ("COMPLETE", "PRUNED")]) == 3
    entry = json.loads((tmp_path / "tuned.json").read_text())["mnist"]["2"]["standalone"]
    assert entry["source"]["trials"] == 3 and entry["source"]["epochs"] == 2
    assert entry["source"]["val_size"] == 100
    assert set(entry["settings"]) == set(tune.search_space("standalone"))
    # every trial ran on the validation split only
    for out in (tmp_path / "log" / "tune" / "standalone-mnist-feat=2").glob("*/args.json"):
        saved = json.loads(out.read_text())
        assert saved["val_size"] == 100 and saved["test"] is False

    # --recipe tuned reads it back: the settings, the validation split, and where they came from
    args, _ = flags.parse_args(["--recipe", "tuned", "--recipe-file", str(tmp_path / "tuned.json"),
                                "--loss", "standalone", "--dataset", "mnist", "--feat-dim", "2"])
    for k, v in entry["settings"].items():
        assert getattr(args, k) == pytest.approx(v)
    assert args.val_size == 100 and args.epochs == 2
    assert args.recipe_source["trials"] == 3
    assert recipes.settings("tuned", "standalone", "mnist", 2, str(tmp_path / "tuned.json"))["lr"] \
        == pytest.approx(entry["settings"]["lr"])


def test_tune_resumes_after_sigkill_with_no_trial_lost_or_doubled(tmp_path, data_dir):
    argv = tune_argv(tmp_path, data_dir, trials=2)
    proc = subprocess.Popen([sys.executable, SWEEP, *argv], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    study_dir = tmp_path / "log" / "tune" / "standalone-mnist-feat=2"
    deadline = time.time() + 300
    # kill it as its second trial starts (main.py's start-up alone takes seconds)
    while not (study_dir / "trial1.out").exists() and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = journal_trials(tmp_path)
    assert any(state == "RUNNING" for _, state, _ in before)

    done = subprocess.run([sys.executable, SWEEP, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr + done.stdout
    after = journal_trials(tmp_path)
    counted = [t for t in after if t[1] in ("COMPLETE", "PRUNED")]
    assert len(counted) == 2
    cut = [t for t in after if t[1] == "FAIL"]
    assert len(cut) == 1  # the killed trial, failed and its settings run again
    assert any(t[2] == cut[0][2] for t in counted)
