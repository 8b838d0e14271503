"""A trainable backbone under backbone.max_tokens_per_batch: a P×K batch runs through the backbone in
chunks (gradient cache), with the gradients of one pass over the whole batch; a batch that runs out of
accelerator memory runs again in two chunks instead of ending the run."""

import logging

import pytest
import torch

import charfeat.training.loop as loop
from charfeat.train import train

pytestmark = pytest.mark.slow
LORA = ("logger=none", "trainer.epochs=1", "trainer.plots=false", "data.train_per_class=8",
        "data.val_per_class=2", "data.num_classes=4", "sampler.p=4", "sampler.k=4", "backbone.train=lora",
        "backbone.lora_dropout=0", "data.num_workers=0")


def first_gradients(compose_cfg, tmp_path, monkeypatch, name, *overrides):
    """The gradients of the run's first optimizer step (before clipping): Adam would turn fp32 noise
    in near-zero gradients into whole learning-rate steps, so weights cannot be compared."""
    seen = []
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_",
                        lambda params, *a, **k: seen.append([p.grad.clone() for p in params]) or clip(params, *a, **k))
    cfg = compose_cfg(*LORA, "trainer.max_steps=1", *overrides)
    cfg.paths.output_dir = str(tmp_path / name)
    train(cfg)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    return seen[0]


def assert_same(a, b):
    assert len(a) == len(b)
    scale = max(g.abs().max() for g in a)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=1e-5 * scale, rtol=1e-3)


def test_chunks_under_a_token_budget_train_as_the_whole_batch(compose_cfg, tmp_path, monkeypatch):
    whole = first_gradients(compose_cfg, tmp_path, monkeypatch, "whole")
    chunked_batches = []
    real = loop.Trainer._chunked_backward
    monkeypatch.setattr(loop.Trainer, "_chunked_backward",
                        lambda self, chunks, *a: chunked_batches.append(len(chunks)) or real(self, chunks, *a))
    chunked = first_gradients(compose_cfg, tmp_path, monkeypatch, "chunked", "backbone.max_tokens_per_batch=300")
    assert len(chunked_batches) == 1 and chunked_batches[0] >= 3  # 16 images of ~50 tokens: 5 or more chunks
    assert_same(chunked, whole)
    with pytest.raises(AssertionError):  # the comparison can fail
        assert_same(first_gradients(compose_cfg, tmp_path, monkeypatch, "other", "loss.margin=0.5"), whole)


def test_each_chunk_replays_its_own_dropout(compose_cfg, tmp_path, monkeypatch):
    """With LoRA dropout, a chunk's second pass (with gradients) must see its first pass's masks."""
    passes = []
    real = loop.Trainer._pool
    monkeypatch.setattr(loop.Trainer, "_pool", lambda self, inputs: passes.append(real(self, inputs)) or passes[-1])
    first_gradients(compose_cfg, tmp_path, monkeypatch, "dropout", "backbone.lora_dropout=0.5",
                    "backbone.max_tokens_per_batch=300")
    chunks = len(passes) // 2
    assert chunks >= 3
    for first, second in zip(passes[:chunks], passes[chunks:2 * chunks]):
        assert torch.equal(first, second.detach())


def test_an_out_of_memory_training_batch_runs_again_in_two_chunks(compose_cfg, tmp_path, monkeypatch, caplog):
    whole = first_gradients(compose_cfg, tmp_path, monkeypatch, "whole")
    real = loop.Trainer._pool

    def pool_that_fits_eight(self, inputs):
        if torch.is_grad_enabled() and len(inputs["input_ids"]) > 8:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, inputs)

    monkeypatch.setattr(loop.Trainer, "_pool", pool_that_fits_eight)
    with caplog.at_level(logging.WARNING):
        retried = first_gradients(compose_cfg, tmp_path, monkeypatch, "retried")
    assert caplog.text.count("out of memory on a training batch of 16 images") == 1
    assert_same(retried, whole)


def test_a_batch_larger_than_embed_batch_size_trains_in_one_pass(compose_cfg, tmp_path, monkeypatch):
    chunked = []
    monkeypatch.setattr(loop.Trainer, "_chunked_backward", lambda self, *a: chunked.append(1))
    first_gradients(compose_cfg, tmp_path, monkeypatch, "big", "trainer.embed_batch_size=4")  # P×K = 16 images
    assert chunked == []
