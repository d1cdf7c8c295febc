"""Resolve "pkg.module:attr" entry points (model builders, score / data / collect functions) with clear errors."""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
import os
import re
import reprlib
import sys
from collections.abc import Iterable
from itertools import islice
from typing import Any

import yaml
from torch import nn

from nasprune_cli.errors import LoadError

_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_IDENTIFIER = re.compile(r"^[A-Za-z_]\w*$")
_SHORT_CHARS = 80
# bounds on a YAML document (a recipe, a --model-kwargs value): an alias is a reference, so a few of them can stand
# for billions of values ("billion laughs") that validating or showing the data would walk
MAX_YAML_VALUES = 1_000_000  # values once every alias is expanded
MAX_YAML_DEPTH = 100  # nesting levels (the YAML composer recurses per level)
# a YAML 1.2 float without a dot (5e-06, 1E5): YAML 1.1, which PyYAML follows, reads it as a string
_EXP_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


def load_entry_point(spec: str, what: str = "model") -> object:
    """Import "pkg.module:attr" (attr may be dotted) and return the object; the current directory is searched too."""
    module_name, attr_path = _split_spec(spec, what)
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        # modules next to where the command runs are importable, but last: a file there named like an installed
        # package (yaml.py, fvcore.py) must not shadow the tool's own dependencies
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
    except SystemExit as exc:
        raise LoadError(
            f"{what} '{spec}': importing module '{module_name}' {exit_call(exc)}; a module must not exit when imported"
        ) from None
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise LoadError(
                f"{what} '{spec}': module '{module_name}' not found (is it installed, or on PYTHONPATH?)"
            ) from None
        raise LoadError(f"{what} '{spec}': importing module '{module_name}' failed: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any error while importing the user's module is reported in one line
        raise LoadError(
            f"{what} '{spec}': importing module '{module_name}' failed: {type(exc).__name__}: {exc}"
        ) from exc
    obj: Any = module
    parts = attr_path.split(".")
    for i, part in enumerate(parts):
        if not hasattr(obj, part):
            owner = f"module '{module_name}'" if i == 0 else f"'{module_name}:{'.'.join(parts[:i])}'"
            raise LoadError(f"{what} '{spec}': {owner} has no attribute '{part}'{_did_you_mean(part, dir(obj))}")
        obj = getattr(obj, part)
    return obj


def build_model(spec: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Load a model builder (or an nn.Module instance) from "pkg.module:attr" and call it with kwargs."""
    kwargs = dict(kwargs or {})
    builder = load_entry_point(spec, "model")
    if isinstance(builder, nn.Module):
        if kwargs:
            raise LoadError(
                f"model '{spec}' is an nn.Module instance, it takes no --model-kwargs (got {short_repr(kwargs)})"
            )
        return builder
    if not callable(builder):
        raise LoadError(
            f"model '{spec}' is not callable (got {type(builder).__name__} {_short(builder)}); "
            "point --model at a function or class that builds an nn.Module"
        )
    _check_kwargs(spec, builder, kwargs)
    try:
        model = builder(**kwargs)
    except SystemExit as exc:  # sys.exit() in the builder: not a way to end nasprune (exit 0 with no output)
        raise LoadError(
            f"model builder '{spec}' {exit_call(exc)} instead of returning a torch.nn.Module; remove the exit call "
            "(or guard it with `if __name__ == '__main__':`)"
        ) from None
    except TypeError as exc:
        # builders taking **kwargs (torchvision's) pass them on: a "keyword argument" TypeError means they were rejected
        if kwargs and ("keyword argument" in str(exc) or _signature(builder) is None):
            raise LoadError(f"model '{spec}' rejected the keyword arguments {short_repr(kwargs)}: {exc}") from exc
        raise LoadError(f"model '{spec}' failed while building the model: TypeError: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - the user's builder can fail in any way; one line, cause chained
        raise LoadError(f"model '{spec}' failed while building the model: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise LoadError(f"model '{spec}' returned {type(model).__name__} {_short(model)}, expected a torch.nn.Module")
    return model


def parse_kwargs(items: Iterable[str] | None) -> dict[str, Any]:
    """Parse ["k=v", ...] into a dict; values are YAML scalars (ints, floats, bools, null, strings)."""
    result: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        shown = short_str(item)
        if not sep:
            raise LoadError(f"--model-kwargs '{shown}': expected key=value, e.g. num_classes=10")
        if not _IDENTIFIER.match(key):
            raise LoadError(f"--model-kwargs '{shown}': '{short_str(key)}' is not a valid keyword argument name")
        result[key] = _parse_value(text.strip(), shown)
    return result


def _parse_value(text: str, item: str) -> Any:
    if _NUMBER.match(text):  # YAML 1.1 reads 1e5 as a string: numbers are parsed here first
        try:
            return int(text) if re.match(r"^[-+]?\d+$", text) else float(text)
        except ValueError:  # an integer of more than 4300 digits
            raise LoadError(f"--model-kwargs '{item}': the number is too long ({len(text)} digits)") from None
    try:
        return load_yaml(text) if text else ""
    except YamlLimitError as exc:
        raise LoadError(f"--model-kwargs '{item}': {exc.problem}") from None
    except (yaml.YAMLError, ValueError):
        return text  # not valid YAML (e.g. "a: b: c"): keep the raw string


class YamlLimitError(yaml.MarkedYAMLError):
    """A YAML document over MAX_YAML_DEPTH levels deep or MAX_YAML_VALUES values once its aliases are expanded."""


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader with bounds (nesting depth, values once aliases are expanded) and YAML 1.2 floats such as 5e-06."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                problem = f"nested deeper than {MAX_YAML_DEPTH} levels; flatten the data"
                raise YamlLimitError(problem=problem, problem_mark=self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _count_values(node, {}, set())
        return self.construct_document(node)


BoundedLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXP_FLOAT, list("-+0123456789"))


def load_yaml(text: str, loader: type[BoundedLoader] = BoundedLoader) -> Any:
    """Parse one YAML document safely and within bounds (YamlLimitError past them; other yaml.YAMLError as usual)."""
    return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass


def _count_values(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """Values under a node with every alias expanded (shared nodes counted once per use, memoized)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise YamlLimitError(problem="an alias refers to the collection that contains it", problem_mark=node.start_mark)
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [item for pair in node.value for item in pair]
    open_nodes.add(key)
    total = 1 + sum(_count_values(child, sizes, open_nodes) for child in children)
    open_nodes.discard(key)
    if total > MAX_YAML_VALUES:
        problem = (
            f"more than {MAX_YAML_VALUES:,} values once its aliases (*name) are expanded; "
            "write the values out instead of nesting aliases"
        )
        raise YamlLimitError(problem=problem, problem_mark=node.start_mark)
    sizes[key] = total
    return total


def exit_call(exc: SystemExit) -> str:
    """'called sys.exit(3)' for a SystemExit, as the user's code spelled it."""
    return f"called sys.exit({'' if exc.code is None else short_repr(exc.code)})"


def _split_spec(spec: str, what: str) -> tuple[str, str]:
    module_name, sep, attr_path = spec.partition(":")
    valid_module = all(_IDENTIFIER.match(p) for p in module_name.split("."))
    valid_attr = all(_IDENTIFIER.match(p) for p in attr_path.split("."))
    if not sep or not valid_module or not valid_attr:
        raise LoadError(f"{what} '{spec}': expected 'pkg.module:attr', e.g. torchvision.models:resnet18")
    return module_name, attr_path


def _signature(fn: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def _check_kwargs(spec: str, builder: Any, kwargs: dict[str, Any]) -> None:
    signature = _signature(builder)
    if signature is None:
        return
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        accepted = [
            p.name for p in signature.parameters.values() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        expected = f" (accepted: {', '.join(accepted)})" if accepted else ""
        raise LoadError(
            f"model '{spec}' rejected the keyword arguments {short_repr(kwargs)}: {exc}{expected}"
        ) from None


def _did_you_mean(name: str, candidates: list[str]) -> str:
    public = [c for c in candidates if not c.startswith("_")]
    close = difflib.get_close_matches(name, public, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _short(value: Any) -> str:
    return short_repr(value, 60)


class _ShortRepr(reprlib.Repr):
    """A repr that never walks more than a few items and levels of a value (dicts keep their order)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother, self.maxlong = 4, 200, 200, 40

    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        pieces = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}" for k, v in islice(x.items(), self.maxdict)]
        return "{" + ", ".join(pieces + (["..."] if len(x) > self.maxdict else [])) + "}"

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 256:  # repr() of an int over 4300 digits raises; this one is long anyway
            return f"<int of about {int(x.bit_length() * 0.30103) + 1} digits>"
        return super().repr_int(x, level)


_SHORT_REPR = _ShortRepr()


def short_repr(value: Any, limit: int = _SHORT_CHARS) -> str:
    """repr() of a value for a message: at most `limit` characters, without walking all of a huge value."""
    try:
        text = _SHORT_REPR.repr(value)
    except Exception:  # noqa: BLE001 - a user object whose __repr__ fails
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_json(value: Any, limit: int = 60) -> str:
    """A value as JSON for a message (a stored or expected setting), cut to `limit` characters."""
    return short_str(json.dumps(value, default=str), limit)


def short_str(text: str, limit: int = _SHORT_CHARS) -> str:
    """A string for a message, cut to `limit` characters."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
