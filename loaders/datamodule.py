"""The ``LightningDataModule`` around the streaming dataset, with a resumable DataLoader."""

from __future__ import annotations

import copy
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from torchdata.stateful_dataloader import StatefulDataLoader

from curriculum.shards.manifest import ShardManifest, manifest_for
from loaders.bundles import BundledLoader, bundle_size_for
from loaders.curriculum_stream import CurriculumStream
from loaders.packing import batch_to_tensors, keep_as_is
from loaders.policy_stage import CurriculumStreamConfig, StageWiring
from loaders.shared_state import SharedCurriculumState, default_state_path
from loaders.stream import PackedTextStream, StreamConfig

#: The run's own copy of its policy, inside the run directory.
RUN_POLICY_NAME = "policy.yaml"


def run_policy(run_dir: Path, policy: str, resuming: bool, rank: int = 0) -> tuple[Path, str]:
    """The policy a run trains under, read once: ``(path, text)``.

    A resumed run keeps its own ``RUN/policy.yaml`` (editing the source file meanwhile changes
    nothing); a new run copies the policy file (or built-in) there first (rank 0 writes it,
    atomically). Every rank and worker then decides under this one text.
    """
    from policies import resolve_policy_path

    copy = run_dir / RUN_POLICY_NAME
    if resuming and copy.is_file():
        return copy, copy.read_text(encoding="utf-8")
    text = resolve_policy_path(policy).read_text(encoding="utf-8")
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        temporary = copy.with_name(f".{copy.name}.{os.getpid()}")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, copy)
    return copy, text


def stream_loader(dataset: PackedTextStream, num_workers: int = 1, prefetch_batches: int = 2,
                  snapshot_every_n_steps: int = 16,
                  bundle_batches: int | None = None) -> StatefulDataLoader:
    """A resumable DataLoader over a packed stream: no re-batching, numpy out of the workers.

    Workers send their batches in bundles (:mod:`loaders.bundles`; ``bundle_batches`` per
    message, chosen by :func:`~loaders.bundles.bundle_size_for` when ``None``), handed out one
    by one in the order an unbundled loader gives them. Workers send their state about once in
    ``snapshot_every_n_steps`` batches; a checkpoint taken in between is restored by replaying
    the few batches since the last snapshot (the stream is deterministic), which keeps the
    per-batch cost of resumability low."""
    size = bundle_batches or bundle_size_for(dataset, num_workers)
    if num_workers > 0 and size > 1:
        return BundledLoader(dataset, size, num_workers,
                             prefetch_bundles=max(2, math.ceil(prefetch_batches / size)),
                             snapshot_every_n_steps=snapshot_every_n_steps)
    extra: dict[str, Any] = {}
    if num_workers > 0:
        extra = {"prefetch_factor": prefetch_batches, "persistent_workers": False}
    return StatefulDataLoader(dataset, batch_size=None, num_workers=num_workers,
                              collate_fn=keep_as_is,
                              snapshot_every_n_steps=snapshot_every_n_steps, **extra)


class CurriculumDataModule(L.LightningDataModule):
    """Streams packed batches from tar shards into a Lightning ``Trainer``, optionally through a
    curriculum policy.

    Without a policy it is a plain resumable text stream. With ``policy`` and ``store`` (or a
    :class:`CurriculumStreamConfig`), every document is decided by the policy in the DataLoader
    workers, and :class:`train.curriculum_callback.CurriculumCallback` must be among the trainer's
    callbacks (it writes the ledger and publishes stages). The DataLoader is torchdata's
    ``StatefulDataLoader``, whose state Lightning stores in checkpoints, so a resumed fit continues
    mid-epoch. Rank and world size are taken from the trainer in :meth:`setup`.
    """

    def __init__(self, shards: str | Sequence[str], stream: StreamConfig | None = None, *,
                 store: str | None = None, policy: str | None = None,
                 curriculum: CurriculumStreamConfig | None = None, num_workers: int = 1,
                 prefetch_batches: int = 2, run_dir: str | None = None,
                 snapshot_every_n_steps: int = 16, resuming: bool = False,
                 loaded_policy: Any = None) -> None:
        super().__init__()
        self.shards = shards
        self.stream_config = stream or StreamConfig()
        if curriculum is None and (policy or store):
            if not (policy and store):
                raise ValueError("a curriculum needs both policy= and store=")
            curriculum = CurriculumStreamConfig(policy=policy, store=store)
        self.curriculum = curriculum
        self.num_workers = num_workers
        self.prefetch_batches = prefetch_batches
        self.run_dir = run_dir
        self.snapshot_every_n_steps = snapshot_every_n_steps
        self.resuming = resuming
        """Whether the trainer resumes this run from a checkpoint: the run's own
        ``policy.yaml`` is then used as it is (:func:`run_policy`)."""
        self.manifest: ShardManifest | None = None
        self.dataset: PackedTextStream | None = None
        self.shared_state: SharedCurriculumState | None = None
        self.wiring: StageWiring | None = None
        """What the run wired into the policy stage (set up in :meth:`setup`)."""
        self.policy: Any = loaded_policy
        """The policy, loaded once (by the caller, or in :meth:`setup`) from the run's own
        ``policy.yaml``; the
        curriculum callback drives the stages with this object and every worker decides under
        the same text."""

    def setup(self, stage: str | None = None) -> None:
        """Read the manifest, place this rank, and create the shared curriculum state."""
        if self.dataset is not None:
            return
        if self.manifest is None:
            self.manifest = manifest_for(self.shards)
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        if self.curriculum is None:
            self.dataset = PackedTextStream(self.manifest, self.stream_config, rank, world_size)
            return
        run_dir = Path(self.run_dir or (trainer.default_root_dir if trainer else tempfile.mkdtemp()))
        state_path = default_state_path(run_dir, rank)
        self.shared_state = SharedCurriculumState(state_path, create=True)
        # A policy the caller already loaded came from RUN/policy.yaml: keep that copy as it is.
        policy_path, policy_text = run_policy(run_dir, self.curriculum.policy,
                                              self.resuming or self.policy is not None, rank)
        if self.policy is None:
            from curriculum.store import StoreReader
            from policies import load_policy_text

            self.policy = load_policy_text(policy_text, StoreReader(self.curriculum.store),
                                           source=str(policy_path))
        # The loader runs at most workers x prefetch batches ahead of training: stage changes
        # must take effect later than that to be seen identically by every worker.
        lag = max(8, max(1, self.num_workers) * self.prefetch_batches + 2)
        self.wiring = StageWiring(lag_steps=lag, state_path=str(state_path),
                                  spool_dir=str(run_dir / "spool"), policy_text=policy_text,
                                  policy_source=str(policy_path))
        self.dataset = CurriculumStream(self.manifest, self.stream_config, self.curriculum, rank,
                                        world_size, self.wiring)
        # Without worker processes the stage decides in this process: a copy of the loaded
        # policy (the driver's own object advances stages; decisions must not share its state).
        self.dataset.stage.loaded_policy = copy.deepcopy(self.policy)

    def train_dataloader(self) -> StatefulDataLoader:
        """Batches come packed from the dataset, so the loader does no batching itself."""
        if self.dataset is None:
            self.setup("fit")
        return stream_loader(self.dataset, self.num_workers, self.prefetch_batches,
                             self.snapshot_every_n_steps)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Workers hand over numpy arrays; tensors are made here, in the training process."""
        return batch_to_tensors(batch)

    def teardown(self, stage: str | None = None) -> None:
        """Remove the shared state file."""
        if self.shared_state is not None:
            self.shared_state.close()
            self.shared_state.path.unlink(missing_ok=True)
