"""Checkpoint the loader where training is, not where Lightning's prefetch is.

Lightning fetches one batch ahead of the step it trains on (``_PrefetchDataFetcher``), so the
``StatefulDataLoader`` state it stores in a checkpoint already counts a batch that training never
saw, and a resumed run would skip it. This callback records the loader's state at every step and
writes, in place of Lightning's, the state as of the last batch actually trained on (with numpy
arrays turned into tensors, so the checkpoint loads with ``weights_only=True``). Add it to every
trainer that streams from our loaders; ``run_fit`` does.

The checkpoint also gets a loader record (:mod:`loaders.elastic`): a version, the layout (ranks x
workers) and every rank's loader state. On resume, each rank loads its own state when the layout
is the same (exact), and the pending state is re-partitioned over the new readers when it is not.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import lightning as L

from loaders import elastic
from loaders.checkpointable import arrays_to_tensors


class ExactLoaderStateCallback(L.Callback):
    """Stores the training loader's state as of the last consumed batch in checkpoints."""

    def __init__(self) -> None:
        self._states: deque[tuple[int, Any]] = deque(maxlen=8)

    @staticmethod
    def _loader(trainer: L.Trainer) -> Any:
        combined = getattr(trainer.fit_loop, "_combined_loader", None)
        loaders = combined.flattened if combined is not None else []
        return loaders[0] if len(loaders) == 1 and hasattr(loaders[0], "state_dict") else None

    @staticmethod
    def _prefetched(trainer: L.Trainer) -> int:
        fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
        return int(getattr(fetcher, "prefetch_batches", 0) or 0)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        """At step j the loader has handed out batches up to j + prefetched: remember its state."""
        loader = self._loader(trainer)
        if loader is not None:
            self._states.append((trainer.global_step + self._prefetched(trainer),
                                 loader.state_dict()))

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        """Replace the loader state with the one through the last trained batch, with its
        arrays as tensors so the checkpoint loads with ``weights_only=True``."""
        loop_state = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
        if "combined_loader" not in loop_state:
            return
        last_trained = trainer.global_step - 1
        for handed_out_through, state in self._states:
            if handed_out_through == last_trained:
                loop_state["combined_loader"] = [state]
                break
        loader = self._loader(trainer)
        if loader is not None:
            # Gathered as numpy (tensors do not survive all_gather_object's pickling), then made
            # tensors like the rest.
            layout = elastic.LoaderLayout(trainer.world_size, int(loader.num_workers))
            checkpoint[elastic.RECORD_KEY] = arrays_to_tensors(elastic.loader_record(
                layout, trainer.global_step, loop_state["combined_loader"][0]))
        loop_state["combined_loader"] = arrays_to_tensors(loop_state["combined_loader"])

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        """Give this rank its own loader state (same layout), or re-partition the pending state
        over this layout's readers (another layout; see :mod:`loaders.elastic`)."""
        record = checkpoint.get(elastic.RECORD_KEY)
        loop_state = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
        datamodule = trainer.datamodule
        if record is None or "combined_loader" not in loop_state or datamodule is None:
            return  # a checkpoint from before loader records: resumed as it was saved
        saved = elastic.record_layout(record)
        layout = elastic.LoaderLayout(trainer.world_size, int(getattr(datamodule, "num_workers", 0)))
        if saved == layout:
            loop_state["combined_loader"] = [record["ranks"][trainer.global_rank]]
            return
        if getattr(datamodule, "dataset", None) is None:
            datamodule.setup("fit")
        states = elastic.resume_states(datamodule.dataset, record, layout, trainer.global_rank,
                                       checkpoint)
        datamodule.dataset.resume_elastic(states)
        loop_state["combined_loader"] = []  # the data loader starts afresh
