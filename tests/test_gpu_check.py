"""bench/gpu_check.sh's dry run (no GPU here): its own logic runs end to end on the CPU.

The dry run generates the data, validates the CNN job with ``resources.gpu: 0.25``, checks its
nvidia-smi parser and packing check on a canned sample, runs the tiny CPU path of the CNN, the
DERP-VAE and the mixture model through the shared loop, checks that its table refuses a diverged
run, and prints the table parsed here.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "bench" / "gpu_check.sh"


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


def table_rows(stdout: str) -> dict[str, dict[str, str]]:
    """The printed markdown table as {family: {column: cell}}."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]
    return {r["family"]: r for r in rows}


def test_the_dry_run_trains_every_family_on_the_cpu_and_prints_the_table():
    out = run("--dry-run")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    text = out.stdout
    assert "job with resources.gpu: 0.25, 4 concurrent trials: validates" in text
    assert "nvidia-smi parser self-test: 4 trials packed on 1 GPU: OK" in text
    assert "table self-test: a diverged run is refused: OK" in text
    assert "variational_mnist: amp refused by the family" in text  # supports_amp False
    assert "vae on the GPU (float32 and amp) SKIPPED: dry run" in text  # supports_amp True
    rows = table_rows(text)
    assert set(rows) == {"cnn_classifier", "vae", "variational_mnist"}
    for family, row in rows.items():
        assert row["device"] == "cpu" and row["GPU"] == "skipped (dry run)"
        assert float(row["samples/s"].replace(",", "")) > 0, (family, row)
    assert text.rstrip().endswith("gpu_check: OK (dry run: GPU parts skipped)")


def test_bad_arguments_fail_with_one_line_and_status_2():
    out = run("--root", "/no/such/folder")
    assert out.returncode == 2
    assert out.stderr.strip() == ("gpu_check: error: --root '/no/such/folder' is not a folder; give the folder "
                                  "holding FashionMNIST/raw, MNIST/raw, cifar10")
    assert run("--frobnicate").returncode == 2
