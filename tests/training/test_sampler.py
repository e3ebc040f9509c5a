"""PK sampler: batch structure, coverage, determinism, DDP shares, errors."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from vreid.core.errors import ConfigError
from vreid.data.sampler import PKSampler


def uneven_labels(n_ids: int = 30, seed: int = 1) -> list[int]:
    sizes = np.random.default_rng(seed).integers(1, 25, size=n_ids)
    sizes[:3] = [1, 2, 3]  # some identities with fewer than K = 4 images
    return np.repeat(np.arange(n_ids) * 7 + 100, sizes).tolist()  # non-contiguous ids


def check_batch(batch: np.ndarray, labels: list[int], p: int, k: int) -> None:
    ids = Counter(labels[i] for i in batch)
    assert len(ids) == p, ids
    assert set(ids.values()) == {k}


@pytest.mark.parametrize(("p", "k"), [(8, 4), (4, 2), (5, 3)])
def test_batches_have_p_identities_with_k_images(p: int, k: int) -> None:
    labels = uneven_labels()
    sampler = PKSampler(labels, p, k, seed=3)
    indices = list(sampler)
    assert len(indices) == len(sampler)
    assert len(indices) % (p * k) == 0
    for batch in np.asarray(indices).reshape(-1, p * k):
        check_batch(batch, labels, p, k)


def test_every_identity_seen_each_epoch_and_small_ids_use_replacement() -> None:
    labels = uneven_labels()
    sampler = PKSampler(labels, 8, 4, seed=0)
    for epoch in range(5):
        sampler.set_epoch(epoch)
        seen = [labels[i] for i in sampler]
        assert set(seen) == set(labels)
    # the identity with one image appears K times in its batch: the same index repeated
    single = next(lab for lab, n in Counter(labels).items() if n == 1)
    (only_index,) = [i for i, lab in enumerate(labels) if lab == single]
    batches = sampler.epoch_batches()
    with_single = [b for b in batches if only_index in b]
    assert with_single
    assert all(list(b).count(only_index) == 4 for b in with_single)


def test_epoch_uses_most_images_of_large_identities() -> None:
    labels = uneven_labels()
    sampler = PKSampler(labels, 8, 4)
    distinct = len(set(sampler.epoch_batches().ravel().tolist()))
    usable = sum((n // 4) * 4 for n in Counter(labels).values())
    assert distinct >= 0.95 * usable
    # about one batch per P chunks of K images: nothing is drawn twice beyond the final fill-up
    chunks = sum(max(1, n // 4) for n in Counter(labels).values())
    assert 0.9 * chunks / 8 <= len(sampler.epoch_batches()) <= -(-chunks // 8)


def test_deterministic_under_seed_and_epoch() -> None:
    labels = uneven_labels()
    a = PKSampler(labels, 8, 4, seed=7)
    b = PKSampler(labels, 8, 4, seed=7)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(PKSampler(labels, 8, 4, seed=8)) != list(PKSampler(labels, 8, 4, seed=7))
    state = a.state_dict()
    c = PKSampler(labels, 8, 4, seed=0)
    c.load_state_dict(state)
    assert list(c) == list(a)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_ranks_get_disjoint_equal_shares(world_size: int) -> None:
    labels = uneven_labels()
    samplers = [
        PKSampler(labels, 6, 4, seed=2, rank=r, world_size=world_size) for r in range(world_size)
    ]
    for s in samplers:
        s.set_epoch(4)
    shares = [s.rank_batches() for s in samplers]
    assert len({len(share) for share in shares}) == 1  # equal lengths
    assert len({len(s) for s in samplers}) == 1
    plan = samplers[0].epoch_batches()
    assert len(plan) % world_size == 0
    # rank r holds rows r, r + W, … of the common plan: together exactly the plan, no row twice
    interleaved = np.empty_like(plan)
    for r, share in enumerate(shares):
        interleaved[r::world_size] = share
    assert np.array_equal(interleaved, plan)
    for share in shares:
        for batch in share:
            check_batch(batch, labels, 6, 4)
    union = {labels[i] for share in shares for i in share.ravel()}
    assert union == set(labels)


def test_too_few_identities_is_a_config_error() -> None:
    with pytest.raises(
        ConfigError, match=r"3 identities but a batch needs train.p=8; set train.p to at most 3"
    ):
        PKSampler([0, 0, 1, 1, 2, 2], 8, 4)
    with pytest.raises(ConfigError, match="rank"):
        PKSampler([0, 1, 2], 2, 2, rank=2, world_size=2)


def test_works_as_dataloader_sampler() -> None:
    labels = uneven_labels(12)
    data = TensorDataset(torch.arange(len(labels)), torch.tensor(labels))
    sampler = PKSampler(labels, 4, 4)
    loader = DataLoader(data, batch_size=sampler.batch_size, sampler=sampler)
    n = 0
    for _, batch_labels in loader:
        counts = Counter(batch_labels.tolist())
        assert len(counts) == 4
        assert set(counts.values()) == {4}
        n += 1
    assert n * 16 == len(sampler)


def test_tensor_and_array_labels_group_by_value() -> None:
    labels = uneven_labels(10)
    reference = list(PKSampler(labels, 4, 2, seed=5))
    assert list(PKSampler(torch.tensor(labels), 4, 2, seed=5)) == reference
    assert list(PKSampler(np.asarray(labels), 4, 2, seed=5)) == reference


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 12), min_size=2, max_size=25),
    p=st.integers(2, 6),
    k=st.integers(1, 5),
    world_size=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_sampler_properties(sizes: list[int], p: int, k: int, world_size: int, seed: int) -> None:
    labels = np.repeat(np.arange(len(sizes)), sizes).tolist()
    if len(sizes) < p:
        with pytest.raises(ConfigError):
            PKSampler(labels, p, k)
        return
    samplers = [
        PKSampler(labels, p, k, seed=seed, rank=r, world_size=world_size) for r in range(world_size)
    ]
    shares = [s.rank_batches() for s in samplers]
    assert len({len(share) for share in shares}) == 1
    assert len(shares[0]) >= 1
    seen = set()
    for share in shares:
        for batch in share:
            check_batch(batch, labels, p, k)
            seen.update(labels[i] for i in batch)
    assert seen == set(labels)
