"""The numbers behind the figures agree with metrics.csv, the ledger and the store."""

from __future__ import annotations

import csv
import json
from collections import defaultdict

import numpy as np

from curriculum.ledger import check_ledger, summarize_ledger
from curriculum.report import build_report
from curriculum.store import StoreReader
from train.fit import read_probe_losses


def _csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_counts_equal_ledger_summary_and_probe_losses_equal_metrics(report_runs, tmp_path) -> None:
    runs = [report_runs.attributed, report_runs.policy_only]
    result = build_report(runs, labels=report_runs.labels, out=tmp_path / "report")
    record = json.loads((result.out_dir / "report.json").read_text())
    mix = _csv(result.out_dir / "stream_mix.csv")
    for run_dir, run_record in zip(runs, record["runs"], strict=True):
        summary = summarize_ledger(run_dir, behavior_of_row=report_runs.labels)
        expected = {(r.stage, r.behavior): (r.emitted, r.deferred, r.released, r.dropped, r.skipped)
                    for r in summary.rows}
        got = {(c["stage"], c["behavior"]): (c["emit"], c["defer"], c["release"], c["drop"],
                                             c["skip"]) for c in run_record["counts"]}
        assert got == expected and sum(v[0] for v in got.values()) > 0
        # The mix figure's emitted lines add up to the same totals per behavior.
        emitted = defaultdict(int)
        for line in mix:
            if line["run"] == run_dir.name and line["series"].startswith("emitted: "):
                emitted[line["series"][len("emitted: "):]] += int(line["documents"])
        totals = defaultdict(int)
        for row in summary.rows:
            totals[row.behavior] += row.emitted
        assert dict(emitted) == {b: n for b, n in totals.items() if n}
        assert run_record["ledger_check"]["summary"] == check_ledger(run_dir).summary_line()
        # The spool ends at what was deferred and not released.
        spool = [line for line in _csv(result.out_dir / "spool.csv") if line["run"] == run_dir.name]
        deferred = sum(r.deferred for r in summary.rows) - sum(r.released for r in summary.rows)
        assert int(spool[-1]["documents_waiting"]) == deferred

    drawn = defaultdict(list)
    for line in _csv(result.out_dir / "probe_loss.csv"):
        drawn[(line["run"], line["behavior"])].append((int(line["step"]), float(line["probe_loss"])))
    for run_dir in runs:
        for behavior, points in read_probe_losses(run_dir).items():
            assert drawn[(run_dir.name, behavior)] == sorted(points, key=lambda p: p[0])


def test_without_labels_rows_count_under_their_highest_affinity(report_runs, tmp_path) -> None:
    result = build_report([report_runs.attributed], out=tmp_path / "report")
    reader = StoreReader(report_runs.attributed_store)
    highest = np.argmax(reader.affinity(np.arange(reader.num_rows)), axis=1)
    summary = summarize_ledger(report_runs.attributed,
                               behavior_of_row=lambda row: reader.behaviors[highest[row]])
    record = json.loads((result.out_dir / "report.json").read_text())["runs"][0]
    assert "highest affinity" in record["behavior_source"]
    assert record["emitted_by_behavior"] == {
        b: sum(r.emitted for r in summary.rows if r.behavior == b)
        for b in record["emitted_by_behavior"]}
    assert "highest affinity" in result.index.read_text()


def test_top_documents_are_the_largest_measured_sums(report_runs, tmp_path) -> None:
    result = build_report([report_runs.attributed], labels=report_runs.labels, out=tmp_path / "r")
    table = result.runs[0].store.path
    reader = StoreReader(table)
    total, count, _ = reader.tables.attribution.read(np.arange(reader.num_rows))
    lines = _csv(result.out_dir / "top_documents.csv")
    assert lines
    for column, behavior in enumerate(reader.behaviors):
        sums = np.where(count[:, column] > 0, total[:, column], np.nan)
        toward = [line for line in lines if line["behavior"] == behavior
                  and line["direction"] == "toward"]
        positive = np.flatnonzero(sums > 0)
        expected = positive[np.argsort(-sums[positive], kind="stable")][:8]
        assert [int(line["row"]) for line in toward] == expected.tolist()
        for line in toward:
            row = int(line["row"])
            assert np.isclose(float(line["score_sum"]), total[row, column])
            assert int(line["measurements"]) == count[row, column]
            assert line["key"] and line["text"] and line["shard"].endswith(".tar")
    keys = {line["key"]: line["text"] for line in lines}
    labels = {r["key"]: r for r in _csv(report_runs.labels)}
    assert set(keys) <= set(labels)  # keys read back from the shards are the corpus's keys


def test_loss_weight_shares_add_up_to_the_ledger(report_runs, tmp_path) -> None:
    result = build_report([report_runs.attributed], labels=report_runs.labels, out=tmp_path / "r")
    summary = summarize_ledger(report_runs.attributed, behavior_of_row=report_runs.labels)
    per_stage = defaultdict(int)
    weight_sum = defaultdict(float)
    for line in _csv(result.out_dir / "loss_weights.csv"):
        per_stage[line["stage"]] += int(line["emitted"])
        weight_sum[line["stage"]] += float(line["loss_weight"]) * int(line["emitted"])
    expected = defaultdict(int)
    expected_weight = defaultdict(float)
    for row in summary.rows:
        expected[row.stage] += row.emitted
        expected_weight[row.stage] += row.emitted_weight
    assert dict(per_stage) == {s: n for s, n in expected.items() if n}
    for stage, total in weight_sum.items():
        assert np.isclose(total, expected_weight[stage], rtol=1e-5)
    assert any(float(line["loss_weight"]) > 1 for line in _csv(result.out_dir / "loss_weights.csv")
               if int(line["emitted"]))  # the policy upweighted some values documents
