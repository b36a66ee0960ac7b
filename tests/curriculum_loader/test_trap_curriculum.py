"""Attributed behavior drives the curriculum, on a corpus with trap documents (values stories
carrying situational-awareness sentences): measured attribution picks out each document's own
category, and the attribution-aware values_first lets fewer traps through in stage 1 and holds
situational-awareness text back more than the affinity-only rules.

"Holds back more" is counted here in documents carrying situational-awareness sentences that
reach training in stage 1, and in the loss weight put on them (the SA dose, upweighting
included): at this test's size (a 1-layer model, 60 steps) the probe losses of the two runs
differ by less than their noise (one run measured SA probe loss 2.523 with attribution and
2.536 without, the wrong way round, with 13 vs 31 SA-bearing documents emitted); the
probe-loss claim, over 3 seeds at a larger size, is ``bench/trap_curriculum.py``'s."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curriculum.store import StoreReader, build_store
from curriculum.synth import write_synthetic_corpus
from curriculum.traps import TrapSpec
from train.config import load_fit_config
from train.trap_experiment import (
    fresh_store,
    losses_at,
    own_category_auc,
    read_labels,
    stage_one_emissions,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TRAPS = ("trap_situational_awareness", "trap_deception")
STEPS = 60
ATTRIBUTION = "data.attribution={every_n_steps: 1, probe_refresh_steps: 5, estimate_every_n_steps: 2}"


@pytest.fixture(scope="module")
def trap_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("traps")
    corpus, store = root / "corpus", root / "store"
    write_synthetic_corpus(corpus, num_docs=800, num_shards=2, seed=5, probe_docs_per_behavior=16,
                           traps=TrapSpec(0.25))
    build_store(str(corpus), corpus / "probes", store)
    return corpus, store


def _fit(corpus: Path, store: Path, run_dir: Path, policy: str, *extra: str,
         steps: int = STEPS) -> Path:
    from train.fit import run_fit

    config = load_fit_config("configs/demo.yaml", [
        f"data.shards={corpus}", f"run_dir={run_dir}", f"trainer.max_steps={steps}",
        f"trainer.probe_every_n_steps={STEPS}", "trainer.checkpoint_every_n_steps=0",
        "data.num_workers=1", "data.probe_docs=16", "model.gpt.n_layer=1", "model.gpt.n_embd=64",
        "model.gpt.n_head=2", "data.stream.seq_len=128", "data.stream.batch_size=8",
        "optim.warmup_steps=5",
        f"data.curriculum={{policy: {policy}, store: {store}, score_refresh_docs: 16}}", *extra])
    return run_fit(config)


def test_measured_attribution_picks_out_each_documents_own_category(trap_corpus,
                                                                     tmp_path) -> None:
    corpus, store = trap_corpus
    scored = fresh_store(store, tmp_path / "store")
    _fit(corpus, scored, tmp_path / "run", "uniform", ATTRIBUTION)  # concat packing
    labels = read_labels(corpus)
    auc = own_category_auc(scored, labels)
    shuffled = own_category_auc(scored, labels, shuffle_seed=0)
    assert min(auc.values()) >= 0.75, auc
    assert max(shuffled.values()) < 0.65, shuffled


def test_attribution_aware_values_first_lets_fewer_traps_through(trap_corpus, tmp_path) -> None:
    corpus, store = trap_corpus
    labels = read_labels(corpus)
    runs = {
        "affinity": _fit(corpus, store, tmp_path / "affinity",
                         str(FIXTURES / "trap_affinity_values_first.yaml"), "data.attribution=null"),
        "attribution": _fit(corpus, fresh_store(store, tmp_path / "store"), tmp_path / "attr",
                            str(FIXTURES / "trap_attribution_values_first.yaml"), ATTRIBUTION),
    }
    traps, sa_bearing, sa_dose, sa_loss = {}, {}, {}, {}
    sa_categories = ("situational_awareness", "trap_situational_awareness")
    for name, run_dir in runs.items():
        emitted, weight = stage_one_emissions(run_dir, labels, STEPS)
        traps[name] = sum(emitted.get(c, 0) for c in TRAPS)
        sa_bearing[name] = sum(emitted.get(c, 0) for c in sa_categories)
        # The loss weight the stage put on documents carrying SA text (upweighting counts).
        sa_dose[name] = sum(emitted.get(c, 0) * weight.get(c, 0.0) for c in sa_categories)
        sa_loss[name] = losses_at(run_dir, STEPS)["situational_awareness"]
    assert traps["attribution"] < traps["affinity"], traps
    assert sa_bearing["attribution"] < sa_bearing["affinity"], sa_bearing
    assert sa_dose["attribution"] < 0.75 * sa_dose["affinity"], sa_dose
    assert np.isfinite(list(sa_loss.values())).all()
    # The attribution-aware run measured documents, so its decisions had evidence to read.
    assert StoreReader(str(tmp_path / "store")).is_measured(
        np.arange(len(labels))).any(axis=1).sum() > 50
