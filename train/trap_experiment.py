"""Trap-corpus experiments: train under a policy, then measure what stage 1 let through.

Shared by ``bench/trap_curriculum.py``, ``bench/attribution_auc.py`` and the direction tests:
a corpus (optionally with traps) and its behavior store, one training run under a policy
(attribution on or off), and the measurements -- probe losses at the end of the first stage,
documents of each category emitted in stage 1 and their mean weight (from the ledger), and the
ROC AUC of each document's measured attribution for its own category.
"""

from __future__ import annotations

import csv
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from curriculum.ledger.records import Fate

#: Behaviors whose own-category attribution AUC is reported.
AUC_BEHAVIORS: tuple[str, ...] = ("values", "situational_awareness", "deception")


@dataclass
class RunSummary:
    """What one training run did in its first stage."""

    policy: str
    seed: int
    stage_end: int | None
    """First step logged in stage 2 (None: the run never left stage 1)."""
    probe_loss: dict[str, float]
    """Probe loss per behavior at the last evaluation at or before ``stage_end``."""
    emitted: dict[str, int]
    """Category -> documents emitted in stage 1."""
    mean_weight: dict[str, float]
    """Category -> mean loss weight of those documents."""
    seconds: float
    run_dir: Path
    extra: dict[str, float] = field(default_factory=dict)


def read_labels(corpus: Path) -> dict[int, str]:
    """``{row: category}`` from a corpus's ``labels.csv``."""
    with (Path(corpus) / "labels.csv").open() as handle:
        return {int(r["row"]): r["behavior"] for r in csv.DictReader(handle)}


def prepare_corpus(root: Path, num_docs: int, trap_share: float, seed: int = 0,
                   probe_docs: int = 64) -> tuple[Path, Path]:
    """Write (or reuse) a synthetic corpus with ``trap_share`` traps and its behavior store."""
    from curriculum.store import build_store
    from curriculum.store.meta import META_FILE
    from curriculum.synth import write_synthetic_corpus
    from curriculum.traps import TrapSpec

    corpus, store = Path(root) / "corpus", Path(root) / "store"
    if not (corpus / "manifest.json").is_file():
        traps = TrapSpec(trap_share) if trap_share else None
        write_synthetic_corpus(corpus, num_docs=num_docs, num_shards=4, seed=seed,
                               probe_docs_per_behavior=probe_docs, traps=traps)
    if not (store / META_FILE).is_file():
        build_store(str(corpus), corpus / "probes", store)
    return corpus, store


def fresh_store(store: Path, into: Path) -> Path:
    """A copy of ``store`` with empty attribution (each run writes its own measurements)."""
    from curriculum.store.reset import reset_attribution

    into = Path(into)
    if into.exists():
        shutil.rmtree(into)
    shutil.copytree(store, into)
    reset_attribution(into)
    return into


def stage_end(run_dir: Path) -> int | None:
    """The first step whose logged stage is not 0."""
    with (Path(run_dir) / "metrics.csv").open() as handle:
        for record in csv.DictReader(handle):
            if record.get("stage") not in (None, "") and float(record["stage"]) > 0:
                return int(record["step"])
    return None


def losses_at(run_dir: Path, step: int | None) -> dict[str, float]:
    """Probe loss per behavior at the last evaluation at or before ``step`` (None: the end)."""
    from train.fit import read_probe_losses

    out = {}
    for behavior, points in read_probe_losses(run_dir).items():
        earlier = [v for s, v in points if step is None or s <= step]
        out[behavior] = earlier[-1] if earlier else points[0][1]
    return out


def stage_one_emissions(run_dir: Path, labels: dict[int, str],
                        until_step: int | None) -> tuple[dict[str, int], dict[str, float]]:
    """Documents of each category emitted before ``until_step``, and their mean weight."""
    from curriculum.ledger import read_ledger

    counts: Counter[str] = Counter()
    weights: Counter[str] = Counter()
    for record in read_ledger(run_dir):
        if record.event != Fate.EMIT or (until_step is not None and record.step >= until_step):
            continue
        category = labels.get(int(record.row), "?")
        counts[category] += 1
        weights[category] += float(record.weight)
    return dict(counts), {c: weights[c] / counts[c] for c in counts}


def run_policy(corpus: Path, store: Path, run_dir: Path, policy: str, seed: int,
               steps: int, attribution: dict[str, object] | None = None,
               overrides: tuple[str, ...] = ()) -> RunSummary:
    """Train the demo model under ``policy`` (attribution settings as ``data.attribution``
    overrides, None: off) and summarize its first stage."""
    from train.config import load_fit_config
    from train.fit import run_fit

    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    items = [f"data.shards={corpus}", f"run_dir={run_dir}", f"trainer.max_steps={steps}",
             f"seed={seed}", f"data.curriculum={{policy: {policy}, store: {store}}}",
             "trainer.checkpoint_every_n_steps=0", *overrides]
    if attribution is not None:
        body = ", ".join(f"{k}: {v}" for k, v in {"store": store, **attribution}.items())
        items.append(f"data.attribution={{{body}}}")
    else:
        items.append("data.attribution=null")
    config = load_fit_config(str(demo), items)
    if Path(run_dir).exists():  # a ledger left by an earlier run would be appended to
        shutil.rmtree(run_dir)
    started = time.perf_counter()
    run_fit(config)
    seconds = time.perf_counter() - started
    end = stage_end(run_dir)
    labels = read_labels(corpus)
    emitted, weight = stage_one_emissions(run_dir, labels, end)
    return RunSummary(Path(policy).stem, seed, end, losses_at(run_dir, end), emitted, weight,
                      seconds, Path(run_dir))


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    scores = np.asarray(scores, np.float64)
    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def measured_effects(store: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], np.ndarray]:
    """(rows, effect (n, K), behaviors, counts) of the measured documents of ``store``:
    ``effect = -mean score`` (positive: the document lowers that probe loss)."""
    from curriculum.store import BehaviorStore

    with BehaviorStore.open(str(store)) as opened:
        rows = np.arange(opened.num_rows)
        measured = opened.is_measured(rows).all(axis=1)
        counts = opened.attribution_counts(rows[measured])
        values = -np.asarray(opened.attribution(rows[measured]), np.float64)
        return rows[measured], values, tuple(opened.behaviors), counts


def policy_effect(store: object, rows: np.ndarray) -> np.ndarray:
    """(n, K) ``effect`` of ``rows`` exactly as a policy reads it (the store's behavior scale
    included: :class:`policies.scores.StoreScores`)."""
    from policies.scores import StoreScores

    return StoreScores(store, ("pct.effect",)).batch(rows).effect


def own_category_auc(store: Path, labels: dict[int, str], shuffle_seed: int | None = None,
                     behaviors: tuple[str, ...] = AUC_BEHAVIORS) -> dict[str, float]:
    """ROC AUC of each behavior's ``effect`` (:func:`policy_effect`: what the policy reads) for
    picking out that behavior's documents among the measured pure-category ones.
    ``shuffle_seed`` permutes the scores first (a control that must land near 0.5)."""
    from curriculum.store import StoreReader

    rows, _, names, _ = measured_effects(store)
    relative = policy_effect(StoreReader(str(store)), rows)
    categories = np.array([labels[int(r)] for r in rows])
    pure = ~np.char.startswith(categories.astype(str), "trap_")
    if shuffle_seed is not None:
        relative = relative[np.random.default_rng(shuffle_seed).permutation(len(relative))]
    return {b: roc_auc(relative[pure, names.index(b)], categories[pure] == b)
            for b in behaviors if b in names}
