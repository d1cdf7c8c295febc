"""Pydantic models of a recipe: per-type layer rules, the search and input sections, and the Recipe itself."""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    field_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from torch import nn
from torchvision.models.convnext import CNBlock, LayerNorm2d
from torchvision.models.maxvit import RelativePositionalMultiHeadAttention
from torchvision.models.swin_transformer import ShiftedWindowAttention

from nasprune_cli.constraints import CONSTRAINT_NAMES, parse_constraint
from nasprune_cli.dynamic.custom import layer_spec
from nasprune_cli.dynamic.subclass import registered_parent
from nasprune_cli.errors import NasPruneError
from nasprune_cli.inputs import input_size_problem


class TransformersAttention(nn.Module):
    """Stands for every transformers attention class nasprune prunes by heads (nasprune_cli/dynamic/hf_attention.py);
    never built."""


class TransformersLayers(nn.Module):
    """Stands for a transformers model's stack of decoder / encoder layers (an nn.ModuleList of layers of one class,
    nasprune_cli/dynamic/layer_stack.py), whose layers AutoNAS may skip; never built."""


MODULE_TYPES: dict[str, type[nn.Module]] = {
    "nn.Conv1d": nn.Conv1d,
    "nn.Conv2d": nn.Conv2d,
    "nn.Conv3d": nn.Conv3d,
    "nn.ConvTranspose1d": nn.ConvTranspose1d,
    "nn.ConvTranspose2d": nn.ConvTranspose2d,
    "nn.ConvTranspose3d": nn.ConvTranspose3d,
    "nn.Linear": nn.Linear,
    "nn.BatchNorm1d": nn.BatchNorm1d,
    "nn.BatchNorm2d": nn.BatchNorm2d,
    "nn.BatchNorm3d": nn.BatchNorm3d,
    "nn.SyncBatchNorm": nn.SyncBatchNorm,
    "nn.InstanceNorm1d": nn.InstanceNorm1d,
    "nn.InstanceNorm2d": nn.InstanceNorm2d,
    "nn.InstanceNorm3d": nn.InstanceNorm3d,
    "nn.LayerNorm": nn.LayerNorm,
    "torchvision.LayerNorm2d": LayerNorm2d,  # ConvNeXt's LayerNorm over the channels of NCHW
    "nn.GroupNorm": nn.GroupNorm,
    "nn.Sequential": nn.Sequential,
    # torchvision attention blocks, pruned by whole heads together with the features they read and write
    "torchvision.ShiftedWindowAttention": ShiftedWindowAttention,
    "torchvision.RelativePositionalMultiHeadAttention": RelativePositionalMultiHeadAttention,
    "torchvision.CNBlock": CNBlock,  # ConvNeXt block: its layer_scale follows the stream's channels
    # transformers attention (BERT, RoBERTa, Llama, Mistral, Qwen2, ViT): whole heads / key-value groups
    "transformers.Attention": TransformersAttention,
    # transformers layer stacks (nn.ModuleList of decoder / encoder layers): depth search, as for nn.Sequential
    "transformers.Layers": TransformersLayers,
}

# FastNAS defaults: 0.05, 0.10, ..., 1.0 (rounded, so 0.15 and not 0.15000000000000002) and a divisor of 32.
DEFAULT_RATIOS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 21))
DEFAULT_DIVISOR = 32


def _check_ratio(value: float) -> float:
    if not 0 < value <= 1:
        raise PydanticCustomError("ratio_range", "must be in (0, 1]")
    return float(value)


def _check_kernel(value: int) -> int:
    if value <= 0 or value % 2 == 0:
        raise PydanticCustomError("kernel_odd", "must be an odd positive integer")
    return value


def _check_seed(value: int) -> int:
    if not -(2**63) <= value < 2**64:
        raise PydanticCustomError(
            "seed_range", "must fit torch's random generator: an integer from -2**63 to 2**64 - 1, e.g. 0 or 1234"
        )
    return value


Ratio = Annotated[float, AfterValidator(_check_ratio)]
KernelSize = Annotated[int, AfterValidator(_check_kernel)]
Ratios = Annotated[list[Ratio], Field(min_length=1)]


class _Rule(BaseModel):
    """Common configuration of every layer rule: unknown keys and loose types are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ConvRule(_Rule):
    """Conv / ConvTranspose: output-channel ratios, channel divisor and optional kernel-size choices."""

    channels_ratio: Ratios = Field(default_factory=lambda: list(DEFAULT_RATIOS))
    channel_divisor: int = Field(DEFAULT_DIVISOR, ge=1)
    kernel_size: list[KernelSize] = Field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        """Width ratios of the layer's output channels."""
        return list(self.channels_ratio)

    @property
    def divisor(self) -> int:
        """Every width choice is a multiple of this (unless the layer is narrower)."""
        return self.channel_divisor


class FeatureRule(_Rule):
    """Linear and the BatchNorm / SyncBatchNorm / InstanceNorm / LayerNorm family: feature ratios and divisor."""

    features_ratio: Ratios = Field(default_factory=lambda: list(DEFAULT_RATIOS))
    feature_divisor: int = Field(DEFAULT_DIVISOR, ge=1)

    @property
    def ratios(self) -> list[float]:
        """Width ratios of the layer's features."""
        return list(self.features_ratio)

    @property
    def divisor(self) -> int:
        """Every width choice is a multiple of this (unless the layer is narrower)."""
        return self.feature_divisor


class GroupNormRule(_Rule):
    """GroupNorm: channel ratios and divisor (choices are further limited to multiples of num_groups)."""

    channels_ratio: Ratios = Field(default_factory=lambda: list(DEFAULT_RATIOS))
    channel_divisor: int = Field(DEFAULT_DIVISOR, ge=1)

    @property
    def ratios(self) -> list[float]:
        """Width ratios of the layer's channels."""
        return list(self.channels_ratio)

    @property
    def divisor(self) -> int:
        """Every width choice is a multiple of this (unless the layer is narrower)."""
        return self.channel_divisor


class SequentialRule(_Rule):
    """nn.Sequential: depth search keeps at least `min_depth` leading children. `skippable`: "trailing" (the
    trailing children that keep the tensor shape: one `<name>.depth` hparam) or "blocks" (every run of shape-keeping
    blocks, i.e. children with submodules such as residual blocks, wherever it is: `<name>.depth` for a trailing run,
    `<name>.depth[start:stop]` for an inner one; subclasses of nn.Sequential that keep its forward count too)."""

    min_depth: int = Field(0, ge=0)
    skippable: Literal["trailing", "blocks"] = "trailing"


class AttentionRule(_Rule):
    """Attention blocks: heads are removed whole, following the width of the features they read; keep at least
    `min_heads`."""

    min_heads: int = Field(1, ge=1)


class HeadsRule(FeatureRule):
    """transformers attention: its heads are a group of their own, feature ratios and divisor as for Linear (widths
    are also multiples of a head, or of a key/value group's query heads); keep at least `min_heads` such units."""

    min_heads: int = Field(1, ge=1)


class ScaleRule(_Rule):
    """Blocks with a per-channel scale parameter (ConvNeXt's CNBlock): no settings, the scale follows the stream."""


LayerRule = ConvRule | FeatureRule | GroupNormRule | SequentialRule | AttentionRule | ScaleRule | HeadsRule

_CONV = ("nn.Conv1d", "nn.Conv2d", "nn.Conv3d", "nn.ConvTranspose1d", "nn.ConvTranspose2d", "nn.ConvTranspose3d")
_SPECIAL_RULES: dict[str, type[_Rule]] = {
    "nn.GroupNorm": GroupNormRule,
    "nn.Sequential": SequentialRule,
    "torchvision.ShiftedWindowAttention": AttentionRule,
    "torchvision.RelativePositionalMultiHeadAttention": AttentionRule,
    "torchvision.CNBlock": ScaleRule,
    "transformers.Attention": HeadsRule,
    "transformers.Layers": SequentialRule,
}
RULE_MODELS: dict[str, type[_Rule]] = {
    name: ConvRule if name in _CONV else _SPECIAL_RULES.get(name, FeatureRule) for name in MODULE_TYPES
}
DEPTH_TYPES: tuple[str, ...] = ("nn.Sequential", "transformers.Layers")
FASTNAS_TYPES: tuple[str, ...] = tuple(name for name in MODULE_TYPES if name not in DEPTH_TYPES)
AUTONAS_TYPES: tuple[str, ...] = tuple(MODULE_TYPES)

# After validation: type name -> ordered {glob pattern -> rule, or None = not converted}, or None for the whole type.
RulesTable = dict[str, dict[str, LayerRule | None] | None]


def layer_class(type_name: str) -> type[nn.Module] | None:
    """The class a qualified rule key names ("timm.layers.BatchNormAct2d"), imported; None when it names none."""
    module_name, _, attr = type_name.rpartition(".")
    if not module_name or type_name in MODULE_TYPES:
        return None
    try:
        obj = getattr(importlib.import_module(module_name), attr, None)
    except Exception:  # noqa: BLE001 - any import failure means "not a class nasprune can find"
        return None
    return obj if isinstance(obj, type) and issubclass(obj, nn.Module) else None


def rule_model(type_name: str) -> type[_Rule] | None:
    """The rule model of a module type: a MODULE_TYPES name, or the qualified name of a subclass of one of them (its
    parent's rule) or of a layer registered with register_layer (a feature rule); None for anything else."""
    if type_name in RULE_MODELS:
        return RULE_MODELS[type_name]
    cls = layer_class(type_name)
    if cls is None:
        return None
    if layer_spec(cls) is not None:
        return FeatureRule
    parent = registered_parent(cls)
    names = {t: n for n, t in MODULE_TYPES.items()}
    return RULE_MODELS[names[parent]] if parent in names else None


def rule_fields(type_name: str) -> list[str]:
    """Field names of the rule model of a module type, sorted."""
    return sorted(_rule_model(type_name).model_fields)


def _rule_model(type_name: str) -> type[_Rule]:
    model = rule_model(type_name)
    assert model is not None, type_name  # callers check the name first
    return model


def is_unnested(type_name: str, value: Mapping[Any, Any]) -> bool:
    """Whether a mapping is one rule config (short for {"*": config}) rather than glob pattern -> config."""
    fields = set(_rule_model(type_name).model_fields)
    if not value or any(key in fields for key in value):  # `{}` means "this type with default settings"
        return True
    # a mapping whose values are not all mappings / null cannot be patterns: treat it as a (misspelled) config
    return not all(v is None or isinstance(v, Mapping) for v in value.values())


# `defaults:` keys that span rule types: `divisor` sets channel_divisor and feature_divisor, `ratio` channels_ratio
# and features_ratio; every other key is a rule field and applies to the rule types that have it.
DEFAULT_ALIASES: dict[str, tuple[str, ...]] = {
    "divisor": ("channel_divisor", "feature_divisor"),
    "ratio": ("channels_ratio", "features_ratio"),
}


def default_keys() -> list[str]:
    """The keys a recipe's `defaults` section takes: every rule field and the aliases, sorted."""
    return sorted({f for model in RULE_MODELS.values() for f in model.model_fields} | set(DEFAULT_ALIASES))


def type_defaults(type_name: str, defaults: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `defaults` that apply to one module type's rules (a field named itself wins over an alias)."""
    fields = _rule_model(type_name).model_fields
    expanded = {f: v for key, v in (defaults or {}).items() for f in DEFAULT_ALIASES.get(key, ())}
    expanded.update({key: v for key, v in (defaults or {}).items() if key not in DEFAULT_ALIASES})
    return {f: v for f, v in expanded.items() if f in fields}


def _check_defaults(value: dict[str, Any]) -> dict[str, Any]:
    """Every key is taken by some rule type and its value is valid there (checked by that rule's model)."""
    errors: list[InitErrorDetails] = []
    for key, item in value.items():
        models = [m for f in DEFAULT_ALIASES.get(key, (key,)) for m in RULE_MODELS.values() if f in m.model_fields]
        if not models:
            errors.append(_error("extra_forbidden", "unknown key", (key,), item))
            continue
        field = next(f for f in DEFAULT_ALIASES.get(key, (key,)) if f in models[0].model_fields)
        try:
            models[0].model_validate({field: item})
        except ValidationError as exc:
            err = exc.errors()[0]
            errors.append(_error(err["type"], err["msg"], (key, *tuple(err["loc"])[1:]), err["input"], err.get("ctx")))
    if errors:
        raise ValidationError.from_exception_data("defaults", errors)
    return value


def default_rules(mode: str, defaults: Mapping[str, Any] | None = None) -> RulesTable:
    """The rules used when a recipe has no `rules` section: every type the mode converts, with the recipe's
    `defaults` over the rule defaults."""
    types = AUTONAS_TYPES if mode == "autonas" else FASTNAS_TYPES
    return {name: {"*": RULE_MODELS[name].model_validate(type_defaults(name, defaults))} for name in types}


def _validate_rules(value: Any, handler: Any, info: ValidationInfo) -> RulesTable | None:
    """Normalize and validate the `rules` section, the recipe's `defaults` filling the fields a rule does not set;
    errors keep their full key path."""
    if value is None:
        return None
    defaults = info.data.get("defaults") or {}
    if not isinstance(value, Mapping):
        return handler(value)  # pydantic reports "expected a mapping"
    table: RulesTable = {}
    errors: list[InitErrorDetails] = []
    for type_name, entry in value.items():
        if not isinstance(type_name, str) or rule_model(type_name) is None:
            errors.append(_error("unknown_module_type", "unknown module type", (type_name,), type_name))
            continue
        if entry is None:
            table[type_name] = None
            continue
        if not isinstance(entry, Mapping):
            msg = "expected a rule config, a mapping of glob pattern -> config, or null"
            errors.append(_error("rule_entry_type", msg, (type_name,), entry))
            continue
        nested = not is_unnested(type_name, entry)
        patterns = entry if nested else {"*": entry}
        table[type_name] = {}
        for pattern, config in patterns.items():
            loc = (type_name, pattern) if nested else (type_name,)
            if not isinstance(pattern, str):
                errors.append(_error("pattern_type", "glob pattern must be a string", loc, pattern))
                continue
            if config is None:
                table[type_name][pattern] = None
                continue
            if not isinstance(config, (Mapping, _Rule)):
                msg = "expected a mapping of rule fields, or null"
                errors.append(_error("rule_config_type", msg, loc, config))
                continue
            fill = type_defaults(type_name, defaults)
            if fill:
                given = config.model_dump(exclude_unset=True) if isinstance(config, _Rule) else config
                config = {**fill, **given}
            try:
                table[type_name][pattern] = _rule_model(type_name).model_validate(config)
            except ValidationError as exc:
                for err in exc.errors():
                    errors.append(
                        _error(err["type"], err["msg"], loc + tuple(err["loc"]), err["input"], err.get("ctx"))
                    )
    if errors:
        raise ValidationError.from_exception_data("rules", errors)
    return table


def _error(
    kind: str, msg: str, loc: tuple[Any, ...], value: Any, ctx: Mapping[str, Any] | None = None
) -> InitErrorDetails:
    """An error detail that keeps its type, message and context when re-raised under a longer key path."""
    escaped = msg.replace("{", "{{").replace("}", "}}")
    context = {k: v for k, v in (ctx or {}).items() if isinstance(v, (str, int, float, bool))}
    return InitErrorDetails(type=PydanticCustomError(kind, escaped, context or None), loc=loc, input=value)


SearcherName = Literal["binary", "evolve", "random"]
SEARCHERS: tuple[str, ...] = get_args(SearcherName)
SensitivityMode = Literal["budget", "full"]
ImportanceMethod = Literal["magnitude", "consumer", "activation"]
DEFAULT_CANDIDATE_SIZE = 10
# settings that act on the found subnet only: a checkpoint resumes across them
AFTER_SEARCH_SETTINGS = ("reconstruct",)


class SearchSettings(BaseModel):
    """The recipe's `search` section: the one definition of every search setting.

    `nasprune search` builds it from its flags over the recipe, `search()` from its config over the recipe, and the
    searchers read it. A new setting is a field here plus a command-line option."""

    model_config = ConfigDict(extra="forbid", strict=True)

    constraints: dict[str, str | float] = Field(default_factory=dict)  # flops / params / latency: "60%", "450M", "25ms"
    latency_table: str | None = None  # latency constraint: JSON table, read when it exists, else measured and written
    latency_batch: int | None = Field(None, ge=1)  # latency constraint: batch size of the table; None: an attached
    # table's batch size, else 1
    searcher: SearcherName | None = None  # None: the recipe mode's searcher (binary for fastnas, evolve for autonas)
    checkpoint: str | None = None  # search state file, resumed when it exists
    score: str | None = None  # "pkg.module:fn", fn(model) -> float, higher is better
    data: str | None = None  # "pkg.module:fn", fn() -> iterable of batches (BN recalibration, default score)
    collect: str | None = None  # "pkg.module:fn", fn(batch) -> model inputs; default: batch[0] of a tuple / list batch
    max_batches: int = Field(8, ge=1)  # batches of `data` used per evaluation
    seed: Annotated[int, AfterValidator(_check_seed)] = 0
    fill: bool = True  # binary: grow hparams greedily after the threshold search
    descent: bool = True  # binary: also score the cost-aware descent subnet, keep the better
    sensitivity: SensitivityMode = "budget"  # binary: budget (monotone drops, probe what the budget reaches) | full
    importance: ImportanceMethod = "magnitude"  # channel order (nasprune_cli.importance)
    reconstruct: bool = True  # refit the kept weights by least squares on `data` after the search
    width_floor: float = Field(0.0, ge=0, le=1)  # binary: no width below this share of the uniform ratio; 0: off
    rival_floor: float = Field(0.5, ge=0, le=1)  # binary: floor of the balanced rival subnet; 0: off
    iterations: int = Field(100, ge=1)  # evolve / random: number of subnets evaluated
    population_size: int = Field(20, ge=1)  # evolve: subnets per generation
    candidate_size: int | None = Field(None, ge=1)  # evolve: best subnets kept as parents; None: min(10, population)
    mutation_prob: float = Field(0.1, ge=0, le=1)  # evolve: probability to resample each hparam when mutating
    crossover_size: int = Field(10, ge=0)  # evolve: children made by crossover per generation
    mutation_size: int = Field(10, ge=0)  # evolve: children made by mutation per generation
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")  # auto: the first CUDA GPU, else the CPU

    def resolved(self, mode: str = "fastnas") -> SearchSettings:
        """A copy with the defaults that depend on other values filled in: the mode's searcher, candidate_size."""
        return self.model_copy(
            update={
                "searcher": self.searcher or ("evolve" if mode == "autonas" else "binary"),
                "candidate_size": self.candidate_size or min(DEFAULT_CANDIDATE_SIZE, self.population_size),
            }
        )

    @field_validator("constraints")
    @classmethod
    def _check_constraints(cls, value: dict[str, str | float]) -> dict[str, str | float]:
        errors: list[InitErrorDetails] = []
        for name, budget in value.items():
            if name not in CONSTRAINT_NAMES:
                msg = f"unknown constraint (expected one of {', '.join(CONSTRAINT_NAMES)})"
                errors.append(_error("constraint_name", msg, (name,), name))
                continue
            try:
                parse_constraint(name, budget, 1.0)
            except NasPruneError as exc:
                # "constraint 'flops': <problem> (got '160%')" -> "<problem>"; the key path and value are added later
                problem = re.sub(r"^constraint '[^']*': | \(got .*\)$", "", str(exc))
                errors.append(_error("constraint_value", problem, (name,), budget))
        if errors:
            raise ValidationError.from_exception_data("constraints", errors)
        return value

    @field_validator("candidate_size")
    @classmethod
    def _check_candidate_size(cls, value: int | None, info: ValidationInfo) -> int | None:
        population = info.data.get("population_size")
        if value is not None and isinstance(population, int) and value > population:
            raise PydanticCustomError(
                "candidate_size",
                "must be <= search.population_size ({population}): lower candidate_size or raise population_size",
                {"population": population},
            )
        return value


def _check_shape(value: Any) -> list[int] | list[list[int]]:
    """A shape is a non-empty list of positive ints; several inputs are a non-empty list of shapes; all of them
    together small enough to allocate."""
    several = isinstance(value, list) and value and all(isinstance(s, list) for s in value)
    shapes = [_check_dims(s) for s in value] if several else [_check_dims(value)]
    problem = input_size_problem(shapes)
    if problem is not None:
        raise PydanticCustomError("shape_size", problem)
    return shapes if several else shapes[0]  # type: ignore[return-value]


def _check_dims(value: Any) -> list[int]:
    if not (isinstance(value, list) and value and all(type(d) is int and d > 0 for d in value)):
        raise PydanticCustomError(
            "shape", "expected a list of positive integers such as [1, 3, 224, 224], or a list of such lists"
        )
    return list(value)


class InputSection(BaseModel):
    """The dummy input: one shape (or a list of shapes for several positional inputs), a dtype, the bound of token
    ids and keyword inputs."""

    model_config = ConfigDict(extra="forbid", strict=True)

    shape: Annotated[Any, BeforeValidator(_check_shape)] = Field(default_factory=lambda: [1, 3, 224, 224])
    dtype: Literal["float32", "float16", "bfloat16", "int64"] = "float32"
    # int64 inputs are token ids drawn in [0, high); default: the model's config.vocab_size, else all zeros
    high: Annotated[int, Field(gt=0)] | None = None
    # keyword inputs shaped like the first input, e.g. {attention_mask: ones}
    keywords: dict[str, Literal["ones", "zeros"]] = Field(default_factory=dict)


def _import_plugin(module_name: str) -> str:
    """Import a plugin module (it registers layers with register_layer); an error names the one that failed."""
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", module_name):
        raise PydanticCustomError(
            "plugin_name", "expected a module's import path such as mypkg.layers (got '{name}')", {"name": module_name}
        )
    try:
        importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's module is reported in one line
        raise PydanticCustomError(
            "plugin_import",
            "importing plugin '{name}' failed: {error} (is it installed, or on PYTHONPATH?)",
            {"name": module_name, "error": f"{type(exc).__name__}: {exc}"},
        ) from None
    return module_name


class Recipe(BaseModel):
    """A whole recipe file: mode, rule defaults, layer rules, search and input sections."""

    model_config = ConfigDict(extra="forbid", strict=True)

    version: Literal[1] = 1
    mode: Literal["fastnas", "autonas"] = "fastnas"
    description: str = ""
    # modules imported before the rules are read: they register users' layers (nasprune_cli.register_layer)
    plugins: list[Annotated[str, AfterValidator(_import_plugin)]] = Field(default_factory=list)
    # fields every rule takes unless it sets them itself (before `rules`: its validator reads them)
    defaults: Annotated[dict[str, Any], AfterValidator(_check_defaults)] = Field(default_factory=dict)
    rules: Annotated[RulesTable | None, WrapValidator(_validate_rules)] = None
    search: SearchSettings = Field(default_factory=SearchSettings)
    input: InputSection = Field(default_factory=InputSection)

    def search_settings(self) -> SearchSettings:
        """The search section with the defaults that depend on the mode (the searcher) filled in."""
        return self.search.resolved(self.mode)

    def rules_table(self) -> RulesTable:
        """The effective rules: the `rules` section, or the mode's defaults when it is absent."""
        return default_rules(self.mode, self.defaults) if self.rules is None else self.rules
