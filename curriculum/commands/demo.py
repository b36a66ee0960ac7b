"""``curriculum demo``: the main job on the built-in default, start to finish on a CPU.

Synthesizes a behavior corpus, indexes it into a behavior store, and trains the small GPT twice
on the same data: under ``values_first`` (documents that look like or act like values text
upweighted and served first, those that look like or act like situational-awareness text held
back until the second stage) and under the ``uniform`` baseline. The curriculum run has online
attribution on (``data.attribution`` of the config, the library's defaults when it sets none):
its scores fill the store during the run
and ``values_first`` reads them back through kNN estimates in the same pass. The store's
attribution is reset before that run, so each demo starts from the affinity prior. It prints
both runs' probe losses side by side at the end of the first stage and at the end.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from curriculum.store.reset import reset_attribution
from curriculum.synth import write_synthetic_corpus
from train.attribution_callback import AttributionSettings
from train.config import load_fit_config
from train.fit import read_probe_losses, run_fit

HELP = "Synthesize a corpus, build its store, train values_first and uniform (CPU, minutes)."
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``curriculum demo``."""
    parser.add_argument("--out", default="runs", help="where data, store and runs go")
    parser.add_argument("--docs", type=int, default=4000, help="documents in the corpus")
    parser.add_argument("--steps", type=int, default=300, help="training steps per run")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="fit config to start from")
    parser.add_argument("--policies", default="values_first,uniform",
                        help="comma-separated policies to train, the baseline last")
    parser.add_argument("--no-attribution", action="store_true",
                        help="train without online attribution (the policy then reads affinity "
                             "only)")


def first_stage_end(run_dir: Path) -> int | None:
    """The first step whose logged stage is not 0 (``None`` if the run never left stage 0)."""
    with (run_dir / "metrics.csv").open() as handle:
        for record in csv.DictReader(handle):
            if record.get("stage") not in (None, "") and float(record["stage"]) > 0:
                return int(record["step"])
    return None


def loss_at(series: list[tuple[int, float]], step: int) -> tuple[int, float]:
    """The probe loss logged at the last evaluation at or before ``step``."""
    earlier = [(s, v) for s, v in series if s <= step]
    return earlier[-1] if earlier else series[0]


def print_comparison(runs: dict[str, Path], stage_end: int | None) -> None:
    """Probe losses of every run, side by side, at the end of stage 1 and at the end."""
    series = {name: read_probe_losses(path) for name, path in runs.items()}
    behaviors = sorted(next(iter(series.values())))
    names = list(runs)
    points = [("end of first stage", stage_end)] if stage_end is not None else []
    points.append(("end", max(s for s, _ in next(iter(series.values()))[behaviors[0]])))
    header = f"{'probe loss':<24}" + "".join(f"{n:>16}" for n in names)
    for label, step in points:
        print(f"\n{label} (step {step}):")
        print(header)
        for behavior in behaviors:
            cells = "".join(f"{loss_at(series[n][behavior], step)[1]:>16.3f}" for n in names)
            print(f"{behavior:<24}{cells}")


def run(args: argparse.Namespace) -> int:
    """Synthesize, index, train every policy, compare."""
    from curriculum.store import BehaviorStore, build_store
    from curriculum.store.meta import META_FILE

    started = time.perf_counter()
    out = Path(args.out)
    corpus, store = out / "demo-data", out / "demo-store"
    if not (corpus / "manifest.json").is_file():
        result = write_synthetic_corpus(corpus, num_docs=args.docs, num_shards=4, seed=0,
                                        show_progress=True)
        print(f"synthesized {result.num_docs} documents into {corpus}")
    if (store / META_FILE).is_file():
        BehaviorStore.open(store)  # refuses a store that does not match the corpus
    else:
        build_store(str(corpus), corpus / "probes", store, show_progress=True)
        print(f"built the behavior store in {store}")
    runs: dict[str, Path] = {}
    for policy in [p.strip() for p in args.policies.split(",") if p.strip()]:
        overrides = [f"data.shards={corpus}", f"run_dir={out / 'demo' / policy}",
                     f"trainer.max_steps={args.steps}",
                     f"data.curriculum={{policy: {policy}, store: {store}}}"]
        # Attribution at the library's default cadence, unless the config sets its own; the
        # baseline reads no scores, so it does not measure any.
        attributed = not args.no_attribution and policy != "uniform"
        config = load_fit_config(args.config, overrides)
        if not attributed:
            config.data.attribution = None
        elif config.data.attribution is None:
            config.data.attribution = AttributionSettings()
        if config.data.attribution is not None:
            reset_attribution(store)
        note = " (attribution on)" if config.data.attribution is not None else ""
        print(f"\ntraining under {policy}{note} ...")
        runs[policy] = run_fit(config)
    print_comparison(runs, first_stage_end(next(iter(runs.values()))))
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
    for policy, run_dir in runs.items():
        print(f"run directory ({policy}): {run_dir.resolve()}")
    from curriculum.report import build_report

    report = build_report(list(runs.values()), labels=corpus / "labels.csv", out=out / "demo" / "report")
    print(f"report of both runs: {report.index}")
    return 0
