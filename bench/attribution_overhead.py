"""Overhead of in-run attribution on the reference GPT at demo size (CPU).

Measures, in one run and interleaved (blocks of steps in rotating order, medians over blocks),
the time of a training step (forward, backward, AdamW step) without attribution and with it:
exact scores every step, exact scores every 4th step, sketched scores every step (K behaviors).
Everything runs at the library's defaults (``AttributionConfig``, ``AttributionSettings``) unless
a flag says otherwise. Probe gradients are refreshed on a schedule (``--probe-refresh-steps``,
default: the callback's ``probe_refresh_steps``); one refresh is timed separately and reported
both on its own and amortized into the ratios, which are what the targets are checked against.
Then the Spearman rank correlation of sketched against exact scores for several ranks; how
scores with a probe gradient refreshed N steps ago rank against freshly refreshed ones (what the
refresh cadence costs in quality); and the peak resident memory of each variant (each in its
own subprocess).

    python bench/attribution_overhead.py            # full run (a few minutes on 2 cores)
    python bench/attribution_overhead.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared machine, spinning threads of a
# 2-thread pool fight other processes for the cores and make step times meaningless. Set before
# torch loads its OpenMP runtime; applies to baseline and attributed steps alike.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curriculum.attribution import (  # noqa: E402
    AttributionConfig,
    InRunAttributor,
    UncoveredParametersWarning,
    per_example_token_loss,
    spearman_correlation,
)
from curriculum.attribution.grad_features import byte_document_batch  # noqa: E402
from curriculum.synth import generate_documents, generate_text  # noqa: E402
from train.attribution_callback import AttributionSettings  # noqa: E402
from train.model import GPT, GPTConfig  # noqa: E402

DEFAULTS = AttributionSettings()
TARGETS = {"exact_every_step": 1.5, "exact_every_4th": 1.15, "sketched_every_step": 1.2}
LEARNING_RATE = 3e-3
"""The demo's peak learning rate (configs/demo.yaml)."""
WARMUP_STEPS = 30
"""The demo's linear warmup."""

VARIANTS = ("plain", "exact_every_step", "exact_every_4th", "sketched_every_step")


class Setup:
    """Model, data and probe sets of the benchmark."""

    def __init__(self, args: argparse.Namespace) -> None:
        import random

        torch.manual_seed(args.seed)
        self.config = GPTConfig(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                                block_size=args.seq_len)
        self.model = GPT(self.config)
        docs = [d.text for d in generate_documents(args.batch_size * 64, seed=args.seed)]
        self.batches = [byte_document_batch(docs[i : i + args.batch_size], args.seq_len)
                        for i in range(0, len(docs), args.batch_size)]
        rng = random.Random(args.seed + 1)
        behaviors = ("values", "situational_awareness", "neutral", "deception")[: args.behaviors]
        self.probes = {b: byte_document_batch([generate_text(b, rng) for _ in range(args.probe_docs)],
                                         args.seq_len) for b in behaviors}
        self.args = args

    def runner(self, variant: str, refresh: bool = True) -> Runner:
        """A fresh copy of the model and optimizer that runs ``variant``'s steps."""
        return Runner(self, variant, refresh)


class Runner:
    """One variant: its own model copy, AdamW, and attributor."""

    def __init__(self, setup: Setup, variant: str, refresh: bool = True) -> None:
        args = setup.args
        self.setup, self.variant = setup, variant
        self.model = copy.deepcopy(setup.model)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=LEARNING_RATE)
        self.attributor = None
        self.step_index = 0
        if variant != "plain":
            config = AttributionConfig(
                mode="sketched" if variant.startswith("sketched") else "exact",
                sketch_rank=args.rank)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UncoveredParametersWarning)
                self.attributor = InRunAttributor(self.model, config, optimizer=self.optimizer)
            if refresh:
                self.attributor.refresh_probe_gradients(setup.probes)
        self.scored_steps = {"plain": 0, "exact_every_step": 1, "exact_every_4th": 4,
                             "sketched_every_step": 1}[variant]

    def step(self) -> tuple[float, float]:
        """One training step; returns its (wall, process CPU) seconds (probe refresh excluded)."""
        batch = self.setup.batches[self.step_index % len(self.setup.batches)]
        scored = self.scored_steps and self.step_index % self.scored_steps == 0
        self.step_index += 1
        start, start_cpu = time.perf_counter(), time.process_time()
        if scored:  # exact mode re-reads Adam's v by itself once the optimizer has stepped
            _, scores = self.attributor.loss_and_scores(batch, lr=LEARNING_RATE)
        else:
            per_example_token_loss(self.model, batch).sum().backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start, time.process_time() - start_cpu

    def refresh_seconds(self) -> tuple[float, float]:
        """(wall, CPU) seconds of one probe-gradient refresh (every probe set's forward and
        backward, the preconditioner, the sketch)."""
        start, start_cpu = time.perf_counter(), time.process_time()
        self.attributor.refresh_probe_gradients(self.setup.probes)
        return time.perf_counter() - start, time.process_time() - start_cpu


Times = dict[str, dict[str, list[float]]]
"""clock ("wall", "cpu") -> variant -> per-round mean seconds per step."""


def time_variants(setup: Setup) -> tuple[Times, dict[str, Runner]]:
    """Per-round mean step time of every variant, on both clocks. A round runs one block of
    steps of each variant, in rotating order, so that all variants of a round share the load."""
    args = setup.args
    runners = {v: setup.runner(v) for v in VARIANTS}
    for runner in runners.values():  # warm-up (allocator, first-call costs)
        for _ in range(args.steps_per_block):
            runner.step()
    times: Times = {clock: {v: [] for v in VARIANTS} for clock in ("wall", "cpu")}
    for repeat in range(args.repeats):
        order = VARIANTS[repeat % len(VARIANTS):] + VARIANTS[: repeat % len(VARIANTS)]
        for variant in order:
            # Blocks of a multiple of 4 steps keep the every-4th variant's share exact.
            block = [runners[variant].step() for _ in range(args.steps_per_block)]
            for index, clock in enumerate(("wall", "cpu")):
                times[clock][variant].append(sum(b[index] for b in block) / len(block))
    return times, runners


def report_times(clock: str, times: dict[str, list[float]], refresh: dict[str, float],
                 every: int) -> dict[str, float]:
    """One table: per-step medians, paired ratios, amortized probe refresh, targets. Returns the
    ratios with the refresh amortized (what the targets are checked against)."""
    medians = {v: statistics.median(t) for v, t in times.items()}
    paired = {v: [a / b for a, b in zip(t, times["plain"], strict=True)] for v, t in times.items()}
    plain = medians["plain"]
    print(f"\nstep time, {clock} clock: ms/step = median over rounds of the block mean; ratio = "
          "median over rounds of the ratio to the same round's plain block; min ratio = ratio of "
          f"the fastest blocks (interference only adds time); with refresh = ratio plus one probe "
          f"refresh every {every} steps")
    print(f"  {'variant':<22}{'ms/step':>9}{'ratio':>8}{'IQR of ratio':>15}{'min ratio':>11}"
          f"{'with refresh':>14}{'target':>8}{'met':>5}")
    amortized: dict[str, float] = {}
    for variant in VARIANTS:
        ratio = statistics.median(paired[variant])
        kind = "sketched" if variant.startswith("sketched") else "exact"
        fastest = min(times[variant]) / min(times["plain"])
        line = (f"  {variant:<22}{1000 * medians[variant]:9.1f}{ratio:8.3f}"
                f"{_quartiles(paired[variant]):>15}{fastest:11.3f}")
        if variant != "plain":
            amortized[variant] = ratio + refresh[kind] / every / plain
            met = "yes" if amortized[variant] <= TARGETS[variant] else "NO"
            line += f"{amortized[variant]:14.3f}{TARGETS[variant]:8.2f}{met:>5}"
        print(line)
    for kind, seconds in refresh.items():
        print(f"  probe refresh ({kind}): {1000 * seconds:.0f} ms = {seconds / plain:.1f} plain "
              f"steps; every {every} steps adds {seconds / every / plain:.3f} to the ratio")
    return amortized


def sketch_quality(setup: Setup, runner: Runner, ranks: list[int]) -> dict[int, list[float]]:
    """Spearman of sketched vs exact scores (per behavior) on 64 documents, at the weights and
    Adam state of ``runner`` (the plain run after the timed steps)."""
    model, optimizer = runner.model, runner.optimizer
    batches = setup.batches[-4:]

    def scores(config: AttributionConfig) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UncoveredParametersWarning)
            attributor = InRunAttributor(model, config, optimizer=optimizer)
        attributor.refresh_probe_gradients(setup.probes)
        result = torch.cat([attributor.score(b, accumulate_grad=False) for b in batches])
        attributor.close()
        return result

    exact = scores(AttributionConfig())
    quality = {}
    for rank in ranks:
        sketched = scores(AttributionConfig(mode="sketched", sketch_rank=rank))
        quality[rank] = [spearman_correlation(sketched[:, k], exact[:, k])
                         for k in range(exact.shape[1])]
    return quality


def staleness(setup: Setup, start_step: int, ages: list[int]) -> dict[int, list[float]]:
    """Spearman, per behavior, of exact scores with probe gradients refreshed ``age`` steps ago
    against scores with probe gradients refreshed now (both under Adam's current second
    moments, at the current weights), on 64 held-out documents. A fresh model trains as the
    demo does (peak lr, linear warmup) for ``start_step`` steps, then the stale probe gradients
    are taken and training goes on."""
    torch.manual_seed(setup.args.seed)
    model = GPT(setup.config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    warmup = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / WARMUP_STEPS))
    held_out, training = setup.batches[-4:], setup.batches[:-4]
    done = 0

    def train_until(step: int) -> None:
        nonlocal done
        for _ in range(done, step):
            per_example_token_loss(model, training[done % len(training)]).sum().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            warmup.step()
            done += 1

    def scores(attributor: InRunAttributor) -> torch.Tensor:
        return torch.cat([attributor.score(b, accumulate_grad=False) for b in held_out])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UncoveredParametersWarning)
        stale = InRunAttributor(model, AttributionConfig(), optimizer=optimizer)
        fresh = InRunAttributor(model, AttributionConfig(), optimizer=optimizer)
    train_until(max(1, start_step))  # Adam needs a step before it can precondition
    stale.refresh_probe_gradients(setup.probes)
    quality: dict[int, list[float]] = {}
    for age in sorted(ages):
        train_until(max(1, start_step) + age)
        fresh.refresh_probe_gradients(setup.probes)
        old, new = scores(stale), scores(fresh)
        quality[age] = [spearman_correlation(old[:, k], new[:, k]) for k in range(old.shape[1])]
    stale.close()
    fresh.close()
    return quality


def _resident_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def measure_memory(args: argparse.Namespace, variant: str) -> dict[str, float]:
    """Memory of ``variant`` in this process (run with a low glibc mmap threshold, so freed
    tensors go back to the system and the resident size follows live memory): resident MiB
    before the first step, and the peaks sampled every millisecond over one probe refresh and
    over 8 training steps. (``ru_maxrss`` deltas say nothing here: the process's high-water mark
    is set by imports and corpus generation, before any step.)"""
    import threading

    setup = Setup(args)
    runner = setup.runner(variant, refresh=False)
    # A plain step first: Adam's state, thread pools and kernels are allocated before the baseline.
    per_example_token_loss(runner.model, setup.batches[0]).sum().backward()
    runner.optimizer.step()
    runner.optimizer.zero_grad(set_to_none=True)
    baseline = _resident_mib()
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _resident_mib())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if runner.attributor is not None:
        runner.attributor.refresh_probe_gradients(setup.probes)
    time.sleep(0.01)
    refresh_peak, peak[0] = peak[0], _resident_mib()
    for _ in range(8):
        runner.step()
    time.sleep(0.01)
    done.set()
    sampler.join()
    return {"baseline_mib": baseline, "refresh_peak_mib": refresh_peak, "steps_peak_mib": peak[0]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per row (block_size)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--behaviors", type=int, default=2, help="K probe sets")
    parser.add_argument("--probe-docs", type=int, default=32, help="documents per probe set")
    parser.add_argument("--rank", type=int, default=AttributionConfig().sketch_rank,
                        help="sketch rank r (default: AttributionConfig's)")
    parser.add_argument("--probe-refresh-steps", type=int, default=DEFAULTS.probe_refresh_steps,
                        help="probe refresh cadence amortized into the ratios (default: the "
                        "callback's)")
    parser.add_argument("--repeats", type=int, default=12, help="rounds (blocks per variant)")
    parser.add_argument("--steps-per-block", type=int, default=4)
    parser.add_argument("--ranks", default="4,8,16,32,64", help="sketch ranks for Spearman")
    parser.add_argument("--staleness-ages", default="1,2,4,16,64,100",
                        help="probe-gradient ages (steps) for the staleness table ('' skips it)")
    parser.add_argument("--staleness-from", type=int, default=100,
                        help="training steps before the stale probe gradients are taken")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.ranks, args.staleness_ages = 2, "8,32", "1,4"
        args.staleness_from = 10
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_variant:
        print(json.dumps(measure_memory(args, args.memory_variant)))
        return
    setup = Setup(args)
    n_params = sum(p.numel() for p in setup.model.parameters())
    print("configuration")
    print(f"  model: reference GPT n_layer={args.n_layer} n_head={args.n_head} "
          f"n_embd={args.n_embd} block_size={args.seq_len} vocab=257 (bytes), {n_params:,} params")
    print(f"  batch: {args.batch_size} x {args.seq_len} tokens, one synthetic document per row, "
          "right-padded; AdamW; float32")
    print(f"  probes: K={args.behaviors} behaviors x {args.probe_docs} documents x "
          f"{args.seq_len} tokens, Adam-preconditioned, refreshed every {args.probe_refresh_steps} "
          f"steps; sketch rank r={args.rank}")
    print("  exact variants re-read Adam's v on every scored step (automatic once the optimizer "
          "has stepped); the sketched variant keeps its sketch from the last probe refresh")
    print(f"  timing: {args.repeats} rounds x {args.steps_per_block} steps per variant, "
          f"interleaved; medians; torch threads={torch.get_num_threads()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    times, runners = time_variants(setup)
    refreshes = {kind: [runners[variant].refresh_seconds() for _ in range(3)]
                 for kind, variant in (("exact", "exact_every_step"),
                                       ("sketched", "sketched_every_step"))}
    verdicts = {}
    for index, clock in enumerate(("wall", "cpu")):
        refresh = {kind: statistics.median(r[index] for r in runs) for kind, runs in refreshes.items()}
        verdicts[clock] = report_times(clock, times[clock], refresh, args.probe_refresh_steps)
    forms = runners["exact_every_step"].attributor.forms_used
    print("  exact forms chosen per scored step: " + ", ".join(
        f"{form} x{n}" for form, n in sorted(_count_forms(forms).items())))

    ranks = [int(r) for r in args.ranks.split(",")]
    quality = sketch_quality(setup, runners["plain"], ranks)
    print("\nsketched vs exact scores, Spearman per behavior (64 documents, weights after the "
          "timed steps)")
    for rank, values in quality.items():
        print(f"  r={rank:<4d} " + "  ".join(f"{v:.4f}" for v in values))

    ages = [int(a) for a in args.staleness_ages.split(",") if a.strip()]
    if ages:
        print("\nstale vs fresh probe gradients, Spearman per behavior of exact scores (64 held-out "
              f"documents; a fresh model trained like the demo, lr {LEARNING_RATE:g} with "
              f"{WARMUP_STEPS} warmup steps, probe gradients taken at step {args.staleness_from})")
        for age, values in staleness(setup, args.staleness_from, ages).items():
            print(f"  refreshed {age:>4d} steps ago: " + "  ".join(f"{v:.4f}" for v in values))

    if not args.skip_memory:
        print("\nmemory (own subprocess each, MALLOC_MMAP_THRESHOLD_=65536): resident MiB before "
              "the steps; peak growth sampled every 1 ms over 8 steps and, apart, over one probe refresh")
        environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        plain_growth = None
        for variant in VARIANTS:
            command = [sys.executable, __file__, "--memory-variant", variant,
                       *[a for a in (argv if argv is not None else sys.argv[1:])
                         if a != "--quick"]]
            output = subprocess.run(command, capture_output=True, text=True, check=True,
                                    env=environment).stdout
            memory = json.loads(output.strip().splitlines()[-1])
            growth = memory["steps_peak_mib"] - memory["baseline_mib"]
            plain_growth = growth if plain_growth is None else plain_growth
            refresh = memory["refresh_peak_mib"] - memory["baseline_mib"]
            print(f"  {variant:<22} before {memory['baseline_mib']:6.1f}  steps: peak +{growth:5.1f} "
                  f"({growth - plain_growth:+5.1f} vs plain)  probe refresh: peak +{refresh:5.1f}")

    print("\nsummary (wall clock, probe refresh amortized): " + "; ".join(
        f"{variant} {ratio:.3f} (target {TARGETS[variant]:.2f})"
        for variant, ratio in verdicts["wall"].items()))


def _quartiles(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}"
    low, _, high = statistics.quantiles(values, n=4)
    return f"{low:.3f}-{high:.3f}"


def _count_forms(forms: dict[tuple[str, str], int]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for (_, form), n in forms.items():
        counts[form] = counts.get(form, 0) + n
    return counts


if __name__ == "__main__":
    main()
