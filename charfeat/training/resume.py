"""Resuming a run: which checkpoint it continues, and with which config.

The checkpoint is ``ckpt_path``, or the run dir's own ``checkpoints/last.pt`` when the run dir
already holds an unfinished run (a requeued SLURM job re-runs the same command line in the same
dir; it must continue, not start again). The config is the checkpoint's, with this command line's
overrides on top, each parsed by Hydra's own override parser and applied to the keys it sets: a
key (``optim.lr=...``), a group (``head=linear``: the whole ``head`` node; ``~logger``: none), a
preset of global keys (``experiment=...``: every key its file sets, and the groups it overrides).
An override that cannot be mapped onto keys is an error that names it; each change is logged.
"""

from __future__ import annotations

import copy
import logging
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from charfeat.errors import ConfigError

log = logging.getLogger(__name__)

# belong to this run, not to the one being resumed: where it writes, what it resumes, when it pauses
RUN_LOCAL_KEYS = ("paths", "ckpt_path", "trainer.max_steps")


def own_checkpoint(output_dir: Path) -> Path | None:
    """``checkpoints/last.pt`` of an unfinished run (no metrics.json) in ``output_dir``, if there is one."""
    last = output_dir / "checkpoints" / "last.pt"
    return last if last.is_file() and not (output_dir / "metrics.json").exists() else None


def resume_path(cfg: DictConfig) -> str | None:
    """The checkpoint this run continues: its own unfinished ``last.pt`` first, else ``cfg.ckpt_path``."""
    own = own_checkpoint(Path(cfg.paths.output_dir))
    if own is None:
        return cfg.ckpt_path
    log.warning("this run's output dir already holds an unfinished run (a requeued or restarted job): "
                "resuming from its own %s%s", own, f" rather than ckpt_path={cfg.ckpt_path}" if cfg.ckpt_path else "")
    return str(own)


@contextmanager
def config_repository(searchpath: list[str]):
    """Hydra's repository of config groups (the running app's, or charfeat's own when called from
    Python), with the command line's ``hydra.searchpath`` (a user's own experiment files)."""
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        yield with_searchpath(GlobalHydra.instance().config_loader(), searchpath)
        return
    from hydra import initialize_config_module

    with initialize_config_module(config_module="charfeat.conf", version_base="1.3"):
        yield with_searchpath(GlobalHydra.instance().config_loader(), searchpath)


def searchpath(parsed: list) -> list[str]:
    """``hydra.searchpath`` as the running app has it (Hydra keeps hydra.* out of the task's overrides),
    or as given among ``parsed`` overrides (a call from Python)."""
    from hydra.core.hydra_config import HydraConfig

    given = next((list(o.value()) for o in parsed if o.key_or_group == "hydra.searchpath"), None)
    if given is None and HydraConfig.initialized():
        given = list(HydraConfig.get().searchpath)
    return given or []


def with_searchpath(loader, searchpath: list[str]):
    """The loader's repository, or one that also searches ``searchpath`` (before the schemas, as Hydra does)."""
    if not searchpath:
        return loader.repository
    from hydra._internal.config_repository import ConfigRepository  # Hydra's own class (hydra-core < 1.4)

    search = copy.deepcopy(loader.config_search_path)
    schema = search.get_path().pop(-1)
    for path in searchpath:
        search.append(provider="hydra.searchpath in command-line", path=path)
    search.append(schema.provider, schema.path)
    return ConfigRepository(search)


def resumed_config(cfg: DictConfig, overrides: list[str], saved: dict, ckpt_path: str) -> DictConfig:
    """The checkpoint's config ``saved`` with this run's command-line ``overrides`` on top: they win, the
    rest is kept from the checkpoint, so resuming does not quietly change a run's settings."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    merged = OmegaConf.create(with_new_keys(saved, OmegaConf.to_container(cfg, resolve=False)))
    parsed = OverridesParser.create().parse_overrides(overrides)
    unchanged = []
    with config_repository(searchpath(parsed)) as repository:
        for override in parsed:
            try:
                paths = override_paths(override, repository)
            except ValueError as err:
                raise ConfigError(f"ckpt_path={ckpt_path}: the override {override.input_line!r} cannot be applied "
                                  f"on resume: {err}; resume without it, or set the keys it changes one by one") from None
            before = OmegaConf.to_container(merged, resolve=False)
            for path in paths:
                OmegaConf.update(merged, path, OmegaConf.select(cfg, path), merge=False, force_add=True)
            if paths and not path_is_run_local(paths) and OmegaConf.to_container(merged, resolve=False) == before:
                unchanged.append(override.input_line)
    if unchanged:
        log.info("resume: the checkpoint's config already has %s", " ".join(unchanged))
    for key in RUN_LOCAL_KEYS:
        OmegaConf.update(merged, key, OmegaConf.select(cfg, key), merge=False, force_add=True)
    for change in config_changes(saved, OmegaConf.to_container(merged, resolve=True, enum_to_str=True)):
        if not change.startswith(RUN_LOCAL_KEYS):
            log.info("resume: the command line wins: %s", change)
    return merged


def with_new_keys(saved: dict, current: dict, prefix: str = "") -> dict:
    """``saved`` plus the keys charfeat added to a node's schema since the checkpoint was written, at
    this run's values (its defaults unless the command line sets them); a node is the same node when it
    builds the same ``_target_`` (a group option the checkpoint did not choose adds nothing)."""
    out = dict(saved)
    if isinstance(saved.get("_target_"), str) and saved.get("_target_") != current.get("_target_"):
        return out
    for key, value in current.items():
        if key not in saved:
            out[key] = value
            log.info("resume: %s%s is not in the checkpoint's config (a key added since): %r", prefix, key, value)
        elif isinstance(saved[key], dict) and isinstance(value, dict):
            out[key] = with_new_keys(saved[key], value, f"{prefix}{key}.")
    return out


def path_is_run_local(paths: list[str]) -> bool:
    return all(path.startswith(RUN_LOCAL_KEYS) for path in paths)


def override_paths(override, repository) -> list[str]:
    """The config paths an override sets; [] for Hydra's own keys. ValueError when it cannot be told."""
    key = override.key_or_group
    if key == "hydra" or key.startswith(("hydra.", "hydra/")):
        return []
    if not repository.group_exists(key):
        return [key]  # a key; deleting one (~a.b) already failed at composition
    if override.package is not None or override.is_delete():
        return [node_path(override.package, key)]
    option = override.value()
    if not isinstance(option, str):
        raise ValueError(f"it selects {option!r}, not one option of group {key}")
    return option_paths(key, option, repository)


def node_path(package: str | None, group: str) -> str:
    """Where a group's config lands: its package (without ``_global_.``), else the group's own path."""
    path = (group.replace("/", ".") if not package else package).removeprefix("_global_").lstrip(".")
    if not path:
        raise ValueError(f"it puts {group} at the top level of the config")
    return path


def option_paths(group: str, option: str, repository) -> list[str]:
    """The paths ``<group>=<option>`` sets: the group's node, or every key of a ``_global_`` preset
    (and, recursively, the groups its defaults list overrides)."""
    from hydra.core.default_element import ConfigDefault

    loaded = repository.load_config(f"{group}/{option}")
    if loaded is None:
        raise ValueError(f"no config {group}/{option} in charfeat's config groups")
    package = (loaded.header or {}).get("package")
    if package != "_global_":
        return [node_path(package, group)]
    paths = [path for path in leaf_paths(OmegaConf.to_container(loaded.config)) if path.split(".")[0] != "hydra"]
    for default in loaded.defaults_list or []:
        if default.is_self():
            continue
        if isinstance(default, ConfigDefault):  # another config included by path: its node
            paths.append(node_path(default.package, default.path.lstrip("/").rpartition("/")[0]))
            continue
        subgroup = default.group.lstrip("/")
        if subgroup.startswith("hydra"):
            continue
        if default.package is not None or not default.get_name():
            paths.append(node_path(default.package, subgroup))
        else:
            paths += option_paths(subgroup, default.get_name(), repository)
    return paths


def leaf_paths(node: dict, prefix: str = "") -> list[str]:
    paths = []
    for key, value in node.items():
        if key == "defaults":
            continue
        if isinstance(value, dict) and value:
            paths += leaf_paths(value, f"{prefix}{key}.")
        else:
            paths.append(f"{prefix}{key}")
    return paths


def config_changes(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Keys whose values differ between a checkpoint's config and this run's."""
    changes = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += config_changes(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changes
