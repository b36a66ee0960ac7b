"""In-batch selection: what a selection step costs, and what it buys, at the demo's size.

Two parts (both by default):

``--part steps``: the time of one optimizer step of the reference GPT (4 layers x 128, a
candidate batch of 32 x 128 tokens = 2 x the demo's 16 x 128, K = 4 probe sets of 32 documents),
interleaved and repeated, median per method, as ratios to a plain step over the same 32 rows
measured in the same run:

- ``plain``: forward, backward, clipping, AdamW over all candidate rows (the baseline);
- ``select exact``: one forward and one activation-only backward over the candidates, each
  Linear call's per-row weight gradients formed once (one batched GEMM), the exact scores and,
  once the top half is chosen by ``-score.values + score.situational_awareness``, the chosen
  rows' gradient read from them (:mod:`train.per_example_gradients`);
- ``select exact, hooks`` / ``select sketched``: the same backward with the attributor's hooks
  scoring the rows (its exact forms, or rank-16 sketched), then the chosen rows' weight-gradient
  GEMMs (the path beyond the per-row memory budget, and the sketched mode's);
- ``masked second pass``: the same scoring pass, then a plain forward/backward over the chosen
  rows (the alternative design);
- ``probe refresh / 10``: the probe gradients' recomputation, amortized over the default
  ``probe_refresh_steps: 10`` of selection.

``--part train``: for 3 seeds, fits the demo (4,000 synthetic documents, 300 steps of 16 x 128)
under ``uniform``, ``values_first`` and ``values_first_select`` (candidate factor 2, the top half
kept), with probe losses every 10 steps. Reports, per arm and seed, the first evaluated step
(and the wall-clock) at which the values probe loss reaches uniform's end-of-run value (same
seed), and the situational-awareness probe loss at that step next to uniform's at the same step.
``--arms`` takes policy names or YAML paths (``bench/policies/uniform_select.yaml``: selection
alone, on the uniform stream); ``--set key=value`` changes the selection arms' fit config.

    python bench/selection.py --out runs/bench-selection            # both parts
    python bench/selection.py --part steps --repeats 15
    python bench/selection.py --part train --seeds 0,1,2 --steps 300
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

# The repository first: run as a script, bench/ leads sys.path, and its policies/ folder (YAML
# of other benches) would shadow the policies package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L  # noqa: E402
import torch  # noqa: E402

from curriculum.attribution import AttributionConfig, InRunAttributor  # noqa: E402
from policies.expressions import compile_expression  # noqa: E402
from policies.select_rule import SelectRule, step_score_checker  # noqa: E402
from train.model import GPT, GPTConfig  # noqa: E402
from train.module import weighted_token_loss  # noqa: E402
from train.selection import MAX_PER_EXAMPLE_BYTES, SelectionStep  # noqa: E402

BEHAVIORS = ("deception", "neutral", "situational_awareness", "values")
RULE_TEXT = "-score.values + score.situational_awareness"


# --- part 1: step time ----------------------------------------------------------------------------

def _tokens(rows: int, seq_len: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 256, (rows, seq_len + 1), generator=generator)
    return {"input_ids": ids[:, :-1].contiguous(), "labels": ids[:, 1:].contiguous(),
            "loss_weight": torch.ones(rows, seq_len)}


def _loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return weighted_token_loss(model(batch["input_ids"]), batch["labels"], batch["loss_weight"])


def _plain(model, optimizer, batch) -> None:  # noqa: ANN001
    optimizer.zero_grad(set_to_none=True)
    _loss(model, batch).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


def _select(model, optimizer, runner: SelectionStep, rule: SelectRule, batch, step) -> None:  # noqa: ANN001
    optimizer.zero_grad(set_to_none=True)
    runner.begin(batch)
    _loss(model, batch).backward()
    runner.finish(batch, rule, 3e-3, step, batch["input_ids"].shape[0])
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


def _second_pass(model, optimizer, runner: SelectionStep, rule: SelectRule, batch, step) -> None:  # noqa: ANN001
    optimizer.zero_grad(set_to_none=True)
    runner.begin(batch)  # the same scoring pass: activation-only backward with the hooks
    _loss(model, batch).backward()
    runner.subset.disarm()
    runner.subset.unfreeze()
    runner.subset.clear()
    scores = runner.attributor.finish(lr=3e-3).double().numpy()
    values = rule.values(scores, runner.attributor.behaviors)
    chosen = torch.as_tensor(rule.choose(values, rule.keep_count(len(values), len(values)), step))
    _loss(model, {k: v.index_select(0, chosen) for k, v in batch.items()}).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


def bench_steps(repeats: int, rows: int, seq_len: int) -> dict[str, float]:
    """Median seconds per step of each method (see the module docs)."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, block_size=seq_len, n_layer=4, n_head=4, n_embd=128))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95))
    batch = _tokens(rows, seq_len, generator)
    probes = {b: {k: v for k, v in _tokens(32, seq_len, generator).items() if k != "loss_weight"}
              for b in BEHAVIORS}
    for _ in range(3):  # Adam state exists, so scores are preconditioned as in training
        _plain(model, optimizer, batch)
    rule = SelectRule("bench", compile_expression(RULE_TEXT, step_score_checker(BEHAVIORS)), 0.5)
    runners = {}
    for name, mode, budget in (("exact", "exact", MAX_PER_EXAMPLE_BYTES),
                               ("exact hooks", "exact", 0), ("sketched", "sketched", 0)):
        attributor = InRunAttributor(model, optimizer=optimizer,
                                     config=AttributionConfig(mode=mode, warn_uncovered=False))
        attributor.refresh_probe_gradients(probes)
        runners[name] = SelectionStep(model, attributor, max_per_example_bytes=budget)
    methods = {
        "plain": lambda step: _plain(model, optimizer, batch),
        "select exact": lambda step: _select(model, optimizer, runners["exact"], rule, batch, step),
        "select exact, hooks": lambda step: _select(model, optimizer, runners["exact hooks"],
                                                    rule, batch, step),
        "select sketched": lambda step: _select(model, optimizer, runners["sketched"], rule,
                                                batch, step),
        "masked second pass": lambda step: _second_pass(model, optimizer, runners["exact hooks"],
                                                        rule, batch, step),
        "probe refresh / 10": lambda step: runners["exact"].attributor.refresh_probe_gradients(
            probes),
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for step in range(repeats + 1):
        for name, method in methods.items():
            started = time.perf_counter()
            method(step)
            if step:  # the first round warms up
                times[name].append(time.perf_counter() - started)
        model.load_state_dict(state)  # keep the weights from drifting over the repeats
    out = {name: statistics.median(values) for name, values in times.items()}
    out["probe refresh / 10"] /= 10
    return out


def print_steps(times: dict[str, float], rows: int, seq_len: int) -> None:
    """The step-time table, as ratios to the plain step."""
    base = times["plain"]
    print(f"\nstep time, reference GPT 4x128, candidate batch {rows} x {seq_len}, K=4 probe sets "
          f"(median of interleaved repeats)")
    print(f"{'method':<26}{'ms':>9}{'x plain':>9}")
    for name, seconds in times.items():
        print(f"{name:<26}{1000 * seconds:>9.1f}{seconds / base:>9.2f}")


# --- part 2: training runs ------------------------------------------------------------------------

class WallClock(L.Callback):
    """Seconds since the fit started, at the end of every step."""

    def __init__(self) -> None:
        self.started = 0.0
        self.seconds: dict[int, float] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.seconds[trainer.global_step] = time.perf_counter() - self.started


def prepare_data(out: Path) -> tuple[Path, Path]:
    """The demo's corpus and store under ``out`` (reused when present)."""
    from curriculum.store import build_store
    from curriculum.store.meta import META_FILE
    from curriculum.synth import write_synthetic_corpus

    corpus, store = out / "data", out / "store"
    if not (corpus / "manifest.json").is_file():
        write_synthetic_corpus(corpus, num_docs=4000, num_shards=4, seed=0, show_progress=True)
    if not (store / META_FILE).is_file():
        build_store(str(corpus), corpus / "probes", store, show_progress=True)
    return corpus, store


def scaled_policy(out: Path, policy: str, steps: int) -> str:
    """The shipped policy, its stage step bounds scaled from the demo's 300 steps to ``steps``
    (so a shortened run keeps the same shape: the values stage ends at a third to a half)."""
    import yaml

    from policies import resolve_policy_path

    if steps == 300:
        return policy
    data = yaml.safe_load(resolve_policy_path(policy).read_text())
    for stage in data.get("stages", []):
        for key in ("steps", "min_steps", "max_steps"):
            if key in stage.get("until", {}):
                stage["until"][key] = max(1, round(stage["until"][key] * steps / 300))
    path = out / "policies" / f"{policy}-{steps}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def train_arm(out: Path, corpus: Path, store: Path, policy: str, seed: int, steps: int,
              overrides: tuple[str, ...] = ()) -> dict:
    """One fit; its probe-loss series and wall-clock per step (cached in ``out``).
    ``overrides``: extra ``key=value`` settings of the fit config (selection arms only)."""
    import shutil

    from train.config import load_fit_config
    from train.fit import read_probe_losses, run_fit

    result_path = out / "results" / f"{Path(policy).stem}-seed{seed}-steps{steps}.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    run_dir = out / "runs" / f"{Path(policy).stem}-seed{seed}-steps{steps}"
    arm_store = out / "stores" / f"{Path(policy).stem}-seed{seed}"  # selection writes scores: one per run
    shutil.rmtree(arm_store, ignore_errors=True)
    shutil.copytree(store, arm_store)
    config = load_fit_config("configs/demo.yaml", [
        f"data.shards={corpus}", f"run_dir={run_dir}", f"seed={seed}",
        f"trainer.max_steps={steps}", "trainer.probe_every_n_steps=10",
        "trainer.checkpoint_every_n_steps=0",
        f"data.curriculum={{policy: {scaled_policy(out, policy, steps)}, store: {arm_store}}}",
        *overrides])
    clock = WallClock()
    started = time.perf_counter()
    run_fit(config, callbacks=[clock])
    result = {"policy": policy, "seed": seed, "steps": steps,
              "fit_seconds": time.perf_counter() - started,
              "seconds_at_step": {str(k): v for k, v in clock.seconds.items()},
              "probe_loss": {b: s for b, s in read_probe_losses(run_dir).items()}}
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result))
    return result


def _at(series: list[list[float]], step: int) -> float:
    return next(loss for s, loss in series if s == step)


def reach(result: dict, target: float) -> int | None:
    """First evaluated step whose values probe loss is at or below ``target``."""
    return next((int(s) for s, loss in result["probe_loss"]["values"] if loss <= target), None)


def print_train(results: dict[tuple[str, int], dict], seeds: list[int], arms: list[str]) -> None:
    """Per seed and arm: steps and seconds to reach uniform's final values loss, SA there."""
    print("\nsteps to reach uniform's end-of-run values probe loss (same seed); SA probe loss "
          "there, and uniform's SA at the same step")
    print(f"{'arm':<22}{'seed':>5}{'target':>8}{'step':>6}{'x uni':>7}{'seconds':>9}"
          f"{'SA':>8}{'uni SA':>8}")
    for arm in arms:
        for seed in seeds:
            uniform, mine = results[("uniform", seed)], results[(arm, seed)]
            values = uniform["probe_loss"]["values"]
            last_step, target = values[-1]
            step = reach(mine, target)
            if step is None:
                print(f"{Path(arm).stem:<22}{seed:>5}{target:>8.3f}{'never':>6}")
                continue
            seconds = mine["seconds_at_step"].get(str(step), float("nan"))
            sa = _at(mine["probe_loss"]["situational_awareness"], step)
            uni_sa = _at(uniform["probe_loss"]["situational_awareness"], step)
            print(f"{Path(arm).stem:<22}{seed:>5}{target:>8.3f}{step:>6}{step / last_step:>7.2f}"
                  f"{seconds:>9.1f}{sa:>8.3f}{uni_sa:>8.3f}")
    print("\nwall-clock of the whole fit (s):")
    for arm in ["uniform", *arms]:
        spent = [results[(arm, s)]["fit_seconds"] for s in seeds]
        print(f"  {Path(arm).stem:<22}" + "  ".join(f"{t:.0f}" for t in spent))


def main() -> None:
    """Run the requested parts and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/bench-selection")
    parser.add_argument("--part", choices=("steps", "train", "data", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--arms", default="values_first,values_first_select")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="key=value for the selection arms' fit config, e.g. "
                             "data.selection.probe_refresh_steps=1 (use a fresh --out)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: stable timings on a shared machine)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    if args.part in ("steps", "both"):
        times = bench_steps(args.repeats, 32, 128)
        (out / "step_times.json").write_text(json.dumps(times))
        print_steps(times, 32, 128)
    if args.part == "data":
        prepare_data(out)
    if args.part in ("train", "both"):
        corpus, store = prepare_data(out)
        seeds = [int(s) for s in args.seeds.split(",")]
        arms = [a for a in args.arms.split(",") if a]
        results = {}
        for seed in seeds:
            for policy in ["uniform", *arms]:
                print(f"fitting {policy} seed {seed} ...", flush=True)
                overrides = tuple(args.overrides) if "select" in policy else ()
                results[(policy, seed)] = train_arm(out, corpus, store, policy, seed, args.steps,
                                                    overrides)
        print_train(results, seeds, arms)


if __name__ == "__main__":
    main()
