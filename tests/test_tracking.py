"""What the tracker sends where: people's photos (the neighbour grid) go to an online W&B run only
when logger.log_images says so; offline runs keep them."""

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from charfeat.config import WandbConfig


class FakeRun:
    """Stands in for wandb.init's run: records what would have been sent."""

    def __init__(self, **_):
        self.logged: list[dict] = []

    def log(self, data, step=None):
        self.logged.append(data)

    def finish(self, exit_code=0):
        pass


@pytest.fixture
def tracker(monkeypatch, tmp_path):
    import wandb

    monkeypatch.setattr(wandb, "init", lambda **kwargs: FakeRun(**kwargs))

    def make(**values):
        node = OmegaConf.merge(OmegaConf.structured(WandbConfig), {"tags": [], **values})
        return instantiate(node, run_config={}, output_dir=str(tmp_path), group=None)

    return make


@pytest.mark.parametrize(("mode", "log_images", "sent"), [
    ("online", None, False), ("offline", None, True), ("online", True, True), ("offline", False, False)])
def test_images_reach_an_online_run_only_when_asked(tracker, tmp_path, mode, log_images, sent):
    grid = tmp_path / "neighbours.png"
    Image.new("RGB", (4, 4)).save(grid)
    run = tracker(mode=mode, **({} if log_images is None else {"log_images": log_images}))
    run.log_images({"plots/neighbours": grid})
    run.log({"val/precision_at_1": 0.5})
    assert any("plots/neighbours" in entry for entry in run.run.logged) == sent
    assert {"val/precision_at_1": 0.5} in run.run.logged  # metrics go either way
