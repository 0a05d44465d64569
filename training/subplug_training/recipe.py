"""Training recipes: readable TOML files (``recipes/*.toml``) turned into a :class:`Recipe`.

A recipe has four tables: ``[model]`` (the base model's cache name), ``[data]`` (splits,
clip lengths, instruction choice, label masking), ``[lora]`` and ``[train]`` (passed to
``transformers.TrainingArguments`` as they are). A recipe file may start with
``extends = "NAME"`` to change only a few values of another recipe, and any value can be
changed for one run with ``--set SECTION.KEY=VALUE`` (:func:`apply_overrides`).

Pure Python: nothing here imports torch or transformers.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from subplug.errors import SubplugError
from subplug.prompts import INSTRUCTIONS

#: The recipe ``subplug train`` uses when ``--recipe`` is not given.
DEFAULT_RECIPE = "gemma3n-en-mn"

MASKING_MODES = ("completion", "seed")
LORA_TARGET_MODES = ("language-model", "seed")

#: TrainingArguments that subplug sets itself; a recipe may not set them.
RESERVED_TRAIN_KEYS = frozenset(
    {
        "output_dir",
        "remove_unused_columns",
        "disable_tqdm",
        "resume_from_checkpoint",
        "use_cpu",
        "overwrite_output_dir",
        "push_to_hub",
    }
)

_TOP_KEYS = frozenset({"description", "extends", "model", "data", "lora", "train"})
_SECTION_KEYS: Mapping[str, frozenset[str]] = {
    "model": frozenset({"base"}),
    "data": frozenset({"holdout", "seed", "min_seconds", "max_seconds", "instructions", "masking"}),
    "lora": frozenset({"r", "alpha", "dropout", "bias", "targets"}),
}


@dataclass(frozen=True)
class DataSettings:
    """How samples are made from the data (the recipe's ``[data]`` table)."""

    holdout: float = 0.1
    """Share held out for evaluation when a source has no test split (0 ≤ holdout < 1)."""
    seed: int = 42
    """Seed of the held-out split, of the instruction draws and of the final shuffle."""
    min_seconds: float = 0.5
    max_seconds: float = 30.0
    """Clips outside ``[min_seconds, max_seconds]`` are dropped and counted."""
    instructions: str | tuple[int, ...] = "seed"
    """``"seed"``: one drawn instruction per sample; a tuple of instruction numbers: every
    sample gets each listed instruction its texts allow."""
    masking: str = "completion"
    """``"completion"`` (loss on the answer only) or ``"seed"`` (the seed's labels)."""


@dataclass(frozen=True)
class LoraSettings:
    """The LoRA adapter (the recipe's ``[lora]`` table)."""

    r: int = 32
    alpha: int = 64
    dropout: float = 0.0
    bias: str = "none"
    targets: str = "language-model"
    """``"language-model"`` or ``"seed"`` (the plain list, audio tower included)."""


@dataclass(frozen=True)
class Recipe:
    """A complete, validated training recipe."""

    name: str
    description: str
    base: str
    """Cache name (or folder) of the base model."""
    data: DataSettings
    lora: LoraSettings
    train: Mapping[str, Any] = field(hash=False)
    """Keyword arguments for ``transformers.TrainingArguments`` (``bf16`` may be "auto")."""
    source: str = ""
    """Where it was read from (a packaged recipe name or a file path)."""

    def to_dict(self) -> dict[str, Any]:
        """The recipe as TOML-shaped data (written next to the checkpoints)."""
        data = self.data
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "model": {"base": self.base},
            "data": {
                "holdout": data.holdout,
                "seed": data.seed,
                "min_seconds": data.min_seconds,
                "max_seconds": data.max_seconds,
                "instructions": (
                    data.instructions
                    if isinstance(data.instructions, str)
                    else list(data.instructions)
                ),
                "masking": data.masking,
            },
            "lora": {
                "r": self.lora.r,
                "alpha": self.lora.alpha,
                "dropout": self.lora.dropout,
                "bias": self.lora.bias,
                "targets": self.lora.targets,
            },
            "train": dict(self.train),
        }


def packaged_recipes() -> list[str]:
    """Names of the recipes shipped in ``subplug_training/recipes``."""
    folder = resources.files("subplug_training") / "recipes"
    return sorted(
        entry.name[: -len(".toml")] for entry in folder.iterdir() if entry.name.endswith(".toml")
    )


def load_recipe(spec: str | None = None, overrides: Iterable[str] = ()) -> Recipe:
    """Read recipe ``spec`` (a packaged name such as ``gemma3n-en-mn``, or a ``.toml``
    path), resolve ``extends``, apply ``--set`` overrides and validate.

    Raises ``SubplugError`` ``recipe-not-found`` or ``bad-recipe`` (naming the key).
    """
    spec = spec or DEFAULT_RECIPE
    raw, name, source = _read(spec, seen=())
    raw = apply_overrides(raw, overrides)
    return _build(raw, name=name, source=source)


def recipe_from_dict(data: Mapping[str, Any]) -> Recipe:
    """The recipe :meth:`Recipe.to_dict` wrote (in ``run.json`` or an adapter's
    ``subplug-training.json``), validated again."""
    raw = {k: v for k, v in data.items() if k not in ("name", "source")}
    return _build(raw, name=str(data.get("name", "recipe")), source=str(data.get("source", "")))


def recipe_toml(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML text of recipe-shaped tables (``[model]``, ``[data]``, …): what
    ``subplug train --print-recipe`` prints, readable back as a recipe file."""
    lines: list[str] = []
    for section, table in tables.items():
        if lines:
            lines.append("")
        lines.append(f"[{section}]")
        for key, value in table.items():
            if value is not None:
                lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    """One value as TOML: strings, numbers, booleans, arrays and inline tables."""
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of TOML data ``raw`` with each ``SECTION.KEY=VALUE`` applied.

    ``VALUE`` is read as a TOML value (``1e-3``, ``true``, ``[1, 6, 7]``, ``"text"``);
    anything that is not valid TOML is taken as a plain string.
    """
    data = copy.deepcopy(dict(raw))
    for item in overrides:
        key, sep, text = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not section or not name:
            raise SubplugError(
                "bad-override",
                f"--set {item!r} is not SECTION.KEY=VALUE.",
                "For example: --set train.learning_rate=1e-3 --set data.instructions=[1,6,7]",
            )
        if section not in ("model", "data", "lora", "train"):
            raise SubplugError(
                "bad-override",
                f"--set {item!r}: there is no [{section}] table in a recipe.",
                "Tables: model, data, lora, train.",
            )
        data.setdefault(section, {})[name] = _toml_value(text.strip())
    return data


# ----------------------------------------------------------------------- internals


def _tomllib() -> Any:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the tomli backport (a dependency there)
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib


def _toml_value(text: str) -> Any:
    tomllib = _tomllib()
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _read(spec: str, seen: tuple[str, ...]) -> tuple[dict[str, Any], str, str]:
    """Raw TOML data of ``spec`` with its ``extends`` chain merged in."""
    packaged = packaged_recipes()
    if spec in packaged:
        text = (resources.files("subplug_training") / "recipes" / f"{spec}.toml").read_text(
            encoding="utf-8"
        )
        name, source, folder = spec, spec, None
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise SubplugError(
                "recipe-not-found",
                f"There is no recipe named {spec!r} and no recipe file at {path}.",
                f"Packaged recipes: {', '.join(packaged)}; or give the path of a .toml file.",
            )
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise SubplugError(
                "recipe-not-found", f"Cannot read {path}: {error.strerror}."
            ) from error
        name, source, folder = path.stem, str(path.absolute()), path.absolute().parent
    tomllib = _tomllib()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise _bad(source, f"not valid TOML ({error}).") from error
    parent = raw.pop("extends", None)
    if parent is None:
        return raw, name, source
    if not isinstance(parent, str) or not parent:
        raise _bad(source, "extends must name a recipe or a .toml file.")
    if parent not in packaged and folder is not None and not Path(parent).is_absolute():
        parent = str(folder / parent)  # a file named relative to the recipe naming it
    if parent in seen or parent in (spec, source):
        raise _bad(source, "recipes extend each other in a loop.")
    base, _, _ = _read(parent, seen=(*seen, spec, source))
    return _merge(base, raw), name, source


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _bad(source: str, message: str, hint: str | None = None) -> SubplugError:
    return SubplugError("bad-recipe", f"Recipe {source}: {message}", hint)


def _build(raw: Mapping[str, Any], *, name: str, source: str) -> Recipe:
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise _bad(
            source, f"unknown key(s) {', '.join(unknown)}.", "Tables: model, data, lora, train."
        )
    tables: dict[str, Mapping[str, Any]] = {}
    for section in ("model", "data", "lora", "train"):
        value = raw.get(section, {})
        if not isinstance(value, Mapping):
            raise _bad(source, f"[{section}] must be a table.")
        allowed = _SECTION_KEYS.get(section)
        extra = sorted(set(value) - allowed) if allowed is not None else []
        if extra:
            raise _bad(
                source,
                f"unknown key(s) in [{section}]: {', '.join(extra)}.",
                f"[{section}] takes: {', '.join(sorted(allowed or ()))}.",
            )
        tables[section] = value

    base = tables["model"].get("base", "gemma-3n-e2b-it")
    if not isinstance(base, str) or not base:
        raise _bad(source, "model.base must be a model name.")
    data = _data_settings(tables["data"], source)
    lora = _lora_settings(tables["lora"], source)
    train = dict(tables["train"])
    reserved = sorted(set(train) & RESERVED_TRAIN_KEYS)
    if reserved:
        raise _bad(
            source,
            f"[train] may not set {', '.join(reserved)}: subplug sets it.",
            "Use --output for the folder; runs resume on their own.",
        )
    description = raw.get("description", "")
    return Recipe(
        name=name,
        description=str(description),
        base=base,
        data=data,
        lora=lora,
        train=train,
        source=source,
    )


def _number(table: Mapping[str, Any], key: str, default: float, source: str) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(source, f"{key} must be a number, not {value!r}.")
    return float(value)


def _data_settings(table: Mapping[str, Any], source: str) -> DataSettings:
    holdout = _number(table, "holdout", 0.1, source)
    if not 0.0 <= holdout < 1.0:
        raise _bad(source, f"data.holdout must be at least 0 and below 1, not {holdout:g}.")
    seed = table.get("seed", 42)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise _bad(source, f"data.seed must be an integer, not {seed!r}.")
    low = _number(table, "min_seconds", 0.5, source)
    high = _number(table, "max_seconds", 30.0, source)
    if not 0.0 <= low < high <= 30.0:
        raise _bad(
            source,
            f"data.min_seconds ({low:g}) and data.max_seconds ({high:g}) must satisfy "
            "0 ≤ min < max ≤ 30.",
            "Gemma 3n hears at most 30 s of audio.",
        )
    instructions = table.get("instructions", "seed")
    if isinstance(instructions, str):
        if instructions != "seed":
            instructions = parse_instruction_list(instructions, what="data.instructions")
    elif isinstance(instructions, list):
        instructions = parse_instruction_list(
            ",".join(str(i) for i in instructions), what="data.instructions"
        )
    else:
        raise _bad(source, 'data.instructions must be "seed" or a list of numbers 1–9.')
    masking = table.get("masking", "completion")
    if masking not in MASKING_MODES:
        raise _bad(source, f"data.masking must be one of {', '.join(MASKING_MODES)}.")
    return DataSettings(holdout, seed, low, high, instructions, masking)


def parse_instruction_list(text: str, *, what: str = "--instructions") -> tuple[int, ...]:
    """``"1,6,7"`` → ``(1, 6, 7)``; refuses numbers outside 1–9 and empty lists."""
    numbers: list[int] = []
    for part in text.replace("[", "").replace("]", "").split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or not 1 <= int(part) <= len(INSTRUCTIONS):
            raise SubplugError(
                "bad-instructions",
                f"{what}: {part!r} is not an instruction number.",
                f"Instructions are numbered 1 to {len(INSTRUCTIONS)} (docs/training.md).",
            )
        if int(part) not in numbers:
            numbers.append(int(part))
    if not numbers:
        raise SubplugError(
            "bad-instructions", f"{what} names no instruction.", "For example: 1,6,7"
        )
    return tuple(numbers)


def _lora_settings(table: Mapping[str, Any], source: str) -> LoraSettings:
    r = table.get("r", 32)
    alpha = table.get("alpha", 64)
    for key, value in (("r", r), ("alpha", alpha)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _bad(source, f"lora.{key} must be a positive integer, not {value!r}.")
    dropout = _number(table, "dropout", 0.0, source)
    if not 0.0 <= dropout < 1.0:
        raise _bad(source, f"lora.dropout must be in [0, 1), not {dropout:g}.")
    bias = table.get("bias", "none")
    if bias not in ("none", "all", "lora_only"):
        raise _bad(source, "lora.bias must be none, all or lora_only.")
    targets = table.get("targets", "language-model")
    if targets not in LORA_TARGET_MODES:
        raise _bad(source, f"lora.targets must be one of {', '.join(LORA_TARGET_MODES)}.")
    return LoraSettings(int(r), int(alpha), dropout, str(bias), str(targets))
