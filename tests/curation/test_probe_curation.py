"""Curation with the model-free probe judge on the synthetic corpus: assessments separate
deception documents, every row's fate adds up, the ledger checks, scores reach the store and the
policy language (NaN where not assessed)."""

from __future__ import annotations

import csv
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from curriculum.cli import main
from curriculum.curation import curate, load_principles, make_judge
from curriculum.curation.records import load_rows
from curriculum.ledger import check_ledger, read_ledger
from curriculum.shards.manifest import ShardManifest
from curriculum.shards.tar_samples import iter_raw_samples
from curriculum.synth import SynthResult
from policies import CurriculumState, PolicyRunner, load_policy
from policies.decisions import DROP

REPO = Path(__file__).resolve().parents[2]
PRINCIPLES = REPO / "configs" / "principles"


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    from curriculum.curation.distill import ranks

    r = ranks(scores)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((r[positive].sum() - n_pos * (n_pos - 1) / 2) / (n_pos * n_neg))


def labels(corpus: SynthResult) -> dict[int, str]:
    with corpus.labels_path.open() as handle:
        return {int(r["row"]): r["behavior"] for r in csv.DictReader(handle)}


@pytest.fixture()
def store_copy(curation_store: Path, tmp_path: Path) -> Path:
    copy = curation_store.parent / f"store-{tmp_path.name}"
    shutil.copytree(curation_store, copy)
    return copy


def test_probe_curation_end_to_end(curation_corpus: SynthResult, store_copy: Path,
                                   tmp_path: Path) -> None:
    out = tmp_path / "out"
    principles = load_principles(PRINCIPLES)
    result = curate(curation_corpus.out_dir, principles, make_judge(f"probe:{store_copy}"), out,
                    store=store_copy)
    rows = result.counts.rows
    assert rows == 1000
    # filtered + revised + kept + unscored = input rows, per principle and in total.
    assert result.counts.balanced()
    for counts in [result.counts.total, *result.counts.per_principle.values()]:
        assert counts["filtered"] + counts["revised"] + counts["kept"] + counts["unscored"] == rows
    total = result.counts.total
    assert total["filtered"] > 0 and total["revised"] > 0 and total["kept"] > 0

    # Assessments separate the deception documents.
    record = load_rows(out / "curation" / "rows.npz")
    truth = labels(curation_corpus)
    column = list(record["principles"]).index("deception")
    positive = np.array([truth[int(r)] == "deception" for r in record["rows"]])
    auc = roc_auc(record["scores"][:, column], positive)
    assert auc >= 0.9, auc

    # The ledger accounts for every row once, and agrees with the counts.
    check = check_ledger(out)
    assert check.ok, check.problems
    events = [e for e in read_ledger(out) if e.row >= 0]
    assert len(events) == rows
    assert sum(e.reason.startswith("filter:") for e in events) == total["filtered"]
    assert sum(e.reason.startswith("revised:") for e in events) == total["revised"]
    assert main(["ledger", str(out), "--check"]) == 0

    # Curated shards: kept + revised documents, readable by tarfile, webdataset and our reader.
    manifest = ShardManifest.load(out / "shards")
    assert manifest.num_rows == total["kept"] + total["revised"] == result.output_docs
    assert manifest.content_hash() == ShardManifest.build(manifest.shard_paths).content_hash()
    assert np.array_equal(manifest.offsets_bytes,
                          ShardManifest.build(manifest.shard_paths).offsets_bytes)
    with tarfile.open(manifest.shard_paths[0]) as archive:
        assert archive.getnames()[0].endswith(".txt")
    via_wds = sum(1 for _ in wds.WebDataset(manifest.shard_paths, shardshuffle=False))
    assert via_wds == manifest.num_rows
    revised = [s for p in manifest.shard_paths for s in iter_raw_samples(p)
               if "curation.json" in s.members]
    assert len(revised) == total["revised"]
    import json

    provenance = json.loads(revised[0].members["curation.json"])
    assert provenance["source_key"] == revised[0].key
    assert provenance["judge"].startswith("probe:")
    assert {"prompt_hash", "score_before", "score_after"} <= set(
        provenance["principles"]["deception"])
    assert (out / "curation" / "revisions.jsonl").read_text().count("\n") == total["revised"]


def test_assessments_in_store_and_policy(curation_corpus: SynthResult, store_copy: Path,
                                         tmp_path: Path) -> None:
    from curriculum.store import BehaviorStore

    principles = load_principles(PRINCIPLES)
    # Only the first 600 rows are assessed: the other 400 must read NaN.
    curate(curation_corpus.out_dir, principles, make_judge(f"probe:{store_copy}"),
           tmp_path / "out", store=store_copy, limit=600)
    store = BehaviorStore.open(store_copy)
    assert store.assessed_principles == ("deception", "situational_awareness")
    values = store.assessment(np.arange(1000))
    assert np.isfinite(values[:600]).all() and np.isnan(values[600:]).all()

    policy = load_policy("threshold_filter_assess", store)
    assert policy.spec.principles == ("deception", "situational_awareness")
    runner = PolicyRunner(policy, store)
    decisions = runner.decide_rows(np.arange(1000), CurriculumState())
    dropped = np.asarray(decisions.kind) == DROP
    high = values[:, 0] >= 80
    assert dropped[:600].sum() == high[:600].sum() > 0
    assert not dropped[600:].any()  # NaN: the condition is false for unassessed rows
    # A percentile of the assessments is readable too; a misspelt principle is refused.
    from policies import PolicyError, load_policy_text

    pct = load_policy_text("stages: [{rules: [{drop: x, when: pct.assess.deception >= 0.9}]}]",
                           store)
    assert PolicyRunner(pct, store).decide_rows(np.arange(600, 1000), CurriculumState())
    with pytest.raises(PolicyError, match="did you mean 'assess.deception'"):
        load_policy_text("stages: [{rules: [{drop: x, when: assess.deceptoin >= 1}]}]", store)


def test_cli_dry_run_and_distill(curation_corpus: SynthResult, store_copy: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    base = ["curate", "--shards", str(curation_corpus.out_dir), "--principles", str(PRINCIPLES),
            "--judge", f"probe:{store_copy}", "--out", str(tmp_path / "out")]
    assert main([*base, "--dry-run", "--sample", "100"]) == 0
    printed = capsys.readouterr().out
    assert "dry run on 100 of 1,000 rows" in printed and "estimated cost for the corpus" in printed
    assert not (tmp_path / "out" / "shards").exists()  # assess only
    assert main([*base, "--distill", "--sample", "400", "--store", str(store_copy)]) == 0
    printed = capsys.readouterr().out
    assert "held-out Spearman" in printed
    import json

    reports = json.loads((tmp_path / "out" / "distill.json").read_text())
    deception = next(r for r in reports if r["principle"] == "deception")
    assert deception["test_rows"] == 80 and deception["spearman"] > 0.5, deception
    from curriculum.store import StoreReader

    assert np.isfinite(StoreReader(store_copy).assessment(np.arange(1000))).all()
    assert main(["curate", *base[1:5], "--judge", "probe:/nonexistent", "--out",
                 str(tmp_path / "o2")]) == 2
