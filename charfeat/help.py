"""``--help`` of an entry point: the groups it chooses from, then every key with its value and meaning.

The meanings are the comments the schemas in ``charfeat/config.py`` carry beside (or above) each
field, so a key is described where its default is stated, once; an option's summary is the first
comment line of its YAML file. The template is ``hydra.help.template`` (``conf/hydra/help/``),
filled as Hydra fills it (``string.Template``), but composing the config only once: Hydra's own
help builds a config repository for every group to list them all, which takes seconds.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import io
import string
import tokenize
import typing
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from charfeat.config import Choice

TARGET = "the class these keys configure"
HIDDEN = ("_partial_",)  # set by the schema for the code's sake, never by a user
COLUMN = 44  # where descriptions start, unless the key and value are longer


def render_help(config_name: str, overrides: list[str]) -> str:
    """The help text of ``python -m charfeat.<config_name> [overrides] --help``."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from charfeat.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="charfeat.conf", version_base="1.3", job_name=config_name):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        template = cfg.hydra.help.template  # resolves the header (${charfeat.summary:}), footer and groups
        choices = dict(cfg.hydra.runtime.choices)
    with_hydra = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    del with_hydra["hydra"]
    OmegaConf.set_struct(cfg, False)
    del cfg["hydra"]
    described = "\n".join(describe(cfg, with_hydra, choices))
    return string.Template(template).safe_substitute(CONFIG=described)


def describe(node: DictConfig, plain: dict, choices: dict[str, str], depth: int = 0) -> list[str]:
    """One line per key of ``node`` (``plain``: its unresolved values): ``key: value  # meaning``;
    a group's header line names the option chosen and that option's summary."""
    schema = OmegaConf.get_type(node)
    meanings = key_descriptions(schema) if dataclasses.is_dataclass(schema) else {}
    rows = []
    for key, value in plain.items():
        if key in HIDDEN:
            continue
        meaning = meanings.get(key, TARGET if key == "_target_" else "")
        if depth == 0 and key in choices and choices[key] is not None:
            meaning = f"{key}={choices[key]}: {option_summary(key, choices[key])}"
        if isinstance(value, dict):
            rows.append(_row(depth, f"{key}:", meaning))
            rows += describe(node[key], value, choices, depth + 1)
        else:
            rows.append(_row(depth, f"{key}: {_scalar(value)}", meaning))
    return rows


def _row(depth: int, text: str, meaning: str) -> str:
    left = "  " * depth + text
    return f"{left.ljust(COLUMN)}  # {meaning}" if meaning else left


def _scalar(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(item) for item in value) + "]"
    return str(value) if value != "" else "''"


@functools.cache
def key_descriptions(schema: type) -> dict[str, str]:
    """{field: one-line meaning} of a schema dataclass, each from the nearest class in its MRO whose
    source comments the field; a choice key also lists its values."""
    types = {f.name: f.type for f in dataclasses.fields(schema)}
    meanings = {}
    for name, kind in types.items():
        for cls in schema.__mro__:
            if dataclasses.is_dataclass(cls) and (cls.__name__, name) in _field_comments(_source_file(cls)):
                meanings[name] = _field_comments(_source_file(cls))[(cls.__name__, name)]
                break
        choice = next((arg for arg in (kind, *typing.get_args(kind)) if isinstance(arg, type)
                       and issubclass(arg, Choice)), None)
        if choice is not None:
            values = " | ".join(choice.__members__)
            meanings[name] = f"{meanings[name]} ({values})" if name in meanings else values
    return meanings


def _source_file(cls: type) -> str:
    import inspect

    return inspect.getsourcefile(cls)


@functools.cache
def _field_comments(path: str) -> dict[tuple[str, str], str]:
    """{(class, field): comment} for every annotated class attribute in a Python file: the comment
    at the end of its line, else the first line of the comment block right above it."""
    source = Path(path).read_text(encoding="utf-8")
    comments = {}  # line number -> (text, the line holds nothing else)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = (token.string.lstrip("#").strip(), token.line.lstrip().startswith("#"))
    found = {}
    for cls in (node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ClassDef)):
        for stmt in cls.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            text, alone = comments.get(stmt.end_lineno, ("", True))
            line = stmt.lineno - 1
            while alone and line in comments and comments[line][1]:
                text, line = comments[line][0], line - 1  # climbs to the block's first line
            if text:
                found[(cls.name, stmt.target.id)] = text
    return found


@functools.cache
def option_summary(group: str, option: str) -> str:
    """The first comment line of ``conf/<group>/<option>.yaml`` (after any ``# @package`` line)."""
    import charfeat.conf

    path = Path(charfeat.conf.__file__).parent / group / f"{option}.yaml"
    if not path.is_file():
        return ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") and not line.startswith("# @package"):
            return line.lstrip("#").strip()
        if line.strip() and not line.startswith("#"):
            break
    return ""
