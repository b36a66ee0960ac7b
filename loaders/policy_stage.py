"""The policy stage as a DataLoader worker runs it: the store's memory-mapped tables, the policy,
and the deterministic curriculum state each batch is decided under.

Everything here is created lazily inside the worker from picklable settings (paths and numbers):
no FAISS, no open file handles cross the fork.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loaders.shared_state import SharedCurriculumState
from policies.decisions import DecisionBatch
from policies.state import CurriculumState


@dataclass
class CurriculumStreamConfig:
    """How the policy stage shapes the stream (on top of :class:`loaders.stream.StreamConfig`)."""

    policy: str = "uniform"
    """A built-in policy name (``values_first``) or a YAML path."""
    store: str = ""
    """Behavior store directory (read through memory-mapped tables only)."""
    window_size_docs: int = 64
    """Priority window: documents held for reordering (0 disables reordering)."""
    max_age_docs: int | None = None
    """A document waits at most this many arrivals in the window (default 4 x window size)."""
    decide_chunk_docs: int = 32
    """Documents decided together (vectorised); the chunk's curriculum state is checkpointed."""
    upweight_mode: str = "loss_weight"
    """``loss_weight`` (weights scale the loss) or ``repeat`` (a weight w is trained floor(w)
    times, plus once more with probability w - floor(w), each copy at loss weight 1)."""
    shard_order_by: str | None = None
    """``affinity.<behavior>``: open shards in descending order of their mean affinity to that
    behavior (from the store's per-shard summaries) instead of the seeded shuffle."""
    score_refresh_docs: int = 256
    """Rebuild the percentile tables that follow attribution (``pct.attribution``,
    ``pct.effect``, hence ``blend``) every this many decided documents, so measurements and
    estimates written during the run reach the decisions within the same pass (0: never)."""
    lag_steps: int = 8
    """Stage changes take effect this many steps after the trainer decides them; must exceed
    how far the loader can run ahead (workers x prefetch + 1). Set by the data module."""
    state_path: str = ""
    """The shared curriculum state file written by the trainer ('' = stage 0 forever)."""
    spool_dir: str = ""
    """Directory of the per-reader defer spool files ('' = kept in memory and checkpoints)."""


class PolicyStage:
    """Decides documents in a worker: ``decide(rows, step)`` -> (DecisionBatch, state)."""

    def __init__(self, config: CurriculumStreamConfig) -> None:
        self.config = config
        self._runner: Any = None
        self._shared: SharedCurriculumState | None = None
        self._since_refresh = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])

    @property
    def runner(self) -> Any:
        """The policy bound to the store (created on first use, in the worker)."""
        if self._runner is None:
            from curriculum.store import StoreReader
            from policies import PolicyRunner, load_policy

            store = StoreReader(self.config.store)
            self._runner = PolicyRunner(load_policy(self.config.policy, store), store)
        return self._runner

    def state_for_step(self, step: int) -> CurriculumState:
        """The state the batch consumed at ``step`` is decided under (see shared_state)."""
        source = step - self.config.lag_steps
        if not self.config.state_path or source < 0:
            return CurriculumState(step=step)
        if self._shared is None:
            self._shared = SharedCurriculumState(Path(self.config.state_path))
        published = self._shared.wait_for(source)
        return CurriculumState(step, published.tokens, published.stage, published.metrics)

    def decide(self, rows: list[int], state: CurriculumState) -> DecisionBatch:
        """Vectorised decisions for ``rows`` under ``state``."""
        runner = self.runner
        every = self.config.score_refresh_docs
        if every and self._since_refresh >= every:
            runner.refresh()  # cheap when the policy reads no attribution percentiles
            self._since_refresh = 0
        self._since_refresh += len(rows)
        return runner.decide_rows(rows, state)
