"""The built wheel holds every module and config, so a non-editable install works from any directory."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contains_every_module_and_config(tmp_path):
    """Built from a clean copy of the tracked files, so a stale build/ dir cannot hide a missing package."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, check=True, capture_output=True, text=True).stdout.split()
    source = tmp_path / "src"
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("charfeat-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(source).as_posix() for top in ("charfeat", "hydra_plugins") for p in (source / top).rglob("*.py")}
    configs = {f"charfeat/conf/{p.relative_to(source / 'conf').as_posix()}" for p in (source / "conf").rglob("*")
               if p.suffix in (".yaml", ".py")}
    assert len(modules) > 30 and len(configs) > 15 and "hydra_plugins/charfeat_sweeper/compose_once.py" in modules
    assert "hydra_plugins/__init__.py" not in names  # a namespace package, shared with other plugins
    assert sorted(modules - names) == [] and sorted(configs - names) == []
