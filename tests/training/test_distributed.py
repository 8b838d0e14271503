"""torchrun with 2 CPU processes (gloo) follows the same loss trajectory as one process with the
same global batch, and only rank 0 writes outputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from charfeat.config import PKSamplerConfig, build
from charfeat.data.sampler import SamplerConfigError

# dropout off and no input BatchNorm: both would differ per process by design (per-process RNG,
# per-process batch statistics: torch has no SyncBatchNorm on CPU)
COMMON = ["logger=none", "trainer.epochs=2", "trainer.plots=false", "head.dropout=0", "head.input_norm=none"]
TOLERANCE = 1e-4  # float reductions in another order (per-rank head forward, gathered batch)


def test_ranks_split_each_global_batch_without_overlap():
    labels = [c for c in range(6) for _ in range(10)]
    single = list(build(PKSamplerConfig, p=4, k=3)(labels, seed=5))
    ranks = [list(build(PKSamplerConfig, p=2, k=3)(labels, seed=5, rank=r, world_size=2)) for r in (0, 1)]
    assert len(single) == len(ranks[0]) == len(ranks[1])
    for whole, first, second in zip(single, *ranks):
        assert first + second == whole and not set(first) & set(second)
        assert not {labels[i] for i in first} & {labels[i] for i in second}


def test_too_few_classes_for_all_ranks_is_an_error():
    with pytest.raises(SamplerConfigError, match=r"sampler.p=2 x 2 processes but only 3 class"):
        build(PKSamplerConfig, p=2, k=2)([0, 0, 1, 1, 2, 2], seed=0, world_size=2)


@pytest.mark.slow
def test_two_processes_match_one(cache_dir, tmp_path):
    env = {**os.environ, "CHARFEAT_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run([str(torchrun), "--nproc_per_node=2", "-m", "charfeat.train", *COMMON, "sampler.p=4",
                          "hydra.run.dir=two"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "charfeat.train", *COMMON, "sampler.p=8", "hydra.run.dir=one"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]

    histories = [torch.load(tmp_path / run / "checkpoints" / "last.pt", weights_only=False)["loss_history"]
                 for run in ("two", "one")]
    assert len(histories[0]) == len(histories[1]) > 5
    torch.testing.assert_close(torch.tensor(histories[0]), torch.tensor(histories[1]), rtol=TOLERANCE, atol=TOLERANCE)
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text())["trained"] for run in ("two", "one")]
    assert metrics[0]["precision_at_1"] == pytest.approx(metrics[1]["precision_at_1"], abs=0.02)

    # rank 0 alone wrote an output dir: nothing else appeared beside the two runs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
    assert (tmp_path / "two" / ".hydra").is_dir()
