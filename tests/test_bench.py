"""bench/train_step.py end to end on small generated MNIST files: it runs, prints its table and writes
the JSON with a positive, finite number for every measure of every (model, loss). Timings
are never asserted: they depend on the machine."""
import json
import math
import os
import subprocess
import sys

from conftest import ROOT

MEASURES = ["ours_img_s", "baseline_img_s", "ratio", "flops_per_image", "achieved_gflops",
            "frac_of_mm", "frac_of_conv_ref", "eval_img_s", "train_epoch_s_est", "extract_s",
            "evaluate_s", "snapshot_s", "checkpoint_s", "overhead_s", "overhead_frac",
            "peak_mem_mb_ours", "peak_mem_mb_baseline"]


def run_bench(*flags, timeout=600):  # a guard against hanging, not a timing
    return subprocess.run([sys.executable, os.path.join(ROOT, "bench", "train_step.py"), *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_quick_run_writes_table_and_json(tmp_path, data_dir):
    out = tmp_path / "bench.json"
    proc = run_bench("--quick", "--data-dir", data_dir, "--device", "cpu", "--steps", "2",
                     "--repeats", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "ours img/s" in proc.stdout and "base img/s" in proc.stdout
    assert f"wrote {out}" in proc.stdout

    report = json.loads(out.read_text())
    meta = report["meta"]
    for key in ("torch", "device", "threads", "cores", "date", "data"):
        assert meta[key], key
    assert meta["device"] == "cpu" and meta["data"] == "real MNIST"
    assert positive(report["rates"]["mm_gflops"]) and positive(report["rates"]["conv_ref_gflops"])
    assert set(report["results"]) == {"lenet", "resnet"}
    for model, per_loss in report["results"].items():
        assert set(per_loss) == {"standalone", "cent"}
        for loss, r in per_loss.items():
            for key in MEASURES:
                assert positive(r[key]), (model, loss, key, r.get(key))
            assert len(r["ours_img_s_repeats"]) == len(r["baseline_img_s_repeats"]) == 2
            assert all(positive(v) for v in r["eval_img_s_by_batch"].values())
            assert f"{model:<7}{loss:<11}" in proc.stdout  # its row in the table
    assert positive(report["resnet_epoch_s_est"])
    assert report["table"] in proc.stdout


def test_fake_data_and_an_option(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_bench("--quick", "--fake", "--models", "lenet", "--losses", "standalone",
                     "--steps", "1", "--repeats", "1", "--threads", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert "FAKE" in report["meta"]["data"] and "FAKE" in proc.stdout
    variant = report["results"]["lenet"]["standalone"]["variants"]["threads=1"]
    assert positive(variant["img_s"]) and positive(variant["speedup"])


def test_missing_data_is_one_line(tmp_path):
    proc = run_bench("--quick", "--data-dir", str(tmp_path / "nothing"), "--out", str(tmp_path / "b.json"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error:")
    assert "--fake" in proc.stderr
    assert not (tmp_path / "b.json").exists()


def test_bad_flag_is_one_line():
    proc = run_bench("--models", "vgg")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
