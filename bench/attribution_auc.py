"""Is the measured attribution of a document a signal worth consulting? Demo-size runs, concat.

Trains the demo model (configs/demo.yaml: 300 steps, ``concat`` packing, attribution every 4th
step) under ``uniform`` on the 15 % trap corpus, once per probe-refresh cadence (``--refresh``,
default 100 and 4 = every scored step), plus once without attribution for the cost baseline.
Attribution never changes training, so every run trains on the same batches and measures the
same documents. Prints, per cadence:

- wall-clock against the run without attribution;
- own-category ROC AUC of the measured relative effect (``effect.<b>`` of policies/evidence.py)
  for values, situational awareness and deception among the measured pure-category documents,
  and the same with shuffled scores (must be near 0.5);
- AUC of ``effect.situational_awareness`` for SA traps against values documents;
- Spearman correlation of the per-document effects against the freshest cadence.

Then the kNN estimates of the documents *not* measured, from the first cadence's measurements:
own-category and trap AUC of the estimated effect with neighbours found by content embeddings
(the hashed store), by affinity profiles, and by gradient embeddings (a ``grad:CKPT`` store
built from the step-50 checkpoint of the same run).

    python bench/attribution_auc.py
    python bench/attribution_auc.py --steps 120 --docs 2000      # smaller
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from train.trap_experiment import (  # noqa: E402
    AUC_BEHAVIORS,
    fresh_store,
    policy_effect,
    prepare_corpus,
    read_labels,
    roc_auc,
    run_policy,
)

SA = "situational_awareness"


def effects(store: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """(all rows' relative effect (N, K), measured (N,), behaviors)."""
    from curriculum.store import StoreReader

    reader = StoreReader(str(store))
    rows = np.arange(reader.num_rows)
    measured = reader.is_measured(rows).all(axis=1)
    return policy_effect(reader, rows), measured, rows, tuple(reader.behaviors)


def aucs(effect: np.ndarray, categories: np.ndarray, names: tuple[str, ...],
         mask: np.ndarray) -> dict[str, float]:
    """Own-category AUC per behavior among pure documents of ``mask``, and the SA trap AUC."""
    pure = mask & ~np.char.startswith(categories, "trap_")
    out = {b: roc_auc(effect[pure, names.index(b)], categories[pure] == b) for b in AUC_BEHAVIORS}
    pair = mask & np.isin(categories, ["trap_situational_awareness", "values"])
    out["trap_sa_vs_values"] = roc_auc(effect[pair, names.index(SA)],
                                       categories[pair] == "trap_situational_awareness")
    return out


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    rank_x, rank_y = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rank_x, rank_y)[0, 1])


def estimate_aucs(store: Path, categories: np.ndarray, measured: np.ndarray, space: str,
                  k: int) -> dict[str, float]:
    from curriculum.store import BehaviorStore

    opened = BehaviorStore.open(str(store))
    try:
        opened.refresh_estimates(k=k, space=space)
        rows = np.arange(opened.num_rows)
        effect = policy_effect(opened, rows)
        names = tuple(opened.behaviors)
    finally:
        opened.close()
    return aucs(effect, categories, names, ~measured)


def grad_store(corpus: Path, source: Path, checkpoint: Path, out: Path) -> Path:
    """A ``grad:CKPT`` store of the corpus holding ``source``'s measurements."""
    import train.grad_embedder  # noqa: F401 -- registers "grad"
    from curriculum.store import build_store
    from curriculum.store.attribution import COUNT_FILE, SUM_FILE

    if out.exists():
        shutil.rmtree(out)
    build_store(str(corpus), corpus / "probes", out, embedder=f"grad:{checkpoint}",
                show_progress=True).close()
    for name in (SUM_FILE, COUNT_FILE):
        shutil.copyfile(source / name, out / name)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/attribution-auc")
    parser.add_argument("--docs", type=int, default=4000)
    parser.add_argument("--trap-share", type=float, default=0.15)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--refresh", default="100,4", help="probe refresh cadences to compare")
    parser.add_argument("--neighbors", type=int, default=20)
    parser.add_argument("--no-grad-store", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)
    corpus, store = prepare_corpus(out, args.docs, args.trap_share)
    labels = read_labels(corpus)
    categories = np.array([labels[r] for r in range(len(labels))])
    report: dict[str, object] = {}
    plain = run_policy(corpus, store, out / "plain", "uniform", 0, args.steps, None)
    report["plain_seconds"] = plain.seconds
    print(f"no attribution: {plain.seconds:.0f} s")
    cadences = [int(c) for c in args.refresh.split(",")]
    per_cadence: dict[int, np.ndarray] = {}
    stores: dict[int, Path] = {}
    for index, cadence in enumerate(cadences):
        run_store = fresh_store(store, out / f"store-refresh-{cadence}")
        overrides = ("trainer.checkpoint_every_n_steps=50",) if index == 0 else ()
        summary = run_policy(corpus, run_store, out / f"refresh-{cadence}", "uniform", 0,
                             args.steps, {"every_n_steps": 4, "probe_refresh_steps": cadence},
                             overrides)
        effect, measured, _, names = effects(run_store)
        measured_auc = aucs(effect, categories, names, measured)
        shuffled = effect[np.random.default_rng(0).permutation(len(effect))]
        control = aucs(shuffled, categories, names, measured)
        per_cadence[cadence], stores[cadence] = effect, run_store
        report[f"refresh_{cadence}"] = {"seconds": summary.seconds,
                                        "ratio": summary.seconds / plain.seconds,
                                        "measured": int(measured.sum()), "auc": measured_auc,
                                        "shuffled_auc": control}
        print(f"refresh every {cadence} steps: {summary.seconds:.0f} s "
              f"({summary.seconds / plain.seconds:.2f}x), {int(measured.sum())} documents "
              f"measured; AUC {json.dumps({k: round(v, 3) for k, v in measured_auc.items()})}; "
              f"shuffled {json.dumps({k: round(v, 3) for k, v in control.items()})}", flush=True)
    freshest = min(cadences)
    _, measured, _, names = effects(stores[cadences[0]])
    for cadence in cadences:
        if cadence != freshest:
            rho = [spearman(per_cadence[cadence][measured, b], per_cadence[freshest][measured, b])
                   for b in range(len(names))]
            report[f"spearman_{cadence}_vs_{freshest}"] = dict(zip(names, rho, strict=True))
            print(f"Spearman of per-document effects, refresh {cadence} vs {freshest}: "
                  + ", ".join(f"{n} {r:.2f}" for n, r in zip(names, rho, strict=True)))
    source = stores[cadences[0]]
    estimates = {space: estimate_aucs(source, categories, measured, space, args.neighbors)
                 for space in ("embedding", "affinity")}
    if not args.no_grad_store:
        checkpoint = out / f"refresh-{cadences[0]}" / "checkpoints" / "step-000050.ckpt"
        grad = grad_store(corpus, source, checkpoint, out / "grad-store")
        estimates["gradient embedding"] = estimate_aucs(grad, categories, measured, "embedding",
                                                        args.neighbors)
    report["estimates"] = estimates
    print(f"\nkNN estimates of the {int((~measured).sum())} unmeasured documents "
          f"({args.neighbors} neighbours), AUC of the estimated effect:")
    for space, values in estimates.items():
        print(f"  {space:<20} " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()))
    (out / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
