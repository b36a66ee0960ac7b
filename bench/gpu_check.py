"""GPU check for a short lease (under 5 minutes on one GPU): the code paths that only a GPU runs.

    python bench/gpu_check.py                  # on a CUDA machine; prints a table, writes JSON
    python bench/gpu_check.py --dry-run        # the same code paths at toy sizes, on CPU
    python bench/gpu_check.py --only train,faiss --out results.json

Three sections, each timed and reported on its own (one failing does not hide the others):

1. **train**: bf16 (autocast) training steps of a GPT-2-small-size model (``train.model.GPT``,
   12 layers, 12 heads, width 768, 1024 tokens, 50,304-token vocabulary, tied head: 124M
   parameters) without attribution and with attribution every step, exact and sketched: step
   times and the ratios to the plain step, plus the Spearman correlation of sketched to exact
   scores on one batch.
2. **faiss**: an IVF-PQ index of 10M clustered unit vectors (dim 256, the store's default) on
   the GPU through the store's own index functions and :class:`curriculum.store.KnnEstimator`:
   training and adding rates, recall@10 against exact GPU search and queries/s over an nprobe
   sweep, and kNN estimates per second at the chosen nprobe.
3. **ddp**: the DDP code path on one device: ``train.fit.run_fit`` with ``strategy=ddp``, one
   process (an nccl group on GPU, gloo on CPU), bf16-mixed, attribution every step into a real
   store; checks that the run ends and the store holds measured rows.

Without a CUDA GPU (and without ``--dry-run``) it says so in one line and exits 0.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Idle OpenMP threads sleep instead of spinning (set before torch and FAISS load OpenMP).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curriculum.attribution import (  # noqa: E402
    AttributionConfig,
    InRunAttributor,
    UncoveredParametersWarning,
    per_example_token_loss,
    spearman_correlation,
)
from curriculum.attribution.grad_features import byte_document_batch  # noqa: E402
from curriculum.synth import generate_documents, generate_text  # noqa: E402
from train.model import GPT, GPTConfig  # noqa: E402

SECTIONS = ("train", "faiss", "ddp")
BEHAVIORS = ("values", "situational_awareness", "neutral", "deception")


@dataclass(frozen=True)
class Sizes:
    """How big each section runs."""

    n_layer: int
    n_head: int
    n_embd: int
    seq_len_tokens: int
    vocab_size: int
    batch_size: int
    warmup_steps: int
    timed_steps: int
    probe_docs: int
    vectors: int
    dim: int
    index_factory: str
    queries: int


FULL = Sizes(n_layer=12, n_head=12, n_embd=768, seq_len_tokens=1024, vocab_size=50_304,
             batch_size=8, warmup_steps=3, timed_steps=10, probe_docs=8, vectors=10_000_000,
             dim=256, index_factory="IVF8192,PQ32", queries=10_000)
DRY = Sizes(n_layer=1, n_head=2, n_embd=32, seq_len_tokens=64, vocab_size=257, batch_size=2,
            warmup_steps=1, timed_steps=2, probe_docs=2, vectors=5_000, dim=32,
            index_factory="IVF16,PQ4x4", queries=100)
NPROBES = (8, 16, 32, 64, 128, 256, 512)
"""Lists probed in the recall sweep (GPU IVF searches allow at most 2048)."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- 1. training with and without attribution ---------------------------------------------------
def _batches(sizes: Sizes, count: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    docs = [d.text * 8 for d in generate_documents(sizes.batch_size * count, seed=seed)]
    return [byte_document_batch(docs[i:i + sizes.batch_size], sizes.seq_len_tokens)
            for i in range(0, len(docs), sizes.batch_size)]


def _probes(sizes: Sizes) -> dict[str, dict[str, torch.Tensor]]:
    import random

    rng = random.Random(1)
    return {b: byte_document_batch([generate_text(b, rng) * 8 for _ in range(sizes.probe_docs)],
                                   sizes.seq_len_tokens) for b in BEHAVIORS}


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class Variant:
    """A model copy, its AdamW and (unless plain) its attributor; steps in bf16 autocast."""

    def __init__(self, model: GPT, mode: str, probes: dict, device: torch.device) -> None:
        self.model = copy.deepcopy(model).to(device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=device.type
                                           == "cuda")
        self.device = device
        self.attributor = None
        self.refresh_s = 0.0
        if mode != "plain":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UncoveredParametersWarning)
                self.attributor = InRunAttributor(self.model, AttributionConfig(mode=mode),
                                                  optimizer=self.optimizer)
            started = time.perf_counter()
            with self._autocast():
                self.attributor.refresh_probe_gradients({k: _to(v, device)
                                                         for k, v in probes.items()})
            _sync(device)
            self.refresh_s = time.perf_counter() - started

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[float, torch.Tensor | None]:
        """One optimizer step; (seconds, scores or None)."""
        _sync(self.device)
        started = time.perf_counter()
        scores = None
        with self._autocast():
            if self.attributor is None:
                per_example_token_loss(self.model, batch).sum().backward()
            else:
                _, scores = self.attributor.loss_and_scores(batch, lr=1e-4)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        _sync(self.device)
        return time.perf_counter() - started, scores


def check_training(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    """Step times of plain, exact and sketched training; ratios; sketched-vs-exact Spearman."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=sizes.vocab_size, block_size=sizes.seq_len_tokens,
                       n_layer=sizes.n_layer, n_head=sizes.n_head, n_embd=sizes.n_embd,
                       tie_weights=True)
    model = GPT(config)
    batches = [_to(b, device) for b in _batches(sizes, sizes.warmup_steps + sizes.timed_steps)]
    probes = _probes(sizes)
    result: dict[str, Any] = {"parameters": model.num_parameters(), "tokens_per_step":
                              sizes.batch_size * sizes.seq_len_tokens}
    times: dict[str, float] = {}
    final_scores: dict[str, torch.Tensor] = {}
    for mode in ("plain", "exact", "sketched"):
        variant = Variant(model, mode, probes, device)
        seconds = []
        for index, batch in enumerate(batches):
            elapsed, scores = variant.step(batch)
            if index >= sizes.warmup_steps:
                seconds.append(elapsed)
            if scores is not None:
                if not torch.isfinite(scores).all():
                    raise FloatingPointError(f"{mode} attribution gave non-finite scores")
                final_scores[mode] = scores.float().cpu()
        times[mode] = float(np.median(seconds))
        result[f"{mode}_probe_refresh_s"] = variant.refresh_s
        del variant
        if device.type == "cuda":
            result[f"{mode}_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
    for mode, seconds in times.items():
        result[f"{mode}_ms_per_step"] = 1000 * seconds
    result["ratio_exact"] = times["exact"] / times["plain"]
    result["ratio_sketched"] = times["sketched"] / times["plain"]
    # Same weights and data for both only at the first step; later steps differ in bf16 noise,
    # so this is a sanity check of the sketch (same ordering), not its quality benchmark.
    if sizes.batch_size >= 2:
        result["spearman_sketched_vs_exact_last_step"] = float(np.mean([
            spearman_correlation(final_scores["sketched"][:, k], final_scores["exact"][:, k])
            for k in range(final_scores["exact"].shape[1])]))
    return result


# -- 2. FAISS at 10M vectors -------------------------------------------------------------------
def clustered_vectors(count: int, dim: int, device: torch.device, clusters: int = 4096,
                      seed: int = 0, chunk: int = 1_000_000) -> np.ndarray:
    """Unit vectors around random centres (embeddings cluster; uniform noise is IVF's worst
    case and says little about real stores), generated on ``device`` chunk by chunk."""
    generator = torch.Generator(device=device).manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=generator, device=device)
    out = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, chunk):
        stop = min(start + chunk, count)
        pick = torch.randint(0, clusters, (stop - start,), generator=generator, device=device)
        block = centres[pick] + 0.6 * torch.randn(stop - start, dim, generator=generator,
                                                  device=device)
        out[start:stop] = torch.nn.functional.normalize(block, dim=1).cpu().numpy()
    return out


def _exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    from curriculum.store.index import faiss_module, gpus_available

    faiss = faiss_module()
    if gpus_available():
        resources = faiss.StandardGpuResources()
        _, rows = faiss.knn_gpu(resources, queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
        return rows
    _, rows = faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    return rows


def check_faiss(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    """Build an IVF-PQ estimator of ``sizes.vectors`` rows, tune nprobe to recall@10 >= 0.9,
    and time kNN estimates."""
    from curriculum.store import KnnEstimator
    from curriculum.store.estimate import recall_at_k
    from curriculum.store.index import gpus_available, nlist_of, to_cpu, train_index

    on_gpu = gpus_available()
    if device.type == "cuda" and not on_gpu:
        raise RuntimeError("this FAISS build has no GPU support: pip install faiss-gpu-cu12")
    started = time.perf_counter()
    vectors = clustered_vectors(sizes.vectors, sizes.dim, device)
    result: dict[str, Any] = {"faiss_on_gpu": on_gpu, "vectors": sizes.vectors,
                              "dim": sizes.dim, "factory": sizes.index_factory,
                              "generate_s": time.perf_counter() - started}
    measured = sizes.vectors  # every row measured: the estimator's largest index
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    # As the store's build does: trained on the search device (40 vectors per list), kept on
    # the CPU as the estimator's template, moved to the GPU when rows are added.
    template = to_cpu(train_index(sizes.index_factory, sizes.dim, measured,
                                  lambda start, stop: vectors[start:stop]))
    estimator = KnnEstimator.from_template(template, sizes.index_factory)
    result["train_s"] = time.perf_counter() - started
    started = time.perf_counter()
    for start in range(0, measured, 1_000_000):
        stop = min(start + 1_000_000, measured)
        estimator.add(np.arange(start, stop), vectors[start:stop])
    result["add_s"] = time.perf_counter() - started
    result["add_vectors_per_s"] = measured / result["add_s"]
    queries = clustered_vectors(sizes.queries, sizes.dim, device, seed=1)
    started = time.perf_counter()
    exact = _exact_neighbours(vectors[:measured], queries, 10)
    result["exact_search_s"] = time.perf_counter() - started
    sweep = {}
    for nprobe in (p for p in NPROBES if p <= (nlist_of(sizes.index_factory) or 1)):
        estimator.nprobe = nprobe
        started = time.perf_counter()
        _, found = estimator.search(queries, 10)
        sweep[nprobe] = {"recall_at_10": recall_at_k(found, exact),
                         "queries_per_s": sizes.queries / (time.perf_counter() - started)}
    result["recall_sweep"] = sweep
    # The smallest nprobe at recall >= 0.9, else the best one (PQ codes cap the recall).
    good = [p for p, r in sweep.items() if r["recall_at_10"] >= 0.9]
    estimator.nprobe = min(good) if good else max(sweep, key=lambda p: sweep[p]["recall_at_10"])
    result["nprobe"] = estimator.nprobe
    result["recall_at_10"] = sweep[estimator.nprobe]["recall_at_10"]
    means = rng.standard_normal((measured, len(BEHAVIORS))).astype(np.float32)

    def lookup(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return means[rows], np.ones((len(rows), len(BEHAVIORS)), dtype=bool)

    started = time.perf_counter()
    estimates = estimator.estimate(queries, 10, lookup, np.zeros(len(BEHAVIORS), np.float32))
    seconds = time.perf_counter() - started
    if not np.isfinite(estimates).all():
        raise FloatingPointError("kNN estimates are not finite")
    result["estimates_per_s"] = sizes.queries / seconds
    return result


# -- 3. the DDP code path on one device --------------------------------------------------------
def check_ddp(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    """``run_fit`` under ``strategy=ddp`` with one process and attribution every step."""
    from curriculum.store import StoreReader, build_store
    from curriculum.synth import write_synthetic_corpus
    from train.config import load_fit_config
    from train.fit import run_fit

    steps = 6
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        write_synthetic_corpus(corpus, num_docs=400, num_shards=2, seed=3,
                               probe_docs_per_behavior=8)
        store = Path(tmp) / "store"
        build_store(corpus, corpus / "probes", store).close()
        accelerator = "gpu" if device.type == "cuda" else "cpu"
        config = load_fit_config(str(REPO / "configs" / "demo.yaml"), [
            f"data.shards={corpus}", f"run_dir={Path(tmp) / 'run'}", f"trainer.max_steps={steps}",
            f"trainer.accelerator={accelerator}", "trainer.devices=1", "trainer.strategy=ddp",
            "trainer.precision=bf16-mixed", "trainer.checkpoint_every_n_steps=0",
            "trainer.probe_every_n_steps=1000", "data.num_workers=1", "data.probe_docs=4",
            f"model.gpt.n_layer={sizes.n_layer}", f"model.gpt.n_head={sizes.n_head}",
            f"model.gpt.n_embd={sizes.n_embd}", "data.stream.seq_len=64",
            "data.stream.batch_size=4",
            f"data.attribution={{store: {store}, every_n_steps: 1, probe_refresh_steps: 2, "
            "estimate_every_n_steps: 0}"])
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_fit(config)
        seconds = time.perf_counter() - started
        backend = _process_group_backend()
        reader = StoreReader(store).open()
        measured = int(np.asarray(reader.is_measured(np.arange(reader.num_rows))).any(axis=1).sum())
    if measured == 0:
        raise RuntimeError("the DDP run wrote no attribution to the store")
    return {"steps": steps, "fit_s": seconds, "backend": backend, "measured_rows": measured}


def _process_group_backend() -> str:
    import torch.distributed as dist

    if not dist.is_initialized():
        return "none (destroyed after fit)"
    backend = str(dist.get_backend())
    dist.destroy_process_group()
    return backend


# -- driver ------------------------------------------------------------------------------------
CHECKS: dict[str, Callable[[Sizes, torch.device], dict[str, Any]]] = {
    "train": check_training, "faiss": check_faiss, "ddp": check_ddp}


def run_checks(sections: list[str], sizes: Sizes, device: torch.device) -> dict[str, Any]:
    """Run each section; a failure is recorded as its one-line error and the rest still run."""
    results: dict[str, Any] = {"device": str(device), "sizes": asdict(sizes)}
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(device)
    for name in sections:
        started = time.perf_counter()
        try:
            results[name] = {"ok": True, **CHECKS[name](sizes, device)}
        except Exception as error:  # report and go on: one lease should give every figure
            traceback.print_exc()
            results[name] = {"ok": False, "error": f"{type(error).__name__}: {error}"[:500]}
        results[name]["section_s"] = time.perf_counter() - started
        print(f"[{name}] {json.dumps(results[name], default=float)}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the sections, print and save the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="toy sizes on CPU (what the test suite runs)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections of {', '.join(SECTIONS)}")
    parser.add_argument("--out", default=None,
                        help="JSON file for the results (default: $OUT/gpu_check.json when $OUT "
                             "is set)")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in sections if s not in CHECKS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible; nothing measured (use --dry-run for the CPU path)")
        return 0
    device = torch.device("cpu") if args.dry_run else torch.device("cuda", 0)
    started = time.perf_counter()
    results = run_checks(sections, DRY if args.dry_run else FULL, device)
    results["total_s"] = time.perf_counter() - started
    out = args.out or (os.path.join(os.environ["OUT"], "gpu_check.json")
                       if os.environ.get("OUT") else None)
    if out:
        Path(out).write_text(json.dumps(results, indent=1, default=float))
    print(f"gpu_check: {results['total_s']:.0f} s; sections ok: "
          f"{', '.join(s for s in sections if results[s]['ok']) or 'none'}")
    return 0 if all(results[s]["ok"] for s in sections) else 1


if __name__ == "__main__":
    sys.exit(main())
