"""The quick recipe and what it rests on: fractional budgets (--epochs 1.5, --steps N) through
the schedule, the log, the snapshots, the finished check and exact resume; bf16 autocast
chosen by the device (native_bf16) and recorded in args.json; train.log's timing line."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

import engine
import flags
import main
import optim
import plots
import recipes
import rundir
from conftest import ROOT
from rundir import load_checkpoint, read_jsonl

MAIN = os.path.join(ROOT, "main.py")
STEPS = 512 // 32  # an epoch of the generated MNIST (512 training images) in batches of 32


def parse(*argv):
    return flags.parse_args(list(argv))[0]


def common(tmp_path, data_dir):
    return ["--data-dir", data_dir, "--no-download", "--log-dir", str(tmp_path / "log"),
            "--img-dir", str(tmp_path / "imgs"), "--no-progress", "--no-plots",
            "--batch-size", "32", "--deterministic"]  # bit for bit on CUDA too


def metrics(run_dir, drop=("seconds",)):
    return [{k: v for k, v in r.items() if k not in drop}
            for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl"))]


def lr_at(step, total, warmup, lr):
    """The warm-up-cosine learning rate before step `step` (0-based), by hand: LinearLR from
    lr / warmup to lr over `warmup` steps, then cosine to 0 over the rest."""
    if step < warmup:
        return lr * (1 / warmup + (1 - 1 / warmup) * step / warmup)
    return lr / 2 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def assert_same_run(a, b):
    """Two run directories with the same metrics (but seconds), weights, schedule, average."""
    assert metrics(a) == metrics(b)
    ca, cb = (load_checkpoint(os.path.join(d, "last.pt")) for d in (a, b))
    assert ca["epoch"] == cb["epoch"] and ca["scheduler"] == cb["scheduler"]
    for part in ("model", "objective", "averaged"):
        assert ca[part].keys() == cb[part].keys()
        for key in ca[part]:
            torch.testing.assert_close(ca[part][key], cb[part][key], rtol=0, atol=0, msg=key)


# ----------------------------------------------------------------------------- the recipe

def test_quick_recipe_values_and_what_the_user_types_wins():
    for loss in ("xent", "cent", "standalone"):
        args = parse("--recipe", "quick", "--loss", loss)
        assert (args.model, args.epochs, args.lr, args.scheduler, args.warmup_epochs,
                args.batch_size) == (("resnet-s2", 3.75, 0.1, "warmup-cosine", 0.5, 128)
                                     if loss == "standalone" else
                                     ("resnet-s2", 3, 0.2, "warmup-cosine", 0.5, 64))  # MNIST's
        args = parse("--recipe", "quick", "--loss", loss, "--dataset", "fashion-mnist")
        assert (args.model, args.epochs, args.lr, args.batch_size) == (
            "resnet-s2", 3, 0.1 if loss == "standalone" else 0.2, 64)
        args = parse("--recipe", "quick", "--loss", loss, "--dataset", "cifar10")
        assert (args.model, args.epochs, args.lr, args.batch_size) == ("resnet", 1.5, 0.1, 128)
        assert args.ema_decay == 0.99 and args.nesterov and args.val_size == 0
        assert args.eval_every > args.epochs  # evaluated once, after the last epoch
        assert args.amp == "auto"
        # MNIST's digits fill a 20x20 box: its quick runs see the center 24x24
        assert [parse("--recipe", recipe, "--loss", loss, "--dataset", dataset).center_crop
                for recipe, dataset in (("quick", "mnist"), ("quick", "fashion-mnist"),
                                        ("quick", "cifar10"), ("fast", "mnist"))] == [
            24, None, None, None]
        assert parse("--recipe", "quick", "--loss", loss, "--center-crop", "28").center_crop == 28
    assert parse("--recipe", "quick", "--no-amp").amp is False
    assert parse("--recipe", "quick", "--amp").amp is True
    assert parse("--recipe", "quick", "--epochs", "2").epochs == 2
    assert parse("--recipe", "quick", "--model", "resnet").model == "resnet"
    # other recipes: fp32 unless typed, as before --amp had an automatic choice
    assert parse().amp is False and parse("--recipe", "fast").amp is False
    assert parse("--recipe", "fast", "--amp").amp is True
    assert recipes.settings("quick", "standalone", "fashion-mnist")["lr_cent"] == 0.005
    for loss in ("xent", "cent"):  # MNIST's softmax heads smooth their labels
        assert parse("--recipe", "quick", "--loss", loss).label_smoothing == 0.1
        assert parse("--recipe", "quick", "--loss", loss, "--label-smoothing", "0").label_smoothing == 0
        assert parse("--recipe", "quick", "--loss", loss, "--dataset", "fashion-mnist").label_smoothing == 0
        assert parse("--recipe", "fast", "--loss", loss).label_smoothing == 0


def test_epochs_take_a_fraction_and_steps_are_the_other_way_to_say_it(capsys):
    assert parse("--epochs", "1.5").epochs == 1.5
    assert parse("--epochs", "2").epochs == 2 and isinstance(parse("--epochs", "2.0").epochs, int)
    assert parse("--steps", "700").steps == 700
    # until the data is known, the recipe's length (standalone's on MNIST: 3.75 epochs)
    assert parse("--recipe", "quick", "--steps", "700").epochs == 3.75
    for argv, phrase in ((["--epochs", "two"], "invalid epochs value: 'two'"),
                         (["--epochs", "0.0"], "--epochs must be positive"),
                         (["--steps", "0"], "--steps must be positive"),
                         (["--epochs", "2", "--steps", "10"], "pass one")):
        with pytest.raises(SystemExit):
            parse(*argv)
        assert phrase in capsys.readouterr().err


def test_the_schedule_by_step_with_a_fractional_budget():
    """1.5 epochs of 10 steps: 15 steps, 5 of warm-up (0.5 epochs), then 10 of cosine to 0."""
    args = parse("--recipe", "quick", "--loss", "xent", "--epochs", "1.5")
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=args.lr)
    assert optim.planned_steps(args, 10) == 15
    sched = optim.build_scheduler(args, opt, 10)
    lrs = []
    for _ in range(15):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert args.lr == 0.2
    assert lrs[:5] == pytest.approx([0.04, 0.072, 0.104, 0.136, 0.168])
    assert lrs[5:] == pytest.approx([0.1 * (1 + math.cos(math.pi * k / 10)) for k in range(10)])
    assert lrs == pytest.approx([lr_at(k, 15, 5, 0.2) for k in range(15)])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    # a length in steps: the same schedule over exactly those steps
    args = parse("--recipe", "quick", "--steps", "23")
    assert optim.planned_steps(args, 10) == 23
    # a fraction of an odd epoch rounds up (the run reaches what it was asked), and the epochs
    # args.json records for --steps N give back N
    assert optim.planned_steps(parse("--epochs", "1.5"), 23) == 35
    for n, per_epoch in ((700, 468), (20, 16), (1001, 7)):
        assert optim.planned_steps(parse("--epochs", str(n / per_epoch)), per_epoch) == n


# ----------------------------------------------------------------------------- a partial epoch

def test_a_partial_last_epoch_end_to_end(tmp_path, data_dir):
    run_dir = main.train(*flags.parse_args(common(tmp_path, data_dir) + [
        "--recipe", "quick", "--loss", "cent", "--epochs", "1.5", "--lr", "0.1",
        "--log-interval", "3"]))
    records = metrics(run_dir)
    assert [r["epoch"] for r in records] == [1, 2]  # an int index, as older readers expect
    assert "epoch_fraction" not in records[0] and records[1]["epoch_fraction"] == 0.5
    assert "test_acc" not in records[0] and records[1]["test_acc"] is not None  # once, at the end
    total, warmup = round(1.5 * STEPS), round(0.5 * STEPS)
    assert records[0]["lr"] == pytest.approx(lr_at(0, total, warmup, 0.1))
    assert records[1]["lr"] == pytest.approx(lr_at(STEPS, total, warmup, 0.1))
    # the schedule as it ran: before steps 0, 3, 6, ... of each epoch and after its last, at
    # the epochs done (the last at 1.5, where the cosine has reached 0)
    for r, first, steps in ((records[0], 0, STEPS), (records[1], STEPS, total - STEPS)):
        at = list(range(0, steps, 3)) + [steps]
        assert [x for x, _ in r["lr_steps"]] == pytest.approx([(first + k) / STEPS for k in at])
        assert [lr for _, lr in r["lr_steps"]] == pytest.approx(
            [lr_at(first + k, total, warmup, 0.1) for k in at], abs=1e-12)
    assert records[1]["lr_steps"][-1] == pytest.approx([1.5, 0.0], abs=1e-12)
    ckpt = load_checkpoint(os.path.join(run_dir, "last.pt"))
    assert ckpt["epoch"] == 2 and ckpt["scheduler"]["last_epoch"] == total
    assert ckpt["averaged"]["n_averaged"].item() == total
    assert rundir.state_of(run_dir) == "finished"
    snap = rundir.load_snapshot(rundir.snapshot_paths(run_dir)[-1])
    assert len(snap["train_features"]) == (total - STEPS) * 32  # the samples the half epoch saw
    args = rundir.read_args(run_dir)
    assert args["epochs"] == 1.5
    assert "epoch 1.5/1.5" in plots.frame_title(args, "train", snap["record"])
    with open(os.path.join(run_dir, "train.log")) as f:
        log = f.read()
    assert "epoch   1/1.5" in log and "epoch 1.5/1.5" in log
    timings = rundir.read_timings(run_dir)
    for phase in ("setup", "data", "build", "first step", "training", "evaluation", "saving",
                  "total"):
        assert timings[phase] >= 0, phase
    parts = sum(v for k, v in timings.items() if k != "total")
    assert timings["total"] == pytest.approx(parts, abs=0.05)
    # a finished partial epoch cannot grow: say so, touch nothing
    with pytest.raises(Exception, match="partial epoch 2"):
        main.train(*flags.parse_args(["--resume", run_dir, "--epochs", "2", "--data-dir", data_dir,
                                      "--no-progress", "--no-plots"]))
    assert metrics(run_dir) == records


def test_steps_set_the_length_and_args_json_keeps_it_in_epochs(tmp_path, data_dir):
    run_dir = main.train(*flags.parse_args(common(tmp_path, data_dir) + [
        "--recipe", "quick", "--steps", "20", "--lr", "0.05"]))
    args = rundir.read_args(run_dir)
    assert args["steps"] == 20 and args["epochs"] == 20 / STEPS
    records = metrics(run_dir)
    assert [r["epoch"] for r in records] == [1, 2] and records[1]["epoch_fraction"] == 4 / STEPS
    assert load_checkpoint(os.path.join(run_dir, "last.pt"))["scheduler"]["last_epoch"] == 20
    assert rundir.state_of(run_dir) == "finished"
    # extended with --epochs: the steps give way, the next epochs are whole
    main.train(*flags.parse_args(["--resume", run_dir, "--epochs", "3", "--data-dir", data_dir,
                                  "--no-progress", "--no-plots"]))
    args = rundir.read_args(run_dir)
    assert args["steps"] is None and args["epochs"] == 3
    assert [r.get("epoch_fraction") for r in metrics(run_dir)] == [None, 4 / STEPS, None]
    assert rundir.state_of(run_dir) == "finished"


def test_state_of_reads_the_fraction(tmp_path):
    def state(planned, last):
        rundir.atomic_write_text(str(tmp_path / "args.json"),
                                 json.dumps({"loss": "xent", "dataset": "mnist", "feat_dim": 2,
                                             "epochs": planned}))
        rundir.atomic_write_text(str(tmp_path / "metrics.jsonl"), json.dumps(last) + "\n")
        return rundir.state_of(str(tmp_path))
    assert state(1.5, {"epoch": 2, "epoch_fraction": 0.5}) == "finished"
    assert state(2, {"epoch": 2, "epoch_fraction": 0.5}) == "started"
    assert state(20 / 16, {"epoch": 2, "epoch_fraction": 4 / 16}) == "finished"
    assert state(3, {"epoch": 3}) == "finished" and state(3, {"epoch": 2}) == "started"


class StopAt:
    """engine.StopRequest that a signal reaches just after the `at`-th training step of the
    run (train_one_epoch reads .signal once after each step)."""
    at = None

    def __init__(self, enabled=True):
        self.reads = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @property
    def signal(self):
        self.reads += 1
        return signal.SIGTERM if self.reads >= self.at else None


RESUMED = ["--recipe", "quick", "--loss", "cent", "--lr", "0.05"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data_dir):
    """The run of RESUMED + a length, uninterrupted (made once per length)."""
    made = {}

    def run(length):
        if tuple(length) not in made:
            made[tuple(length)] = main.train(*flags.parse_args(
                common(tmp_path_factory.mktemp("straight"), data_dir) + RESUMED + length))
        return made[tuple(length)]
    return run


@pytest.mark.parametrize("length, stop_after", [
    (["--epochs", "2.5"], 2 * STEPS + 3),  # inside the partial last epoch
    (["--epochs", "2.5"], STEPS + 5),      # inside a whole epoch, before the partial one
    (["--steps", "20"], STEPS + 2),        # a length in steps: inside its partial epoch
], ids=["in-partial-epoch", "before-partial-epoch", "steps"])
def test_stop_mid_run_then_resume_gives_identical_metrics(tmp_path, data_dir, monkeypatch,
                                                          straight, length, stop_after):
    extra = RESUMED + length
    monkeypatch.setattr(StopAt, "at", stop_after)
    monkeypatch.setattr(engine, "StopRequest", StopAt)
    with pytest.raises(engine.Interrupted, match="stopped by signal"):
        main.train(*flags.parse_args(common(tmp_path / "b", data_dir) + extra))
    monkeypatch.undo()
    run_dir = str(tmp_path / "b" / "log" / "cent-mnist-feat=2")
    assert len(metrics(run_dir)) == stop_after // STEPS
    main.train(*flags.parse_args(["--resume", run_dir, "--no-progress", "--no-plots",
                                  "--data-dir", data_dir]))
    assert_same_run(straight(length), run_dir)
    assert rundir.state_of(run_dir) == "finished"


def test_sigkill_mid_run_of_a_fractional_budget_then_resume(tmp_path, data_dir, straight):
    extra = RESUMED + ["--epochs", "2.5"]
    root = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, MAIN, *common(root, data_dir), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    jsonl = root / "log" / "cent-mnist-feat=2" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if jsonl.exists() and jsonl.read_text().count("\n") >= 1:
            time.sleep(0.2)  # into epoch 2
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = str(jsonl.parent)
    assert 1 <= len(metrics(run_dir)) < 3
    main.train(*flags.parse_args(["--resume", run_dir, "--no-progress", "--no-plots",
                                  "--data-dir", data_dir]))
    assert_same_run(straight(["--epochs", "2.5"]), run_dir)


# ----------------------------------------------------------------------------- bf16 or not

@pytest.mark.parametrize("capability, bf16, amx, native", [
    ("AVX512", True, False, True), ("AVX512", False, True, True), ("AVX512", False, False, False),
    ("AVX2", False, False, False), ("DEFAULT", False, False, False)])
def test_native_bf16_on_a_cpu(monkeypatch, capability, bf16, amx, native):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    found, why = engine.native_bf16(torch.device("cpu"))
    assert found is native and capability in why


@pytest.mark.parametrize("capability, native", [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_native_bf16_on_cuda(monkeypatch, capability, native):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    found, why = engine.native_bf16(torch.device("cuda"))
    assert found is native and f"{capability[0]}.{capability[1]}" in why


@pytest.mark.parametrize("native", [True, False], ids=["with-bf16", "without-bf16"])
def test_quick_records_its_precision_in_args_json(tmp_path, data_dir, monkeypatch, native):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability",
                        lambda: "AVX512" if native else "AVX2")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    run_dir = main.train(*flags.parse_args(common(tmp_path, data_dir) + [
        "--recipe", "quick", "--steps", "2", "--device", "cpu"]))
    args = rundir.read_args(run_dir)
    assert args["amp"] is native and args["channels_last"] is True
    assert ("AVX512" if native else "without native bf16") in args["amp_auto"]
    # typed, the flag wins and nothing is decided for it
    run_dir = main.train(*flags.parse_args(common(tmp_path, data_dir) + [
        "--recipe", "quick", "--steps", "2", "--no-amp", "--name", "fp32"]))
    assert rundir.read_args(run_dir)["amp"] is False and "amp_auto" not in rundir.read_args(run_dir)


def test_resolve_auto_keeps_older_runs_as_they_were():
    for saved, expected in ((False, False), (True, True), (None, False)):
        args = parse()
        args.amp, args.channels_last = saved, None
        engine.resolve_auto(args, torch.device("cpu"))
        assert args.amp is expected and not hasattr(args, "amp_auto")


# ----------------------------------------------------------------------------- the program

def test_the_program_logs_where_its_time_went(tmp_path, data_dir):
    """As a process: start-up and imports, then each phase, and the pictures' seconds."""
    argv = common(tmp_path, data_dir) + ["--recipe", "quick", "--steps", "3", "--plots"]
    proc = subprocess.run([sys.executable, MAIN, *argv], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    run_dir = str(tmp_path / "log" / "standalone-mnist-feat=2")
    timings = rundir.read_timings(run_dir)
    assert list(timings) == ["start-up and imports", "setup", "data", "build", "first step",
                             "training", "evaluation", "saving", "drawing", "total"]
    assert all(v >= 0 for v in timings.values()) and timings["start-up and imports"] > 0
    assert rundir.TIMING in proc.stdout
    assert os.path.exists(tmp_path / "imgs" / "standalone-mnist-feat=2" / "train.gif")


def test_a_plain_run_imports_no_plotting_or_tensorboard():
    code = ("import sys; sys.path.insert(0, '.'); import main; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'tboard', "
            "'plots', 'sklearn', 'tensorboard', 'optuna', 'pytorch_metric_learning', 'scipy'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
