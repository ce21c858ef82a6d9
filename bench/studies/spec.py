"""Study files (``studies/*.yaml``): what a grid or study is, validated before any work.

Torch-, Optuna- and MLflow-free, so a bad study file fails in well under a second.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.config import ConfigError, Settings, TrialConfig, merge, resolve_trial
from bench.names import name_error
from bench.selection import DEFAULT_REPEAT_AXES


class Variant(BaseModel):
    """One arm of a multi-variant study file: its own trial overrides and grid/space."""

    model_config = ConfigDict(extra="forbid")

    trial: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    space: dict[str, dict[str, Any]] = Field(default_factory=dict)


class RepeatSpec(BaseModel):
    """``repeat:``: what repeats a cell rather than defines it, and fresh-seed reruns.

    ``axes``: grid axes averaged over like ``train.seed`` (which always is), e.g. ``data.seed``
    for several splits; every other axis stays a separate cell in the report. ``seeds``: after
    the grid, retrain each study's selected cell with this many fresh ``train.seed`` values
    (``bench repeat``), so the headline numbers are free of selection bias.
    """

    model_config = ConfigDict(extra="forbid")

    axes: list[str] = Field(default_factory=list, description="grid axes averaged over like train.seed")
    seeds: int = Field(0, ge=0, le=100, description="fresh-seed repeats of the selected cell after the grid (0 = none)")


class StudySpec(BaseModel):
    """A file in ``studies/``: an experiment, trial overrides, and a grid or a search space.

    ``variants`` (optional) runs several grids/studies into one MLflow experiment, e.g. the
    alpha x delta grid once per loss, so one report compares them; each variant is its own
    Optuna study (``<experiment>.<variant>``) and parent run.
    """

    model_config = ConfigDict(extra="forbid")

    experiment: str = Field(..., min_length=1, description="MLflow experiment (and default Optuna study) name")
    study_name: str | None = Field(None, description="Optuna study / parent run name; default: experiment")
    kind: Literal["grid", "study"] = "grid"
    description: str = ""
    trial: dict[str, Any] = Field(default_factory=dict, description="nested overrides of bench.yaml's trial")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="applied last, over every variant's trial (the command line's --set)"
    )
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted key -> values")
    space: dict[str, dict[str, Any]] = Field(default_factory=dict, description="dotted key -> distribution")
    n_trials: int = Field(20, ge=1)
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    seed: int = 0
    variants: dict[str, Variant] = Field(default_factory=dict)
    pack: Literal["auto", "off"] = Field(
        "auto", description="auto: train cells whose work has the same shapes (head-only cells over the same "
        "features) together as one program, the rest one by one; off: every trial alone")
    pack_size: int = Field(32, ge=1, le=1024, description="most cells trained together (a search asks this many "
                           "trials at once, at most a quarter of n_trials, the sampler's constant liar "
                           "covering the pending ones)")
    repeat: RepeatSpec = Field(default_factory=RepeatSpec)
    conditions: list[str] | None = Field(
        None, description="axes a reader compares across, never selects over (e.g. [data.noise_rate]): the best "
        "cell is chosen per value of these; default: every data.* axis; [] selects over every axis")
    threads: int | None = Field(None, ge=1, le=1024, description="torch/faiss CPU threads of every trial, pinned "
                                "for the whole study and recorded with it (default: the first run's share of the "
                                "machine's cores, then recorded)")

    @property
    def name(self) -> str:
        return self.study_name or self.experiment

    @property
    def repeat_axes(self) -> tuple[str, ...]:
        """Axes whose values repeat a cell (``train.seed`` plus ``repeat.axes``)."""
        return tuple(dict.fromkeys([*DEFAULT_REPEAT_AXES, *self.repeat.axes]))

    def expand(self) -> list["StudySpec"]:
        """One spec per variant (trial overrides merged, grid/space extended); or [self]."""
        if not self.variants:
            return [self]
        out = []
        for vname, v in self.variants.items():
            d = self.model_dump()
            d.update(study_name=f"{self.name}.{vname}", variants={}, trial=merge(self.trial, v.trial),
                     grid={**self.grid, **v.grid}, space={**self.space, **v.space}, overrides=self.overrides)
            out.append(StudySpec.model_validate(d))
        return out

    @field_validator("experiment", "study_name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        error = None if v is None else name_error(v)
        if error:
            raise ValueError(error)
        return v

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, v: dict[str, Variant]) -> dict[str, Variant]:
        for name in v:  # each becomes part of a study name: <study>.<variant>
            error = name_error(name)
            if error:
                raise ValueError(f"variant {error}")
        return v

    @field_validator("grid")
    @classmethod
    def _grid(cls, g: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for k, v in g.items():
            if not isinstance(v, list) or not v:
                raise ValueError(f"grid.{k}: needs a non-empty list of values")
            if any(not isinstance(x, (str, int, float, bool)) or x is None for x in v):
                raise ValueError(f"grid.{k}: values must be numbers, strings or booleans")
            if len(set(map(repr, v))) != len(v):
                raise ValueError(f"grid.{k}: has repeated values")
        return g

    @field_validator("space")
    @classmethod
    def _space(cls, s: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for k, d in s.items():
            if len(d) != 1 or next(iter(d)) not in DISTRIBUTIONS:
                raise ValueError(f"space.{k}: give exactly one of {', '.join(DISTRIBUTIONS)}, e.g. {{log_uniform: [4, 128]}}")
            kind, arg = next(iter(d.items()))
            if kind == "choice":
                if not isinstance(arg, list) or not arg:
                    raise ValueError(f"space.{k}.choice: needs a non-empty list")
            elif not (isinstance(arg, list) and len(arg) == 2 and arg[0] < arg[1]):
                raise ValueError(f"space.{k}.{kind}: needs [low, high] with low < high")
            elif kind == "log_uniform" and arg[0] <= 0:
                raise ValueError(f"space.{k}.log_uniform: low must be > 0")
        return s

    @model_validator(mode="after")
    def _kind(self) -> "StudySpec":
        if self.variants:
            for vname in self.variants:  # each variant's study name, <study>.<variant>, is a name too
                error = name_error(f"{self.name}.{vname}")
                if error:
                    raise ValueError(f"variants.{vname}: its study name {error}")
            return self  # each variant is checked when expanded
        if self.kind == "grid" and not self.grid:
            raise ValueError("kind: grid needs a 'grid:' mapping of dotted keys to value lists")
        if self.kind == "study" and not self.space:
            raise ValueError("kind: study needs a 'space:' mapping of dotted keys to distributions")
        unknown = [a for a in self.repeat.axes if a not in self.grid]
        if unknown:
            raise ValueError(f"repeat.axes: {', '.join(unknown)} is not a grid axis; list grid keys only "
                             f"(grid: {', '.join(self.grid) or 'none'})")
        axes = [a for a in (self.grid if self.kind == "grid" else self.space) if a not in self.repeat_axes]
        odd = [a for a in self.conditions or [] if a not in axes]
        if odd:
            raise ValueError(f"conditions: {', '.join(odd)} is not an axis of this {self.kind}; list its "
                             f"{'grid' if self.kind == 'grid' else 'space'} keys (not repeat axes): "
                             f"{', '.join(axes) or 'none'}")
        return self

    def effective_trial(self) -> dict[str, Any]:
        """The trial overrides a run applies: the file's ``trial`` then ``overrides``."""
        return merge(self.trial, self.overrides)

    def cells(self) -> list[dict[str, Any]]:
        keys = list(self.grid)
        return [dict(zip(keys, vals)) for vals in itertools.product(*(self.grid[k] for k in keys))]


DISTRIBUTIONS = ("uniform", "log_uniform", "int", "choice")


def cell_label(cell: dict[str, Any], empty: str = "no axes") -> str:
    """A cell as one short line for messages: ``loss.alpha=16 loss.delta=0.1``."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in cell.items()) or empty


def trial_settings(settings: Settings, spec: StudySpec) -> dict[str, Any]:
    """The settings every trial of ``spec`` shares (bench.yaml's ``trial`` <- the file's
    ``trial`` <- its ``overrides``), as plain JSON values: what the study records."""
    import json

    return json.loads(json.dumps(merge(settings.trial, spec.effective_trial())))


def trial_config(settings: Settings, spec: StudySpec, cell: dict[str, Any] | None = None) -> TrialConfig:
    """One trial's validated config: :func:`trial_settings`' recipe, then the cell's dotted values."""
    return resolve_trial(settings.trial, spec.effective_trial(), dotted=cell)


def load_spec(path: str | Path) -> StudySpec:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"study file {p} does not exist")
    if p.is_dir():
        yamls = sorted(x.name for x in p.glob("*.yaml"))[:3]
        raise ConfigError(f"study file {p} is a folder; name one file in it" + (f", e.g. {p / yamls[0]}" if yamls else ""))
    raw = read_yaml(p)
    if not isinstance(raw, dict):
        raise ConfigError(f"study file {p}: expected a mapping (experiment:, kind:, grid: ...) at the top level")
    try:
        return StudySpec.model_validate(raw)
    except ValidationError as e:
        lines = [f"{'.'.join(map(str, err['loc'])) or '<root>'}: {err['msg'].removeprefix('Value error, ')}"
                 for err in e.errors()]
        raise ConfigError(f"invalid study file {p}:\n  " + "\n  ".join(lines)) from None


def read_yaml(p: Path) -> Any:
    """A YAML file's content; a syntax error becomes one line with its position."""
    try:
        return yaml.safe_load(p.read_text()) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not a text file (byte {e.start} is not UTF-8); give a YAML study file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}: not valid YAML{where} ({problem}); fix the file") from None


#: Grids up to this many cells are validated cell by cell; larger ones by their distinct
#: values (each value of each axis once, the other axes at their first value), so a huge
#: grid is checked in time linear in its values, not its cells.
EXHAUSTIVE_CELLS = 2000


def validate_cells(settings: Settings, spec: StudySpec) -> list[TrialConfig]:
    """Resolve every grid cell (for huge grids, every distinct value; for a search, the
    space's corners) before any trial starts; raise :class:`ConfigError` naming up to
    five bad cells."""
    errors, cfgs = [], []
    if spec.kind == "grid":
        n = 1
        for v in spec.grid.values():
            n *= len(v)
        probes = spec.cells() if n <= EXHAUSTIVE_CELLS else _value_probes(spec.grid)
    else:
        probes = _space_probes(spec.space)
    for cell in probes:
        try:
            cfgs.append(trial_config(settings, spec, cell))
        except ConfigError as e:
            errors.append(f"cell {cell}: {e}")
    if spec.kind == "grid" and not errors:
        errors += _same_values(settings, spec)
    if errors:
        shown = errors[:5] + ([f"... and {len(errors) - 5} more"] if len(errors) > 5 else [])
        raise ConfigError("\n".join(shown))
    return cfgs


def preflight(cfgs: list[TrialConfig], datasets: dict[str, Any], data_root: str | None) -> None:
    """Load each distinct dataset once and check every config against it
    (:func:`bench.preflight.check_against_dataset`), so such mistakes fail before any trial."""
    from bench.data import create_dataset
    from bench.preflight import check_against_dataset

    errors = []
    for cfg in cfgs:
        key = cfg.data.model_dump_json()
        if key not in datasets:
            datasets[key] = create_dataset(cfg.data, data_root)
        errors += check_against_dataset(cfg, datasets[key])
    if errors:
        raise ConfigError("\n".join(dict.fromkeys(errors)))


def check_suite(spec: StudySpec, settings: Settings, data_root: str | None = None,
                datasets: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every variant of ``spec`` validated and checked against its datasets; one
    :class:`ConfigError` listing every problem. Returns the loaded datasets (data config
    JSON -> dataset) for the runner to reuse."""
    datasets = {} if datasets is None else datasets
    errors = []
    parts = spec.expand()
    for part in parts:
        try:
            preflight(validate_cells(settings, part), datasets, data_root or settings.data_root)
        except ConfigError as e:
            errors.append(f"[{part.name}] {e}" if len(parts) > 1 or spec.variants else str(e))
    if errors:
        raise ConfigError("\n".join(errors))
    return datasets


def _same_values(settings: Settings, spec: StudySpec) -> list[str]:
    """Grid values that differ as written but are one value once coerced to their config
    field (``[8, 8.0]`` for a float, ``[1, "1"]`` for an int): they would train the same
    cell twice. Each value is resolved with the other axes at their first value and the
    whole trial config compared, so a loss-specific field is coerced by its own loss."""
    first = {k: v[0] for k, v in spec.grid.items()}
    problems = []
    for key, values in spec.grid.items():
        seen: dict[str, int] = {}
        for i, x in enumerate(values):
            try:
                cfg = resolve_trial(settings.trial, spec.effective_trial(), dotted={**first, key: x})
            except ConfigError:
                continue  # reported cell by cell
            j = seen.setdefault(cfg.model_dump_json(), i)
            if j != i:
                problems.append(f"grid.{key}: {values[j]!r} and {x!r} are the same value once read as the config field "
                                f"(they would train the same cell twice); keep one of them")
    return problems


#: A grid with more cells than this runs only with ``--yes`` (``bench grid FILE --yes``).
CONFIRM_CELLS = 10_000


def grid_size(spec: StudySpec) -> int:
    """Cells over every variant of ``spec`` (0 for a search)."""
    total = 0
    for part in spec.expand():
        if part.kind == "grid":
            n = 1
            for v in part.grid.values():
                n *= len(v)
            total += n
    return total


def check_size(spec: StudySpec, path: str, yes: bool) -> None:
    """Refuse a grid over :data:`CONFIRM_CELLS` cells unless ``yes``: a typo in a range
    (``range(0, 1000)`` for ``range(0, 10)``) should not start a month of training."""
    n = grid_size(spec)
    if n > CONFIRM_CELLS and not yes:
        axes = " + ".join(" x ".join(f"{len(v)} {k}" for k, v in part.grid.items()) for part in spec.expand())
        raise ConfigError(f"{path}: the grid has {n:,} cells ({axes}), more than {CONFIRM_CELLS:,}; "
                          f"shrink the grid, or pass --yes to run them all")


def _value_probes(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Cells that together hold every value of every axis: the first cell, then each other
    value of one axis with the rest at their first value."""
    first = {k: v[0] for k, v in grid.items()}
    return [first] + [{**first, k: x} for k, vals in grid.items() for x in vals[1:]]


def _space_probes(space: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Configs that cover every value a search can draw at its edges: each ``choice``
    value and both ends of each range, the other keys at their low end."""
    def values(dist: dict[str, Any]) -> list[Any]:
        kind, arg = next(iter(dist.items()))
        return list(arg) if kind == "choice" else [arg[0], arg[1]]

    low = {k: values(d)[0] for k, d in space.items()}
    probes = [low]
    for k, d in space.items():
        probes += [{**low, k: v} for v in values(d)[1:]]
    return probes
