"""Previews on a real synthetic corpus and behavior store: every built-in policy loads and runs,
and values-first holds situational-awareness documents back, then releases them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curriculum.cli import main
from curriculum.store import build_store
from curriculum.synth import write_synthetic_corpus
from policies import builtin_policy_names, load_policy
from policies.preview import plot_preview, preview_policy


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("preview")
    corpus = write_synthetic_corpus(out / "corpus", num_docs=800, num_shards=2, seed=0)
    store = build_store(str(corpus.out_dir), corpus.probes_dir, out / "store")
    return corpus, store, out / "store"


def test_every_builtin_policy_loads_and_previews(synthetic) -> None:
    corpus, store, _ = synthetic
    names = builtin_policy_names()
    assert {"values_first", "uniform", "threshold_filter", "bandit"} <= set(names)
    for name in names:
        policy = load_policy(name, store)
        result = preview_policy(policy, store, steps=40, docs_per_step=16,
                                labels=corpus.labels_path)
        assert result.steps == 40 and result.stages, name
        assert result.emitted_per_step.sum() > 0, name
        assert result.policy_name == name
        assert "stage 0" in result.format()


def test_uniform_emits_every_document_once_per_pass(synthetic) -> None:
    corpus, store, _ = synthetic
    result = preview_policy(load_policy("uniform", store), store, docs_per_step=32,
                            labels=corpus.labels_path)
    (stage,) = result.stages
    assert sum(c["emitted"] for c in stage.counts.values()) == store.num_rows == 800
    assert all(c["deferred"] == c["dropped"] == 0 for c in stage.counts.values())
    assert result.steps == 25 and result.passes == 1
    assert all(stage.mean_weight(g) == 1.0 for g in result.groups)


def test_threshold_filter_drops_and_tags_deception(synthetic) -> None:
    corpus, store, _ = synthetic
    result = preview_policy(load_policy("threshold_filter", store), store,
                            labels=corpus.labels_path)
    counts = result.stages[0].counts
    assert counts["deception"]["dropped"] > 0.5 * sum(c["dropped"] for c in counts.values())
    assert result.rule_counts["stages[0].rules[0] (drop: filter_deception)"] == \
        sum(c["dropped"] for c in counts.values())
    assert any("tag: revise_deception" in rule for rule in result.rule_counts)


def test_values_first_defers_situational_awareness_then_releases_it(synthetic) -> None:
    corpus, store, _ = synthetic
    policy = load_policy("values_first", store)
    result = preview_policy(policy, store, docs_per_step=32, labels=corpus.labels_path)
    first, second = result.stages
    num_sa = sum(1 for line in Path(corpus.labels_path).read_text().splitlines()
                 if line.endswith(",situational_awareness"))
    sa_first = first.counts["situational_awareness"]
    # most situational-awareness documents wait in the first stage ...
    assert sa_first["deferred"] > 0.5 * num_sa
    assert sa_first["emitted"] < 0.2 * num_sa
    # ... values documents are upweighted there ...
    assert first.mean_weight("values") > 1.5
    # ... and the held-back documents come back once the release stage begins
    assert second.start_step == first.end_step > 0
    assert second.counts["situational_awareness"]["released"] == sa_first["deferred"]
    assert second.first_release_step >= second.start_step
    assert result.pending_at_end == dict.fromkeys(result.groups, 0)
    assert result.pending_per_step[: first.end_step - 1, result.groups.index(
        "situational_awareness")].max() == sa_first["deferred"]


def test_plot_is_drawn(synthetic, tmp_path: Path) -> None:
    corpus, store, _ = synthetic
    result = preview_policy(load_policy("values_first", store), store, steps=300,
                            labels=corpus.labels_path)
    path = plot_preview(result, tmp_path / "preview.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_argmax_affinity_groups_without_labels(synthetic) -> None:
    _, store, _ = synthetic
    result = preview_policy(load_policy("uniform", store), store)
    assert set(result.groups) <= set(store.behaviors)
    assert "highest affinity" in result.group_source
    labels = np.argmax(store.affinity(np.arange(store.num_rows)), axis=1)
    expected = np.bincount(labels, minlength=len(store.behaviors))
    got = [result.stages[0].counts.get(b, {"emitted": 0})["emitted"] for b in store.behaviors]
    assert got == expected.tolist()


def test_command_line(synthetic, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                      monkeypatch: pytest.MonkeyPatch) -> None:
    corpus, _, store_dir = synthetic
    # Only this subcommand: the others import torch and Lightning, which this test does not need.
    monkeypatch.setattr("curriculum.cli.COMMANDS", ("preview",))
    plot = tmp_path / "p.png"
    code = main(["preview", "--policy", "threshold_filter", "--store", str(store_dir),
                 "--steps", "10", "--docs-per-step", "8", "--labels", str(corpus.labels_path),
                 "--plot", str(plot)])
    out = capsys.readouterr().out
    assert code == 0 and "stage 0 'filter'" in out and plot.exists()

    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - rules:\n      - upweight: 2\n        when: affinty.values > 1\n")
    code = main(["preview", "--policy", str(bad), "--store", str(store_dir)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("curriculum preview: error: ")
    assert "stages[0].rules[0].when: unknown score 'affinty.values'" in err
    assert err.endswith("(line 4)") and "\n" not in err


def test_token_exits_and_step_delays_in_a_preview(memory_store) -> None:
    from policies import load_policy_text

    policy = load_policy_text(
        "stages:\n"
        "  - until: {tokens: 10240}\n"  # 16 documents x 64 tokens per step: 10 steps
        "    rules: [{delay: {for_steps: 5}, when: affinity.values > 0.4 and step < 3}]\n"
        "  - rules: []\n", memory_store)
    result = preview_policy(policy, memory_store, steps=30, docs_per_step=16, tokens_per_doc=64)
    first, second = result.stages
    assert (first.end_step, first.exit_reason) == (10, "tokens >= 10240")
    deferred = sum(c["deferred"] for c in first.counts.values())
    released = sum(c["released"] for c in first.counts.values())
    assert deferred > 0 and released == deferred
    waits = sum(first.wait_steps_sum.values()) / released
    assert 5 <= waits <= 6  # due after 5 steps; picked up at the next step's fill at the latest
    assert second.start_step == 10
