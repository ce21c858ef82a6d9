"""Typed, validated configuration: ``bench.yaml`` settings and the trial config.

A trial config is plain nested data (YAML) validated by pydantic before any work starts.
Overrides are dotted paths (``loss.alpha=64``). Errors name the field and what is allowed.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.data import DATASETS
from bench.losses import LOSSES

class ConfigError(ValueError):
    """A config that cannot run; the message lists every bad field and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class SyntheticConfig(_Strict):
    """Knobs of the embedded ``synthetic`` dataset (see ``docs/datasets.md``)."""

    super_classes: int = Field(8, ge=1, description="number of super-classes (hierarchy top)")
    classes_per_super: int = Field(25, ge=2, description="classes under each super-class")
    samples_per_class: int = Field(30, ge=2)
    latent_dim: int = Field(16, ge=2, description="dimension of the latent class structure")
    feature_dim: int = Field(64, ge=2, description="dimension of the observed features")
    hierarchy_strength: float = Field(1.0, ge=0, description="how far super-classes separate")
    class_spread: float = Field(0.8, gt=0, description="class-centre scatter inside a super-class")
    sample_spread: float = Field(0.4, ge=0, description="within-class spread")
    nuisance_dim: int = Field(8, ge=0, description="latent nuisance factors shared by all classes")
    nuisance_scale: float = Field(2.0, ge=0, description="spread of the nuisance factors")
    nonlinearity: float = Field(0.6, gt=0, description="frequency of the random sin feature map")


class DataConfig(_Strict):
    name: str = Field("synthetic", description="dataset name (bench.data.DATASETS)")
    root: str | None = Field(None, description="dataset folder or file; default data_root/name")
    seed: int = 0
    val_fraction: float = Field(0.2, ge=0, le=0.5, description="share of train classes held out")
    noise_rate: float = Field(0.0, ge=0, lt=1, description="training-label noise rate")
    noise_kind: Literal["symmetric", "pairflip", "within_parent"] = "symmetric"
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    image_size: int | None = Field(
        None, ge=1, description="crop size of the image path; null = 224 for image files, the native size of in-memory images (digits: 8)"
    )
    crop_scale: tuple[Annotated[float, Field(gt=0, le=1)], Annotated[float, Field(gt=0, le=1)]] = Field(
        (0.08, 1.0), description="area range [low, high] of the training random resized crop (low <= high)"
    )
    hflip: bool = Field(True, description="random horizontal flip in training")
    decode_short_side: int | None = Field(
        None, ge=0, description="downsize image files on decode to this shorter side; null = the eval resize (256 at 224), 0 = full resolution"
    )
    image_store: str | None = Field(
        ".cache/images",
        description="folder of the decoded-image store (image files decoded once per dataset into a uint8 "
        "memory-mapped file shared by every trial and worker); null = decode the files every epoch, write nothing",
    )

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in DATASETS:
            raise ValueError(f"unknown dataset {v!r}; allowed: {', '.join(DATASETS.names())}")
        return v

    @field_validator("crop_scale")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] > v[1]:
            raise ValueError(f"low {v[0]} exceeds high {v[1]}; give [low, high], e.g. [0.08, 1.0]")
        return v


class ModelConfig(_Strict):
    backbone: str = Field("none", description="'none' = head over features; a registered backbone (bench.models.registry) or timm:<name>")
    embedding_dim: int = Field(128, ge=1)
    head: Literal["mlp", "linear"] = "mlp"
    head_init: Literal["auto", "pytorch", "official"] = Field(
        "auto",
        description="embedding layer init: 'official' = kaiming_normal_(fan_out) weights, zero bias (the official "
        "Proxy-Anchor code, over a trained backbone); 'pytorch' = nn.Linear's default; auto = official for an image "
        "model whose backbone trains, pytorch for a head over features (features files, frozen-backbone features)",
    )
    hidden_dim: int = Field(512, ge=1, description="width of the MLP head's hidden layer")
    pool: Literal["gap_gmp", "gap", "gmp"] = Field("gap_gmp", description="pooling of the backbone's feature map (GAP+GMP summed, as the official code)")
    weights: str | None = Field(
        None, description="backbone weights: a name the backbone has (imagenet | dino | in21k: the published file, fetched "
        "once into torch's hub cache and checked), a URL, or a PATH; loaded weights-only. Preprocessing comes with them"
    )
    pretrained: bool = Field(False, description="the backbone's default published weights (when model.weights is not set)")
    freeze_backbone: bool = Field(
        False, description="frozen backbone: features computed once (cached) and only the head trains (Smooth Proxy-Anchor's setting)"
    )
    feature_cache: str | None = Field(
        ".cache/features", description="folder for cached frozen-backbone features; null = in-process memory only"
    )

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, v: str) -> str:
        from bench.models.registry import check_backbone  # torch-free

        try:
            return check_backbone(v)
        except KeyError as e:
            raise ValueError(str(e)) from None

    @model_validator(mode="after")
    def _weights_fit_backbone(self) -> "ModelConfig":
        from bench.models.registry import is_timm
        from bench.models.weights import check_weights, is_url, looks_like_path

        if is_timm(self.backbone):
            if self.weights and not (is_url(self.weights) or looks_like_path(self.weights)):
                raise ValueError(f"model.weights={self.weights!r}: a timm backbone takes model.pretrained=true (timm's "
                                 "weights; a tag picks which, e.g. timm:vit_small_patch16_224.dino), a PATH or a URL")
        elif self.backbone != "none":
            check_weights(self.backbone, self.weights)
        return self


class TrainConfig(_Strict):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(180, ge=2, description="samples per batch (>= 2)")
    lr: float = Field(1e-3, gt=0, description="head learning rate (official image recipe: 1e-4)")
    proxy_lr_mult: float = Field(100.0, gt=0, description="proxy learning rate = lr * this")
    weight_decay: float = Field(1e-4, ge=0)
    grad_clip: float | None = Field(
        None, gt=0, description="gradient clipping threshold (see grad_clip_mode); null = off (the paper presets: 10, value)"
    )
    sampler: Literal["random", "m_per_class"] = "random"
    m_per_class: int = Field(4, ge=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    grad_clip_mode: Literal["norm", "value"] = Field(
        "norm", description="'norm': clip the model's total grad norm; 'value': clip every grad of model and loss at +-grad_clip (the official code)"
    )
    backbone_lr_mult: float = Field(1.0, gt=0, description="backbone learning rate = lr * this (image path)")
    warmup_epochs: int = Field(0, ge=0, description="first N epochs train head and proxies only, backbone frozen (official: 1)")
    freeze_bn: bool = Field(False, description="backbone BatchNorm in eval mode with frozen affine parameters (official CUB/Cars: true)")
    lr_step: int | None = Field(None, ge=1, description="StepLR step size in epochs; null = constant learning rate")
    lr_gamma: float = Field(0.5, gt=0, le=1, description="StepLR decay factor")
    amp: Literal["auto", "bf16", "fp16", "none"] = Field(
        "auto", description="mixed precision: auto = bf16 for image backbones on CUDA, none otherwise; fp16 needs CUDA"
    )
    channels_last: bool = Field(True, description="channels_last memory format for image backbones on CUDA")
    compile: bool = Field(False, description="torch.compile the backbone's training forward (head, loss and evaluation run eager)")
    num_workers: int | None = Field(
        None, ge=0, description="image loader worker processes; null = 0 for in-memory images, else min(8, cores - 1)"
    )


class EvalConfig(_Strict):
    ks: list[int] | None = Field(
        None, description="Recall@K cut-offs; null = the dataset's protocol (CUB/Cars 1,2,4,8; SOP 1,10,100,1000; ...)"
    )
    select_on: Literal["val", "test"] = Field(
        "val", description="'val' (honest) or 'test' (paper parity, labelled as such)"
    )
    every: int = Field(1, ge=1, description="evaluate every N epochs (and the last)")

    @field_validator("ks")
    @classmethod
    def _ks(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return None
        if not v or any(k < 1 for k in v):
            raise ValueError("eval.ks must be a non-empty list of positive integers, e.g. [1, 2, 4, 8]")
        return sorted(set(v))


def _loss_union():
    classes = tuple(e.config_cls for e in LOSSES.entries())
    return Annotated[Union[classes], Field(discriminator="name")]  # type: ignore[valid-type]


LossConfig = _loss_union()
DEFAULT_LOSS = "proxy_anchor"


class TrialConfig(_Strict):
    """Everything one trial needs; the flattened form is what MLflow stores as params."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=lambda: LOSSES.get(DEFAULT_LOSS).config_cls())  # type: ignore[valid-type]
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    def flat(self) -> dict[str, Any]:
        return flatten(self.model_dump(mode="json"))


class Settings(_Strict):
    """``bench.yaml``: where things live, plus the default trial."""

    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_root: str = "mlruns/artifacts"
    storage: str = "sqlite:///studies/optuna.db"
    data_root: str = "~/datasets"
    threads: int | None = Field(None, ge=1, description="torch/faiss CPU threads per worker; default: cores / live workers")
    ui_url: str | None = Field(None, description="MLflow UI address reports link run ids into, e.g. http://127.0.0.1:5000")
    trial: dict[str, Any] = Field(default_factory=dict)


# ---------------------------------------------------------------------------- helpers


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def parse_value(text: str) -> Any:
    """``--set key=value``: the value is read as YAML (``64`` -> int, ``[1,2]`` -> list)."""
    return yaml.safe_load(text)


def set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dict ``d``; changing ``loss.name`` resets the loss section."""
    parts = key.split(".")
    if parts == ["loss", "name"] and d.get("loss", {}).get("name") != value:
        d["loss"] = {"name": value}
        return
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = cur[p] = {}
        cur = nxt
    cur[parts[-1]] = value


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``over`` into a copy of ``base``.

    A loss section with another ``name`` replaces the base's loss section instead of being
    merged into it: proxy_anchor's alpha means nothing to proxy_nca.
    """
    out = copy.deepcopy(base)
    for k, v in over.items():
        if (
            k == "loss"
            and isinstance(v, dict)
            and "name" in v
            and isinstance(out.get("loss"), dict)
            and out["loss"].get("name") != v["name"]
        ):
            out["loss"] = copy.deepcopy(v)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _describe(err: dict[str, Any], root: type[BaseModel]) -> str:
    loc = [str(p) for p in err["loc"]]
    # Drop the discriminator tag pydantic inserts: ('loss', 'proxy_anchor', 'alpha').
    if len(loc) >= 2 and loc[0] == "loss" and loc[1] in LOSSES:
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(LOSSES.get(loc[1]).config_cls, loc[2:-1])
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            return f"{'.'.join([loc[0]] + loc[2:])}: unknown key{hint}"
        loc = [loc[0]] + loc[2:]
    field = ".".join(loc) or "<root>"
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(root, loc[:-1])
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return f"{field}: unknown key{hint}"
    if err["type"] == "union_tag_invalid":
        return f"{field}.name: unknown loss {err['input'].get('name')!r}; allowed: {', '.join(sorted(LOSSES))}"
    if err["type"] == "union_tag_not_found":
        return f"{field}.name: missing; allowed: {', '.join(sorted(LOSSES))}"
    got = err.get("input")
    got_s = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{field}: {err['msg']}{got_s}"


def _allowed_keys(root: type[BaseModel], path: list[str]) -> list[str]:
    model: Any = root
    for p in path:
        fields = getattr(model, "model_fields", None)
        if fields is None or p not in fields:
            return []
        model = fields[p].annotation
    fields = getattr(model, "model_fields", None)
    return sorted(fields) if fields else []


def validate_trial(raw: dict[str, Any]) -> TrialConfig:
    """Validate a nested trial dict; raise :class:`ConfigError` listing every bad field."""
    if isinstance(raw.get("loss"), dict) and "name" not in raw["loss"]:
        raw = {**raw, "loss": {"name": DEFAULT_LOSS, **raw["loss"]}}
    try:
        return TrialConfig.model_validate(raw)
    except ValidationError as e:
        lines = [_describe(err, TrialConfig) for err in e.errors()]
        raise ConfigError("invalid trial config:\n  " + "\n  ".join(lines)) from None


def resolve_trial(
    base: dict[str, Any] | None = None,
    *overlays: dict[str, Any],
    dotted: dict[str, Any] | None = None,
) -> TrialConfig:
    """``base`` (bench.yaml's trial) <- nested overlays <- dotted overrides, validated."""
    d: dict[str, Any] = copy.deepcopy(base or {})
    for o in overlays:
        d = merge(d, o or {})
    for k, v in (dotted or {}).items():
        set_dotted(d, k, v)
    return validate_trial(d)


def settings_path(path: str | Path | None = None) -> Path:
    """The settings file a command reads: ``path`` (``--config``), else ``$BENCH_CONFIG``,
    else ``./bench.yaml`` (which may not exist: then the defaults apply)."""
    return Path(path or os.environ.get("BENCH_CONFIG", "bench.yaml"))


def load_settings(path: str | Path | None = None) -> Settings:
    """Read :func:`settings_path`; defaults if absent.

    ``MLFLOW_TRACKING_URI`` overrides the file's tracking URI; command-line flags override
    both (the CLI applies them).
    """
    p = settings_path(path)
    raw: dict[str, Any] = {}
    if p.is_dir():
        raise ConfigError(f"settings file {p} is a folder; name the bench.yaml file")
    if p.exists():
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except UnicodeDecodeError as e:
            raise ConfigError(f"settings file {p}: not a text file (byte {e.start} is not UTF-8); give a YAML file") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"{p}: not valid YAML{where}; fix the file") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level")
    elif path is not None:
        raise ConfigError(f"config file {p} does not exist")
    try:
        s = Settings.model_validate(raw)
    except ValidationError as e:
        lines = [_describe(err, Settings) for err in e.errors()]
        raise ConfigError(f"invalid {p}:\n  " + "\n  ".join(lines)) from None
    if os.environ.get("MLFLOW_TRACKING_URI"):
        s.tracking_uri = os.environ["MLFLOW_TRACKING_URI"]
    return s
