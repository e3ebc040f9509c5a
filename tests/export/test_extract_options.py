"""Extractor's speed options (channels-last, bf16 autocast, decoding workers) keep the features."""

from __future__ import annotations

import pytest
import torch

from vreid.inference.extract import Extractor


@pytest.fixture(scope="module")
def reference(tiny_checkpoint, images):
    plain = Extractor(tiny_checkpoint, device="cpu", batch_size=2, channels_last=False)
    assert not plain.channels_last
    return plain(images)


def test_channels_last_is_the_cpu_default_and_gives_the_same_features(
    tiny_checkpoint, images, reference
):
    fast = Extractor(tiny_checkpoint, device="cpu", batch_size=5)
    assert fast.channels_last
    assert torch.allclose(fast(images), reference, atol=1e-5)


def test_decoding_workers_keep_order_and_values(tiny_checkpoint, images, reference):
    workers = Extractor(
        tiny_checkpoint, device="cpu", batch_size=2, num_workers=1, prefetch_factor=3
    )
    assert torch.allclose(workers(images), reference, atol=1e-5)


def test_bf16_autocast_is_close_but_not_exact(tiny_checkpoint, images, reference):
    bf16 = Extractor(tiny_checkpoint, device="cpu", batch_size=5, amp="bf16")
    feats = bf16(images)
    assert feats.dtype == torch.float32
    rel = ((feats - reference).norm(dim=1) / reference.norm(dim=1)).max()
    assert 0 < float(rel) < 3e-2  # bf16 keeps 8 mantissa bits: ~1e-2 relative at most here


def test_unknown_amp_is_refused(tiny_checkpoint):
    with pytest.raises(ValueError, match="amp must be"):
        Extractor(tiny_checkpoint, device="cpu", amp="int8")


def test_auto_workers_decode_files_in_workers_only_when_there_is_more_than_a_batch(
    tiny_checkpoint, images, reference, tmp_path
):
    from vreid.inference.extract import auto_workers

    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])
    assert auto_workers(paths, 2) >= 1
    assert auto_workers(paths, 5) == 0  # one batch: nothing to overlap
    assert auto_workers(images, 2) == 0  # in memory: nothing to decode
    feats = Extractor(tiny_checkpoint, device="cpu", batch_size=2)(paths)  # workers by default
    assert torch.allclose(feats, reference, atol=1e-5)
