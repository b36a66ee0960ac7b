"""bench/gpu_check.py: without a GPU it says so and exits 0; its dry run walks every section's
code path (bf16 autocast training with exact and sketched attribution, the store's IVF-PQ
estimator with a recall sweep, run_fit under strategy=ddp in one gloo process) on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_says_so_in_one_line_and_exits_0() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0
    assert done.stdout.strip().splitlines() == [
        "gpu_check: no CUDA GPU visible; nothing measured (use --dry-run for the CPU path)"]


def test_dry_run_exercises_every_section(tmp_path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=SCRIPT.parents[1])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads(out.read_text())
    assert all(results[s]["ok"] for s in ("train", "faiss", "ddp"))
    train = results["train"]
    assert train["ratio_exact"] > 0 and train["ratio_sketched"] > 0
    assert train["exact_probe_refresh_s"] > 0
    faiss = results["faiss"]
    assert faiss["vectors"] == 5000 and 0 < faiss["recall_at_10"] <= 1
    assert faiss["estimates_per_s"] > 0 and faiss["recall_sweep"]
    assert results["ddp"]["backend"] == "gloo" and results["ddp"]["measured_rows"] > 0
