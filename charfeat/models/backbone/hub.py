"""Where a backbone's files are: a local directory, or a Hugging Face hub snapshot, found in seconds.

``from_pretrained`` on a hub id with no network retries every file request with backoff (about
50 s and two dozen warnings here) before saying it could not connect. So before loading, charfeat
resolves ``backbone.name_or_path`` itself: a directory is used as is; for a hub id one request,
bounded by ``PROBE_TIMEOUT``, tells whether the hub answers. If it does, ``snapshot_download``
brings the cache up to date (what is there already is not fetched again); if not, or with
``HF_HUB_OFFLINE=1``, the cached snapshot is used, and without one the error says what to do.
Either way ``from_pretrained`` then loads a local directory and never touches the network.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from charfeat.errors import UserError

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 2.0  # seconds for the hub to answer one request, DNS included (it answers in a fraction)
# what from_pretrained reads for the model and the processor: config, weights, tokenizer, chat template
MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "*.jinja"]


class ModelNotAvailable(UserError):
    """The backbone's files are neither on disk nor reachable."""


def local_snapshot(name_or_path: str, revision: str | None) -> str:
    """A local directory holding ``name_or_path`` at ``revision``, for ``from_pretrained``.

    A directory is returned as is. A hub id comes from the hub when it answers (downloaded or
    updated in the Hugging Face cache), else from that cache; if neither has it: ModelNotAvailable.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path)
    check_repo_id(name_or_path)
    unreachable = hub_unreachable(name_or_path, revision)
    if unreachable is None:
        return fetch_snapshot(name_or_path, revision)
    cached = cached_snapshot(name_or_path, revision)
    if cached is None:
        raise ModelNotAvailable(not_available_message(name_or_path, revision, unreachable))
    log.info("%s: the hub is not reachable (%s); loading the cached snapshot %s", name_or_path, unreachable, cached)
    return cached


def check_available(name_or_path: str, revision: str | None, build_random: str | None) -> None:
    """Raise ModelNotAvailable now if the backbone can be neither read from disk nor fetched; downloads
    nothing. For a run to call before it reads its data, so that an offline node says so in seconds
    instead of after listing a bucket."""
    if build_random is not None or Path(name_or_path).expanduser().is_dir():
        return
    check_repo_id(name_or_path)
    unreachable = hub_unreachable(name_or_path, revision)
    if unreachable is not None and cached_snapshot(name_or_path, revision) is None:
        raise ModelNotAvailable(not_available_message(name_or_path, revision, unreachable))


def check_repo_id(name_or_path: str) -> None:
    """Not a directory: it must be a hub id (organisation/name)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name_or_path)
    except HFValidationError:
        raise ModelNotAvailable(f"backbone.name_or_path={name_or_path}: no such directory, and not a hub id "
                                "(organisation/name)") from None


def hub_unreachable(repo_id: str, revision: str | None) -> str | None:
    """None when the hub answers for ``repo_id`` within PROBE_TIMEOUT, else why not.

    A model or revision the hub does not have is a ModelNotAvailable, not an unreachable hub.
    The request runs in a daemon thread, so a resolver that hangs cannot hold the run either.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    outcome: dict[str, BaseException | None] = {}

    def probe() -> None:
        from huggingface_hub import HfApi

        try:
            HfApi().repo_info(repo_id, revision=revision, timeout=PROBE_TIMEOUT)
            outcome["error"] = None
        except BaseException as err:  # reported to the caller's thread below
            outcome["error"] = err

    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT + 0.5)
    if "error" not in outcome:
        return f"no answer from {constants.ENDPOINT} within {PROBE_TIMEOUT:.0f} s"
    return _unreachable_reason(repo_id, revision, outcome["error"])


def _unreachable_reason(repo_id: str, revision: str | None, error: BaseException | None) -> str | None:
    """The probe's error as a reason the hub is unreachable; the hub's own "no" as ModelNotAvailable."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if error is None:
        return None
    if isinstance(error, GatedRepoError):
        raise ModelNotAvailable(f"backbone.name_or_path={repo_id}: the hub holds this model behind a licence; "
                                "accept it on the model's page and log in (hf auth login, or HF_TOKEN)") from None
    if isinstance(error, RevisionNotFoundError):
        raise ModelNotAvailable(f"backbone.revision={revision}: {repo_id} has no such branch, tag or commit") from None
    if isinstance(error, RepositoryNotFoundError):
        raise ModelNotAvailable(f"backbone.name_or_path={repo_id}: no such model on the hub (nor a local "
                                "directory); a private one needs hf auth login or HF_TOKEN") from None
    return f"{type(error).__name__}: {error}"


def cached_snapshot(repo_id: str, revision: str | None) -> str | None:
    """The cached snapshot directory of ``repo_id`` at ``revision`` if it holds a config and every weight file."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=MODEL_FILES, local_files_only=True))
    except LocalEntryNotFoundError:
        return None
    missing = missing_files(folder)
    if missing:
        log.warning("%s: the cached snapshot %s lacks %s (an interrupted download?)", repo_id, folder, missing)
        return None
    return str(folder)


def missing_files(folder: Path) -> list[str]:
    """What a model directory lacks of its config and weights (every shard its index lists)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weights = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        weights = ["model.safetensors"]
    return [name for name in ["config.json", *weights] if not (folder / name).is_file()]


def fetch_snapshot(repo_id: str, revision: str | None, target_dir: str | None = None) -> str:
    """Download (or bring up to date) ``repo_id``'s model files into the Hugging Face cache, or into
    ``target_dir``; returns the directory. Shows huggingface_hub's progress bars while it runs."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    quiet = are_progress_bars_disabled()
    if quiet and os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") is None:
        enable_progress_bars()  # charfeat turned them off for loading; a download of GBs needs one
    try:
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=MODEL_FILES, local_dir=target_dir)
    finally:
        if quiet:
            disable_progress_bars()
    missing = missing_files(Path(folder))
    if missing:
        raise ModelNotAvailable(f"{repo_id}: the downloaded snapshot {folder} lacks {missing}")
    return str(folder)


def not_available_message(repo_id: str, revision: str | None, unreachable: str) -> str:
    """What is wrong and the two ways out: fetch it ahead, or point at a local copy."""
    from huggingface_hub import constants

    fetch = f"python -m charfeat.download backbone.name_or_path={repo_id}"
    if revision:
        fetch += f" revision={revision}"
    return (f"backbone.name_or_path={repo_id}{f'@{revision}' if revision else ''} is not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}) and the hub cannot be reached ({unreachable}). Fetch it ahead where the "
            f"hub is reachable, into a cache this machine reads (HF_HOME): {fetch}; or give a local copy: "
            "backbone.name_or_path=<dir>")
