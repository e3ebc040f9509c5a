"""PK sampling: batches of P identities × K images each (what the batch-hard triplet loss needs).

One epoch: every identity's images are shuffled and cut into chunks of K (an identity with fewer
than K images gives one chunk drawn with replacement; the remainder of a longer one, fewer than K
images, waits for a later epoch's shuffle). Batches take one chunk from each of P distinct
identities, drawn with probability proportional to the chunks each has left, so identities run out
together; a last, incomplete set is filled with fresh chunks of other identities. Every identity
therefore appears at least once per epoch.

The plan depends only on ``(seed, epoch)``, so every DDP rank builds the same one. The batches are
dealt round-robin to the ranks; when their number does not divide by ``world_size``, extra random
PK batches are appended so all ranks get the same number of batches (DDP needs equal lengths) and
no batch is shared.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from vreid.core.errors import ConfigError


class PKSampler(Sampler[int]):
    """Yields dataset indices, ``p × k`` consecutive ones per batch (use ``batch_size = p * k``).

    Args:
        labels: identity label of every dataset item (hashable ids, or a 1-D tensor/array).
        p: identities per batch.
        k: images per identity per batch.
        seed: seed of the sampling plan (with the epoch set by :meth:`set_epoch`).
        rank: this process's rank in distributed training.
        world_size: number of processes; each gets a disjoint share of the epoch's batches.

    Raises:
        ConfigError: fewer distinct identities than ``p``, or invalid p/k/rank.
    """

    def __init__(
        self,
        labels: Sequence[Any],
        p: int,
        k: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if p < 1 or k < 1:
            raise ConfigError(f"train.p and train.k must be at least 1 (got p={p}, k={k})")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in [0, world_size={world_size})")
        if hasattr(labels, "tolist"):  # tensors and arrays: group by value, not by element object
            labels = labels.tolist()
        groups: dict[Any, list[int]] = {}
        for index, label in enumerate(labels):
            groups.setdefault(label, []).append(index)
        if len(groups) < p:
            raise ConfigError(
                f"the training set has {len(groups)} identities but a batch needs train.p={p}; "
                f"set train.p to at most {len(groups)} or use a dataset with more identities"
            )
        self.p, self.k = p, k
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self._groups = [np.asarray(v, dtype=np.int64) for v in groups.values()]
        self._cache: tuple[int, np.ndarray] | None = None

    # -- plan ----------------------------------------------------------------------------------

    @property
    def batch_size(self) -> int:
        """Images per batch: ``p * k``."""
        return self.p * self.k

    @property
    def num_identities(self) -> int:
        """Distinct identities in ``labels``."""
        return len(self._groups)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose plan :meth:`__iter__` yields (call before each epoch)."""
        self.epoch = epoch

    def _chunk(self, rng: np.random.Generator, group: np.ndarray) -> np.ndarray:
        return rng.choice(group, size=self.k, replace=len(group) < self.k)

    def epoch_batches(self) -> np.ndarray:
        """All batches of the current epoch for all ranks: (num_batches, p * k) dataset indices.

        Rank r gets rows ``r, r + world_size, …``; ``num_batches`` is a multiple of
        ``world_size``.
        """
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, self.epoch])
        chunks: list[list[np.ndarray]] = []
        for group in self._groups:
            shuffled = rng.permutation(group)
            if len(group) < self.k:
                chunks.append([self._chunk(rng, group)])
            else:
                n = len(group) // self.k
                chunks.append([shuffled[i * self.k : (i + 1) * self.k] for i in range(n)])
        left = np.array([len(c) for c in chunks], dtype=np.float64)
        batches: list[np.ndarray] = []
        while np.count_nonzero(left) >= self.p:
            ids = rng.choice(len(chunks), size=self.p, replace=False, p=left / left.sum())
            batches.append(np.concatenate([chunks[i][int(left[i]) - 1] for i in ids]))
            left[ids] -= 1
        remaining = np.flatnonzero(left)
        if len(remaining):  # the last few identities, completed with fresh chunks of others
            others = np.setdiff1d(np.arange(len(chunks)), remaining)
            extra = rng.choice(others, size=self.p - len(remaining), replace=False)
            parts = [chunks[i][int(left[i]) - 1] for i in remaining]
            parts += [self._chunk(rng, self._groups[i]) for i in extra]
            batches.append(np.concatenate(parts))
        while len(batches) % self.world_size:
            batches.append(self._random_batch(rng))
        order = rng.permutation(len(batches))
        plan = np.stack(batches)[order]
        self._cache = (self.epoch, plan)
        return plan

    def _random_batch(self, rng: np.random.Generator) -> np.ndarray:
        ids = rng.choice(len(self._groups), size=self.p, replace=False)
        return np.concatenate([self._chunk(rng, self._groups[i]) for i in ids])

    def rank_batches(self) -> np.ndarray:
        """This rank's share of :meth:`epoch_batches`: (num_batches / world_size, p * k)."""
        return self.epoch_batches()[self.rank :: self.world_size]

    # -- Sampler protocol ------------------------------------------------------------------------

    def __iter__(self) -> Iterator[int]:
        return iter(self.rank_batches().reshape(-1).tolist())

    def __len__(self) -> int:
        return int(self.rank_batches().size)

    def state_dict(self) -> dict[str, int]:
        """What resuming needs: the seed and the epoch."""
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore :meth:`state_dict`."""
        self.seed = int(state["seed"])
        self.set_epoch(int(state["epoch"]))
