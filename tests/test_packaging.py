"""The configs ship inside the built package, so a non-editable install works from any directory."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


@pytest.mark.slow
def test_wheel_contains_every_config(tmp_path):
    from importlib.resources import files

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
                    str(Path(__file__).resolve().parents[1])], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("charfeat-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    conf = files("charfeat.conf")
    expected = {f"charfeat/conf/{group.name}/{option.name}" for group in conf.iterdir() if group.is_dir()
                for option in group.iterdir() if option.name.endswith(".yaml")}
    assert "charfeat/conf/train.yaml" in names and "charfeat/conf/__init__.py" in names
    assert len(expected) > 15 and expected <= names
    assert "charfeat/train.py" in names and "charfeat/backbone/model.py" in names
