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
from charfeat.training import distributed

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


def test_cuda_means_this_processs_gpu_under_torchrun(monkeypatch):
    """trainer.device=cuda (or auto) puts rank r of a node on cuda:<LOCAL_RANK>, never every rank on cuda:0."""
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.pick_device("cuda") == torch.device("cuda:1")
    assert distributed.pick_device("auto") == torch.device("cuda:1")
    assert chosen == [torch.device("cuda:1")] * 2
    assert distributed.pick_device("cpu") == torch.device("cpu")


def average_in_two_processes(rank: int, init_file: str, results: dict) -> None:
    """One of 2 gloo ranks: average the gradients of 40 small parameters, counting all-reduces."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    calls = []
    reduce = dist.all_reduce
    dist.all_reduce = lambda tensor, *args, **kwargs: calls.append(tensor.numel()) or reduce(tensor, *args, **kwargs)
    params = [torch.nn.Parameter(torch.zeros(i + 1, 3)) for i in range(40)]
    for i, param in enumerate(params[:-1]):  # the last one is unused on every rank: its gradient is None
        param.grad = torch.full_like(param, float(rank + i))
    distributed.average_gradients(params)
    results[rank] = ([param.grad.clone() for param in params], calls)
    dist.destroy_process_group()


@pytest.mark.slow
def test_gradients_are_averaged_in_buckets(tmp_path):
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(average_in_two_processes, args=(str(tmp_path / "init"), results), nprocs=2)
        results = dict(results)
    for rank in (0, 1):
        grads, calls = results[rank]
        assert calls == [sum((i + 1) * 3 for i in range(40))]  # one all-reduce for all 40 tensors
        for i, grad in enumerate(grads[:-1]):
            assert torch.equal(grad, torch.full_like(grad, i + 0.5))  # mean of rank + i over ranks 0 and 1
        assert torch.equal(grads[-1], torch.zeros(40, 3))
    assert [len(bucket) for bucket in distributed.buckets([torch.zeros(10)] * 3, max_bytes=80)] == [2, 1]


def teardown_in_a_process(rank: int, init_file: str, results: dict) -> None:
    """One of 2 ranks doing what a run does around its collectives: init, torch's deterministic mode
    (which imports torch._inductor), an all-gather, teardown; then the names of its threads."""
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=Path(init_file).read_text())
    distributed.init()
    torch.use_deterministic_algorithms(True, warn_only=True)
    distributed.gather_objects(torch.ones(3))
    distributed.teardown()
    results[rank] = sorted(path.read_text().strip() for path in Path("/proc/self/task").glob("*/comm"))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="thread names from Linux's /proc")
def test_teardown_stops_gloos_threads(tmp_path):
    """A process group that outlives teardown keeps gloo's worker threads running into interpreter
    shutdown, where one that still holds a collective's tensors aborts the process (SIGABRT, now and then)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        (tmp_path / "port").write_text(str(free.getsockname()[1]))
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(teardown_in_a_process, args=(str(tmp_path / "port"), results), nprocs=2)
        results = dict(results)
    for rank in (0, 1):
        assert not [name for name in results[rank] if "gloo" in name], results[rank]


@pytest.mark.slow
def test_two_processes_with_the_default_head_stop_early_together(cache_dir, tmp_path):
    """BatchNorm and dropout on, early stopping: every rank evaluates the same model and takes rank 0's
    metrics, so they stop at the same epoch; rank 0 alone logs, draws the bar and writes metrics.json."""
    env = {**os.environ, "CHARFEAT_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run([str(torchrun), "--nproc_per_node=2", "--log-dir=logs", "--redirects=3", "-m",
                             "charfeat.train", "sampler.p=4", "logger=none", "trainer.monitor=precision_at_1",
                             "trainer.patience=1", "trainer.plots=false", "hydra.run.dir=run"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    ranks = {int(p.parent.name): p.parent for p in tmp_path.glob("logs/*/attempt_0/*/stderr.log")}
    output = {rank: (d / "stdout.log").read_text() + (d / "stderr.log").read_text() for rank, d in ranks.items()}
    assert result.returncode == 0, output.get(0, result.stderr)[-3000:] + output.get(1, "")[-3000:]

    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] < 10 and last["stale_epochs"] == 1  # early stopping ended it: on both ranks, or no exit 0
    assert output[0].count("early stop:") == 1 and output[0].count(f"epoch {last['epoch']}:") == 1
    assert "train:" in output[0]  # the progress bar
    assert "epoch 1:" not in output[1] and "train:" not in output[1] and "early stop" not in output[1]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["trained"]["checkpoint"]["epoch"] == last["best_epoch"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "run"]  # one output dir, one metrics.json
