"""Resolve "pkg.module:attr" entry points (model builders, score / data / collect functions) with clear errors."""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

import yaml
from torch import nn

from nasprune_cli.errors import LoadError

_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_IDENTIFIER = re.compile(r"^[A-Za-z_]\w*$")


def load_entry_point(spec: str, what: str = "model") -> object:
    """Import "pkg.module:attr" (attr may be dotted) and return the object; the current directory is searched too."""
    module_name, attr_path = _split_spec(spec, what)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: modules next to where the command runs are importable
    try:
        module = importlib.import_module(module_name)
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
            raise LoadError(f"model '{spec}' is an nn.Module instance, it takes no --model-kwargs (got {kwargs})")
        return builder
    if not callable(builder):
        raise LoadError(
            f"model '{spec}' is not callable (got {type(builder).__name__} {_short(builder)}); "
            "point --model at a function or class that builds an nn.Module"
        )
    _check_kwargs(spec, builder, kwargs)
    try:
        model = builder(**kwargs)
    except TypeError as exc:
        # builders taking **kwargs (torchvision's) pass them on: a "keyword argument" TypeError means they were rejected
        if kwargs and ("keyword argument" in str(exc) or _signature(builder) is None):
            raise LoadError(f"model '{spec}' rejected the keyword arguments {kwargs}: {exc}") from exc
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
        if not sep:
            raise LoadError(f"--model-kwargs '{item}': expected key=value, e.g. num_classes=10")
        if not _IDENTIFIER.match(key):
            raise LoadError(f"--model-kwargs '{item}': '{key}' is not a valid keyword argument name")
        result[key] = _parse_value(text.strip(), item)
    return result


def _parse_value(text: str, item: str) -> Any:
    if _NUMBER.match(text):  # YAML 1.1 reads 1e5 as a string: numbers are parsed here first
        return int(text) if re.match(r"^[-+]?\d+$", text) else float(text)
    try:
        return yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        return text  # not valid YAML (e.g. "a: b: c"): keep the raw string


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
        raise LoadError(f"model '{spec}' rejected the keyword arguments {kwargs}: {exc}{expected}") from None


def _did_you_mean(name: str, candidates: list[str]) -> str:
    public = [c for c in candidates if not c.startswith("_")]
    close = difflib.get_close_matches(name, public, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
