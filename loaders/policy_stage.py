"""The policy stage as a DataLoader worker runs it: the store's memory-mapped tables, the policy,
and the deterministic curriculum state each batch is decided under.

Everything here is created lazily inside the worker from picklable settings (paths and numbers):
no FAISS, no open file handles cross the fork.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from curriculum.typed_config import ConfigError
from loaders.shared_state import SharedCurriculumState
from policies.decisions import DecisionBatch
from policies.state import CurriculumState


@dataclass
class CurriculumStreamConfig:
    """How the policy stage shapes the stream (on top of :class:`loaders.stream.StreamConfig`).

    What a user writes (``data.curriculum`` of a fit config); what a run wires in at run time
    (shared-state file, spool directory, the policy text it loaded) is :class:`StageWiring`.
    """

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
    upweight_mode: Literal["loss_weight", "repeat"] = "loss_weight"
    """``loss_weight`` (weights scale the loss) or ``repeat`` (a weight w is trained floor(w)
    times, plus once more with probability w - floor(w), each copy at loss weight 1)."""
    shard_order_by: str | None = None
    """``affinity.<behavior>``: open shards in descending order of their mean affinity to that
    behavior (from the store's per-shard summaries) instead of the seeded shuffle."""
    score_refresh_docs: int = 256
    """Rebuild the percentile tables that follow attribution (``pct.attribution``,
    ``pct.effect``, hence ``blend``) every this many decided documents, so measurements and
    estimates written during the run reach the decisions within the same pass (0: never)."""

    def __post_init__(self) -> None:
        if self.upweight_mode not in ("loss_weight", "repeat"):
            raise ConfigError(f"upweight_mode: expected one of 'loss_weight', 'repeat', "
                              f"got {self.upweight_mode!r}")
        by = self.shard_order_by
        if by is not None:
            family, _, behavior = by.partition(".") if isinstance(by, str) else ("", "", "")
            if family != "affinity" or not behavior:
                raise ConfigError(f"shard_order_by: expected 'affinity.<behavior>', got {by!r}")


@dataclass(frozen=True)
class StageWiring:
    """What a run wires into the policy stage at run time (set by the data module, never by a
    user's config): where the trainer publishes the curriculum state, where spools go, and the
    policy text the process loaded once (every worker decides under that same text)."""

    lag_steps: int = 8
    """Stage changes take effect this many steps after the trainer decides them; must exceed
    how far the loader can run ahead (workers x prefetch + 1)."""
    state_path: str = ""
    """The shared curriculum state file written by the trainer ('' = stage 0 forever)."""
    spool_dir: str = ""
    """Directory of the per-reader defer spool files ('' = kept in memory and checkpoints)."""
    policy_text: str | None = None
    """The policy's YAML as the driver loaded it (``None``: read the file ``policy`` names)."""
    policy_source: str = ""
    """Where ``policy_text`` came from (named in error messages), e.g. ``RUN/policy.yaml``."""


class PolicyStage:
    """Decides documents in a worker: ``decide(rows, step)`` -> (DecisionBatch, state)."""

    def __init__(self, config: CurriculumStreamConfig, wiring: StageWiring | None = None) -> None:
        self.config = config
        self.wiring = wiring or StageWiring()
        self.loaded_policy: Any = None
        """A policy this process already loaded (the data module's copy), used instead of
        parsing the text again; never pickled: a worker parses the text once for itself."""
        self._runner: Any = None
        self._shared: SharedCurriculumState | None = None
        self._since_refresh = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "wiring": self.wiring}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"], state.get("wiring"))

    @property
    def runner(self) -> Any:
        """The policy bound to the store (created on first use, in the worker)."""
        if self._runner is None:
            from curriculum.store import StoreReader
            from policies import PolicyRunner, load_policy, load_policy_text

            store = StoreReader(self.config.store)
            wiring = self.wiring
            # Once per process, from the text the driver loaded: never a second read of a file
            # that may have been edited since.
            if self.loaded_policy is not None:
                policy = self.loaded_policy
            elif wiring.policy_text is not None:
                policy = load_policy_text(wiring.policy_text, store, source=wiring.policy_source)
            else:
                policy = load_policy(self.config.policy, store)
            self._runner = PolicyRunner(policy, store)
        return self._runner

    def state_for_step(self, step: int) -> CurriculumState:
        """The state the batch consumed at ``step`` is decided under (see shared_state)."""
        source = step - self.wiring.lag_steps
        if not self.wiring.state_path or source < 0:
            return CurriculumState(step=step)
        if self._shared is None:
            self._shared = SharedCurriculumState(Path(self.wiring.state_path))
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
