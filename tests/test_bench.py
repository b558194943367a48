"""The benchmarks of bench/ end to end in their smoke mode (--quick --fake: small generated
data): each runs, prints its table and writes its JSON report, with a positive, finite number
for every measure. Timings are never asserted (they depend on the machine); the subprocess
timeout only guards against a hang."""
import ast
import importlib
import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch

from bench import common, variants
from conftest import ROOT

BENCH = os.path.join(ROOT, "bench")
SCRIPTS = ["step.py", "epoch_overhead.py", "variants.py", "retrieval.py", "draw_gif.py",
           "tensorboard_cost.py", "time_to_accuracy.py"]
TRAINING = ["step.py", "epoch_overhead.py", "variants.py"]
STEP_MEASURES = ["ours_img_s", "baseline_img_s", "ratio", "flops_per_image", "achieved_gflops",
                 "frac_of_mm", "frac_of_conv_ref", "train_epoch_s_est", "peak_mem_mb_ours",
                 "peak_mem_mb_baseline"]
OVERHEAD_MEASURES = ["ours_img_s", "train_epoch_s_est", "eval_img_s", "evaluate_s", "extract_s",
                     "snapshot_s", "checkpoint_s", "overhead_s", "overhead_frac"]
# a small extra for each, to keep the smoke runs short
SMOKE_FLAGS = {"step.py": [], "epoch_overhead.py": ["--models", "lenet"],
               "variants.py": ["--models", "lenet", "--threads", "1", "--channels-last",
                               "--center-crops", "20"],
               "retrieval.py": [], "draw_gif.py": [], "tensorboard_cost.py": [],
               "time_to_accuracy.py": []}
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def run_bench(script, *flags, timeout=900):  # a guard against hanging, not a timing
    return subprocess.run([sys.executable, os.path.join(BENCH, script), *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def report_of(tmp_path, script, *flags, device="cpu"):
    """Run a benchmark writing its JSON to tmp_path; (its stdout, the report read back)."""
    if script == "tensorboard_cost.py":
        pytest.importorskip("tensorboard")
    out = tmp_path / f"{script}.json"
    proc = run_bench(script, "--device", device, "--out", str(out), *flags)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout
    report = json.loads(out.read_text())
    assert report["table"] in proc.stdout
    meta = report["meta"]
    for key in ("date", "torch", "device", "device_name", "threads", "cores"):
        assert meta[key], key
    assert meta["device"].startswith(device) and meta["benchmark"] == script[:-3]
    return proc.stdout, report


def smoke(tmp_path, script, device="cpu"):
    return report_of(tmp_path, script, "--quick", "--fake", *SMOKE_FLAGS[script], device=device)


def check_pairs(stdout, report, models, losses, measures, data="FAKE"):
    assert data in report["meta"]["data"] and data in stdout
    assert set(report["results"]) == set(models)
    for model, per_loss in report["results"].items():
        assert set(per_loss) == set(losses)
        for loss, r in per_loss.items():
            for key in measures:
                assert positive(r[key]), (model, loss, key, r.get(key))
            assert f"{model:<11}{loss:<11}" in stdout  # its row in the table


def test_step(tmp_path, data_dir):
    """Its smoke run on MNIST files in torchvision's layout under --data-dir (the other
    benchmarks' smoke runs cover --fake)."""
    stdout, report = report_of(tmp_path, "step.py", "--quick", "--data-dir", data_dir)
    assert "ours img/s" in stdout and "base img/s" in stdout
    assert positive(report["rates"]["mm_gflops"]) and positive(report["rates"]["conv_ref_gflops"])
    check_pairs(stdout, report, ["lenet", "resnet"], ["standalone"], STEP_MEASURES,
                data="real MNIST")
    r = report["results"]["lenet"]["standalone"]
    assert len(r["ours_img_s_repeats"]) == len(r["baseline_img_s_repeats"]) == 2
    assert positive(report["resnet_epoch_s_est"])


def test_epoch_overhead(tmp_path):
    stdout, report = smoke(tmp_path, "epoch_overhead.py")
    check_pairs(stdout, report, ["lenet"], ["standalone"], OVERHEAD_MEASURES)
    r = report["results"]["lenet"]["standalone"]
    assert r["metrics_s"] >= 0 and r["extract_s"] <= r["evaluate_s"]
    assert math.isclose(r["overhead_s"], r["evaluate_s"] + r["snapshot_s"] + r["checkpoint_s"])
    assert str(r["eval_batch_size"]) in r["eval_img_s_by_batch"] and len(r["eval_img_s_by_batch"]) == 2
    assert all(positive(v) for v in r["eval_img_s_by_batch"].values())
    assert all(positive(v) for v in r["overhead_frac_by_batch"].values())


def test_variants(tmp_path):
    stdout, report = smoke(tmp_path, "variants.py")
    names = ["channels_last", "contiguous", "channels_last+center_crop=20", "threads=1"]
    assert report["meta"]["variants"] == names
    r = report["results"]["lenet"]["standalone"]
    assert positive(r["default_img_s"]) and r["default"]["channels_last"] is True  # CPU default
    assert set(r["variants"]) == set(names)
    for name, v in r["variants"].items():
        assert positive(v["img_s"]) and positive(v["speedup"]) and positive(v["setup_s"]), name
        assert len(v["img_s_repeats"]) == 2
        assert f"{'lenet':<11}{'standalone':<11}{name}" in stdout


def test_a_cropped_variant_trains_on_the_center_of_the_images():
    cfg = variants.parse_flags(["--quick", "--fake", "--models", "lenet", "--center-crops", "20"])
    name, options = variants.variants_of(cfg)[-1]
    assert (name, options) == ("amp+channels_last+center_crop=20",
                               {"amp": True, "channels_last": True, "center_crop": 20})
    device = torch.device("cpu")
    with common.mnist(cfg, device) as data:
        ours = common.Ours("lenet", "standalone", cfg, data, device, options)
        assert ours.args.center_crop == 20 and ours.args.amp
        assert ours.split.images.shape[-2:] == (20, 20)
        assert torch.equal(ours.split.images[:64], data.train.images[:64, :, 4:24, 4:24])
        assert positive(ours.run())


def test_fixed_width_widens_a_column_to_its_longest_cell():
    """A model name longer than its column's width still leaves a space before the next
    column; the header and rule are as wide as the rows."""
    rows = [{"model": "resnet-s2-slim", "loss": "xent", "img_s": 2745.4},
            {"model": "lenet", "loss": "standalone", "img_s": 12.0}]
    lines = common.fixed_width(rows, common.PAIR_COLUMNS
                               + [("img/s", 8, lambda r: f"{r['img_s']:.0f}")])
    assert [line.split() for line in lines[2:]] == [["resnet-s2-slim", "xent", "2745"],
                                                    ["lenet", "standalone", "12"]]
    assert lines[0].split() == ["model", "loss", "img/s"]
    assert len({len(line) for line in lines}) == 1 and set(lines[1]) == {"-"}
    assert lines[2].index("xent") == lines[0].index("loss")  # left-aligned under its title


def test_retrieval(tmp_path):
    stdout, report = smoke(tmp_path, "retrieval.py")
    assert set(report["results"]) == {"evaluation_pass", "retrieval_2d", "retrieval_128d"}
    for name, r in report["results"].items():
        assert positive(r["median_s"]) and positive(r["min_s"]), name
        assert r["what"] in stdout


def test_draw_gif(tmp_path):
    stdout, report = smoke(tmp_path, "draw_gif.py")
    r = report["results"]
    assert r["frames"] == 5 and r["points"] == 1000
    assert positive(r["seconds"]) and positive(r["gif_mb"])


def test_tensorboard_cost(tmp_path):
    stdout, report = smoke(tmp_path, "tensorboard_cost.py")
    r = report["results"]
    for key in ("scalars", "scalars_ms", "frames_ms", "terms", "terms_ms"):
        assert positive(r[key]), key
    assert "scalars" in stdout and "frames" in stdout


def test_time_to_accuracy(tmp_path):
    """Each recipe as main.py runs it (6 steps of generated MNIST), its time to the target,
    fixed costs and rate; the table of times, ratios and accuracies."""
    stdout, report = smoke(tmp_path, "time_to_accuracy.py")
    assert "FAKE" in report["meta"]["data_source"] and positive(report["meta"]["import_torch_s"])
    assert positive(report["rates"]["conv_ref_gflops"])
    # quick on MNIST trains the strided ResNet: each rate is of the model the run trained,
    # which does about 0.3 of the ResNet's FLOPs (its maps are about (14 / 26)^2 the size)
    assert [r["model"] for r in report["runs"]] == ["resnet", "resnet", "resnet-s2"]
    flops = report["flops_per_image"]
    assert positive(flops["resnet"]["standalone"])
    assert 0.25 < flops["resnet-s2"]["standalone"] / flops["resnet"]["standalone"] < 0.4
    assert [r["label"] for r in report["runs"]] == ["reference", "fast", "quick"]
    for r in report["runs"]:
        assert r["status"] == "finished" and positive(r["wall_s"]), r.get("output_tail")
        assert r["steps"] == 6 and r["epochs_done"] == 0.75  # --steps 6 of 8 an epoch
        assert positive(r["steps_per_s"]) and positive(r["img_s"])
        assert positive(r["frac_of_conv_ref"])
        assert 0 <= r["final_acc"] <= 1 and r["curve"][-1][1] == r["final_acc"]
        assert r["target_s"] is None or r["target_s"] <= r["wall_s"]
        for phase in ("start-up and imports", "data", "first step", "training", "evaluation",
                      "total"):
            assert r["timings"][phase] >= 0, phase
        assert r["timings"]["total"] <= r["wall_s"]
    assert isinstance(report["runs"][2]["amp"], bool) and report["runs"][2]["amp_auto"]
    cell = report["results"]["mnist"]["standalone"]
    assert set(cell) == {"reference", "fast", "quick", "ratios"} and cell["quick"]["runs"] == 1
    assert set(report["budget_curve"]["mnist"]["standalone"]) == {"reference", "fast", "quick"}
    assert "| mnist | standalone | 0.99 |" in stdout and "| mnist standalone quick s0" in stdout


def test_time_to_accuracy_slow_seeds_and_stop_at_target(tmp_path):
    """--slow-seeds gives reference and fast their own seeds; --stop-at-target ends a run once a
    record reaches the target, long before its budget."""
    from bench import time_to_accuracy as tta
    cfg = tta.parse_flags(["--recipes", "fast,quick", "--seeds", "0,1,2", "--slow-seeds", "0",
                           "--datasets", "mnist", "--losses", "xent", "--quick-epochs", ""])
    assert [(s["recipe"], s["seed"]) for s in tta.specs(cfg)] == \
        [("fast", 0), ("quick", 0), ("quick", 1), ("quick", 2)]
    assert tta.parse_flags([]).slow_seeds == [0]
    # a "run" that writes a record at 0.5, then one at the target, then would sleep a minute
    jsonl = tmp_path / "metrics.jsonl"
    code = (f"import time\nf = open({str(jsonl)!r}, 'w')\n"
            "for acc in (0.5, 0.99):\n    f.write('{\"test_acc\": %s}\\n' % acc); f.flush()\n"
            "    time.sleep(0.5)\ntime.sleep(60)\n")
    records, arrivals, wall, returncode, budget_hit = tta.watch(
        [sys.executable, "-c", code], str(tmp_path), 300, str(tmp_path / "out"), stop_at=0.99)
    assert [r["test_acc"] for r in records] == [0.5, 0.99] and len(arrivals) == 2
    assert returncode == -signal.SIGTERM and not budget_hit and wall < 60
    # a run whose record at the target is its last (args.json's epochs) is left to end as it
    # would for a user (saving, drawing): exit 0, its whole wall time
    run_dir = tmp_path / "last"
    run_dir.mkdir()
    (run_dir / "args.json").write_text(json.dumps({"loss": "xent", "dataset": "mnist",
                                                   "feat_dim": 2, "epochs": 1.5}))
    code = (f"import time\nf = open({str(run_dir / 'metrics.jsonl')!r}, 'w')\n"
            "for line in ('{\"epoch\": 1, \"test_acc\": 0.5}',\n"
            "             '{\"epoch\": 2, \"epoch_fraction\": 0.5, \"test_acc\": 0.99}'):\n"
            "    f.write(line + '\\n'); f.flush(); time.sleep(0.5)\ntime.sleep(1)\n")
    records, _, wall, returncode, budget_hit = tta.watch(
        [sys.executable, "-c", code], str(run_dir), 300, str(tmp_path / "out"), stop_at=0.99)
    assert [r["test_acc"] for r in records] == [0.5, 0.99]
    assert returncode == 0 and not budget_hit and wall >= 2


@CUDA
@pytest.mark.parametrize("script", SCRIPTS)
def test_smoke_on_cuda(tmp_path, script):
    smoke(tmp_path, script, device="cuda")


def in_process(script, argv, capsys):
    """Run a benchmark inside this process as its command line does; (exit code, stderr)."""
    module = importlib.import_module(f"bench.{script[:-3]}")
    with pytest.raises(SystemExit) as stop:
        module.common.cli(module.run, module.parse_flags(argv))
    return stop.value.code, capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
@pytest.mark.parametrize("script", SCRIPTS)
def test_no_cuda_is_one_line(tmp_path, script, capsys):
    code, err = in_process(script, ["--quick", "--fake", "--device", "cuda", "--out",
                                    str(tmp_path / "b.json")], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error:") and "CUDA" in err, err
    assert not (tmp_path / "b.json").exists()


@pytest.mark.parametrize("script", TRAINING)
def test_missing_data_is_one_line(tmp_path, script, capsys):
    code, err = in_process(script, ["--quick", "--device", "cpu", "--data-dir", str(tmp_path / "nothing"),
                                    "--out", str(tmp_path / "b.json")], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error:"), err
    assert "--fake" in err
    assert not (tmp_path / "b.json").exists()


def test_script_error_is_one_line_and_exit_code(tmp_path):
    proc = run_bench("step.py", "--quick", "--device", "cpu", "--data-dir", str(tmp_path / "nothing"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error:")


@pytest.mark.parametrize("script, flag", [
    ("step.py", ["--models", "vgg"]), ("step.py", ["--workers", "-1"]),
    ("epoch_overhead.py", ["--losses", "nope"]), ("epoch_overhead.py", ["--eval-images", "0"]),
    ("variants.py", ["--threads", "one"]), ("variants.py", ["--steps", "0"]),
    ("retrieval.py", ["--dims", "2,x"]), ("draw_gif.py", ["--points", "0"]),
    ("tensorboard_cost.py", ["--epochs", "0"]), ("retrieval.py", ["--device", "tpu"])])
def test_bad_flag_is_one_line(script, flag, capsys):
    module = importlib.import_module(f"bench.{script[:-3]}")
    with pytest.raises(SystemExit) as stop:
        module.parse_flags(flag)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1, err


def test_every_benchmark_is_tested_and_none_imports_main():
    scripts = {f for f in os.listdir(BENCH) if f.endswith(".py") and f not in ("__init__.py", "common.py")}
    assert scripts == set(SCRIPTS)
    for name in sorted(scripts | {"common.py"}):
        with open(os.path.join(BENCH, name)) as f:
            tree = ast.parse(f.read())
        imported = {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for a in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
        assert "main" not in imported, name
