"""The pipeline file (``pipeline.toml``): typed, frozen sections, validated on load.

Unknown sections or keys are errors (a typo must not silently fall back to a default). The embedded
default (``default.toml`` next to this module) is what ``toolchain pipeline`` runs with no file.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.errors import BadInputError, InputNotFoundError

DEFAULT_FILE = Path(__file__).with_name("default.toml")


@dataclass(frozen=True, kw_only=True)
class DataSection:
    source: str = "synthetic"
    images: int = 4000
    corrupt: int = 12
    seed: int = 7
    group_by: str = "sequence"


@dataclass(frozen=True, kw_only=True)
class TrainSection:
    recipe: str = "edgenet"
    search: str = "random"
    trials: int = 3
    trial_epochs: int = 3
    epochs: int = 0
    device: str = "auto"
    seed: int = 0
    seeds: int = 1  # like `train --seeds`: K seeds of the final configuration, one picked on validation
    overrides: tuple[tuple[str, Any], ...] = ()  # [train.overrides] recipe parameters, like `train --set`


@dataclass(frozen=True, kw_only=True)
class GatesSection:
    min_accuracy: float = 0.0
    min_recall: float = 0.0
    min_precision: float = 0.0
    on_fail: str = "stop"


@dataclass(frozen=True, kw_only=True)
class ExportSection:
    opset: int = 17
    batch: str = "dynamic"
    input: str = "float-nchw"


@dataclass(frozen=True, kw_only=True)
class QuantizeSection:
    enabled: bool = True
    samples: int = 256
    max_drop: float = 2.0


@dataclass(frozen=True, kw_only=True)
class TargetSection:
    name: str
    precisions: tuple[str, ...] = ("fp32",)
    on: str = ""
    build_image: str = ""


@dataclass(frozen=True, kw_only=True)
class BenchSection:
    source: str = "synthetic"
    seconds: float = 10.0
    fps: float = 30.0
    size: str = "640x352"
    streams: int = 1
    duration: float = 8.0
    warmup: float = 1.0
    pace: str = "realtime"


@dataclass(frozen=True, kw_only=True)
class RegistrySection:
    alias: str = "candidate"


@dataclass(frozen=True, kw_only=True)
class DeploySection:
    fleet: str = ""
    canary: int = 1
    parallel: int = 2
    base_image: str = ""  # override the target profile's runtime_image when packaging
    docker_host: str = ""  # engine that builds the images (default $DOCKER_HOST)


@dataclass(frozen=True, kw_only=True)
class HandoffSection:
    """Files for NVIDIA's video stack per build (``toolchain handoff``): ``formats`` some of deepstream, triton."""

    formats: tuple[str, ...] = ()
    mode: str = "primary"  # DeepStream: primary (whole frames) or secondary (a detector's objects)


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """A whole pipeline; ``base`` is the folder relative paths are resolved against."""

    name: str = "highway"
    workdir: str = "pipeline-out"
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    gates: GatesSection = field(default_factory=GatesSection)
    export: ExportSection = field(default_factory=ExportSection)
    quantize: QuantizeSection = field(default_factory=QuantizeSection)
    targets: tuple[TargetSection, ...] = (TargetSection(name="x86-64-cpu", precisions=("fp32", "int8")),)
    bench: BenchSection = field(default_factory=BenchSection)
    registry: RegistrySection = field(default_factory=RegistrySection)
    deploy: DeploySection = field(default_factory=DeploySection)
    handoff: HandoffSection = field(default_factory=HandoffSection)
    base: Path = field(default=Path("."), compare=False)
    source: str = field(default="", compare=False)

    def path(self, value: str) -> Path:
        """``value`` resolved against the config file's folder (absolute paths stay as they are)."""
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else (self.base / candidate)

    @property
    def work_path(self) -> Path:
        return self.path(self.workdir)

    def section(self, name: str) -> dict[str, Any]:
        """One section as plain data (what a stage's cache key covers)."""
        value = getattr(self, name)
        if isinstance(value, tuple):
            return {"items": [dataclasses.asdict(v) for v in value]}
        return dataclasses.asdict(value)


_SECTIONS: dict[str, type] = {
    "data": DataSection, "train": TrainSection, "gates": GatesSection, "export": ExportSection,
    "quantize": QuantizeSection, "bench": BenchSection, "registry": RegistrySection, "deploy": DeploySection,
    "handoff": HandoffSection,
}


def _build(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise BadInputError(f"{where} must be a table of settings")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise BadInputError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    converted: dict[str, Any] = {}
    for key, value in values.items():
        default = fields[key].default
        if key == "overrides":
            if not isinstance(value, dict):
                raise BadInputError(f"{where}.overrides must be a table of recipe parameters (e.g. input_size = 64)")
            value = tuple(sorted(value.items()))
        elif isinstance(default, tuple) or key in ("precisions", "formats"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise BadInputError(f"{where}.{key} must be a list of strings")
            value = tuple(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise BadInputError(f"{where}.{key} must be true or false")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BadInputError(f"{where}.{key} must be a number")
            value = float(value)
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise BadInputError(f"{where}.{key} must be a whole number")
        elif isinstance(default, str) and not isinstance(value, str):
            raise BadInputError(f"{where}.{key} must be a string")
        converted[key] = value
    try:
        return cls(**converted)
    except TypeError as exc:
        raise BadInputError(f"{where}: {exc}") from exc


def parse_pipeline(data: dict[str, Any], *, base: Path, source: str) -> PipelineConfig:
    """Validate parsed TOML into a :class:`PipelineConfig`."""
    known = {"pipeline", "targets", *_SECTIONS}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BadInputError(f"{source}: unknown section(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    head = data.get("pipeline", {})
    if not isinstance(head, dict) or set(head) - {"name", "workdir"}:
        raise BadInputError(f"{source}: [pipeline] takes name and workdir only")
    name = str(head.get("name", "highway"))
    if not name or "@" in name or "/" in name:
        raise BadInputError(f"{source}: [pipeline] name {name!r} must be a plain name (no '@' or '/')")
    sections = {key: _build(cls, data.get(key, {}), f"[{key}]") for key, cls in _SECTIONS.items()}
    raw_targets = data.get("targets", [{"name": "x86-64-cpu", "precisions": ["fp32", "int8"]}])
    if not isinstance(raw_targets, list) or not raw_targets:
        raise BadInputError(f"{source}: [[targets]] must list at least one target")
    targets = tuple(_build(TargetSection, t, f"[[targets]] #{i + 1}") for i, t in enumerate(raw_targets))
    config = PipelineConfig(name=name, workdir=str(head.get("workdir", "pipeline-out")), targets=targets, base=base,
                            source=source, **sections)
    _check(config)
    return config


def _check(config: PipelineConfig) -> None:
    if config.gates.on_fail not in ("stop", "continue"):
        raise BadInputError('[gates] on_fail must be "stop" or "continue"')
    if config.train.search not in ("", "random", "grid"):
        raise BadInputError('[train] search must be "random", "grid" or ""')
    if config.train.seeds < 1:
        raise BadInputError("[train] seeds must be at least 1 (1 trains one seed; K > 1 picks one of K on validation)")
    if config.bench.pace not in ("realtime", "max"):
        raise BadInputError('[bench] pace must be "realtime" or "max"')
    for target in config.targets:
        bad = [p for p in target.precisions if p not in ("fp32", "fp16", "int8")]
        if bad or not target.precisions:
            raise BadInputError(f"[[targets]] {target.name}: precisions must be some of fp32, fp16, int8 (got {bad or 'none'})")
        if "int8" in target.precisions and not config.quantize.enabled:
            raise BadInputError(f"[[targets]] {target.name} asks for int8 but [quantize] enabled = false")
    bad_formats = [f for f in config.handoff.formats if f not in ("deepstream", "triton")]
    if bad_formats:
        raise BadInputError(f"[handoff] formats must be some of deepstream, triton (got {bad_formats})")
    if config.handoff.mode not in ("primary", "secondary"):
        raise BadInputError('[handoff] mode must be "primary" or "secondary"')
    if "deepstream" in config.handoff.formats:
        from toolchain.targets.profile import load_target

        if not any(load_target(t.name).is_tensorrt for t in config.targets):
            raise BadInputError("[handoff] formats has deepstream, but no [[targets]] is a Jetson (TensorRT) target: "
                                "DeepStream runs TensorRT engines; add one, or hand off to triton only")
    if config.data.source == "synthetic" and config.data.images < 100:
        raise BadInputError("[data] images: a synthetic lake needs at least 100 images to split and train")


def load_pipeline(path: Path | None) -> PipelineConfig:
    """Read ``path`` (or the embedded default, with paths relative to the current directory)."""
    if path is None:
        text, base, source = DEFAULT_FILE.read_text(), Path.cwd(), "embedded default"
    else:
        if not path.is_file():
            raise InputNotFoundError(f"no pipeline file at {path}; run `toolchain pipeline` without one for the default")
        text, base, source = path.read_text(), path.resolve().parent, str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInputError(f"{source} is not valid TOML: {exc}") from exc
    return parse_pipeline(data, base=base, source=source)
