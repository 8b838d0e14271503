"""Fetch a backbone's model files ahead of a run, for clusters whose compute nodes cannot reach the hub.

    python -m charfeat.download backbone=qwen3_vl_2b [revision=<branch|tag|commit>]
    python -m charfeat.download backbone=qwen3_vl_8b target_dir=/shared/models/qwen3-vl-8b

Without ``target_dir`` the files go into the Hugging Face cache (``HF_HOME``, by default
``~/.cache/huggingface``): a run on any machine that reads the same cache loads them with no
network, and ``HF_HUB_OFFLINE=1`` skips even its one request for updates. With ``target_dir`` they
go into that directory, which runs then name as ``backbone.name_or_path``. Only what
``from_pretrained`` reads is fetched: config, safetensors weights, tokenizer and processor files.
"""

import logging
from pathlib import Path

from omegaconf import DictConfig

from charfeat.cli import hydra_main
from charfeat.config import register_configs
from charfeat.errors import ConfigError

log = logging.getLogger(__name__)


def download(cfg: DictConfig) -> Path:
    """Fetch ``cfg.backbone``'s files (at ``cfg.revision``) into the HF cache or ``cfg.target_dir``; return the dir."""
    from charfeat.models.backbone.hub import ModelNotAvailable, check_repo_id, fetch_snapshot, hub_unreachable

    name, revision = cfg.backbone.name_or_path, cfg.revision or cfg.backbone.revision
    if cfg.backbone.build_random is not None or Path(name).expanduser().is_dir():
        raise ConfigError(f"backbone.name_or_path={name} is a local directory (or built locally): nothing to download")
    check_repo_id(name)
    unreachable = hub_unreachable(name, revision)
    if unreachable is not None:
        raise ModelNotAvailable(f"cannot fetch {name}: the hub cannot be reached ({unreachable}); run this where "
                                "it can, into a cache or directory the offline machines read")
    log.info("fetching %s%s into %s", name, f" at {revision}" if revision else "",
             cfg.target_dir or "the Hugging Face cache")
    folder = Path(fetch_snapshot(name, revision, cfg.target_dir))
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    log.info("%s: %.2f GB in %s", name, size / 1e9, folder)
    return folder


def offline_command(cfg: DictConfig, folder: Path) -> str:
    """The training command that loads what was just fetched, with no network."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    args = [f"backbone={hydra_cfg.runtime.choices['backbone']}"]
    if cfg.target_dir:
        return " ".join(["python -m charfeat.train", *args, f"backbone.name_or_path={folder}"])
    if any(override.startswith("backbone.name_or_path=") for override in hydra_cfg.overrides.task):
        args.append(f"backbone.name_or_path={cfg.backbone.name_or_path}")
    if cfg.revision or cfg.backbone.revision:
        args.append(f"backbone.revision={cfg.revision or cfg.backbone.revision}")
    return " ".join(["HF_HUB_OFFLINE=1 python -m charfeat.train", *args])


register_configs()


@hydra_main("download")
def main(cfg: DictConfig) -> None:
    folder = download(cfg)
    print(f"Runs load it offline (same HF_HOME, if it is the cache): {offline_command(cfg, folder)}")


if __name__ == "__main__":
    main()
