"""Run the whole chain: lake -> ingest -> train (search) -> evaluate (gates) -> export -> quantize ->
build per target and precision -> bench -> register (-> package/deploy when a fleet is given).

Each stage calls the same library function its ``toolchain`` subcommand calls, inside a cache (see
:mod:`toolchain.pipeline.cache`): unchanged stages are skipped; a killed run resumes at the first
unfinished stage. Ingest always looks at the lake (its content may have changed without the config
changing) but decodes only new images and returns the same version when nothing changed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from toolchain.errors import QualityGateError
from toolchain.extras import require
from toolchain.pipeline.cache import StageOutcome, find_stage, save_stage, stage_key
from toolchain.pipeline.config import PipelineConfig
from toolchain.progress import NullProgress, Progress
from toolchain.workspace import Workspace

StageLog = Callable[[StageOutcome], None]


@dataclass(frozen=True, kw_only=True)
class SummaryRow:
    """One line of the final table: an engine for a target and precision, and how it did."""

    target: str
    precision: str
    size_mb: float
    accuracy: float | None
    precision_macro: float | None
    recall_min: float | None
    p99_ms: float | None
    fps: float | None
    realtime: bool | None
    build: str
    onnx: str
    benchmark: str | None

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass(frozen=True, kw_only=True)
class PipelineResult:
    """Every stage's outcome and the summary rows."""

    name: str
    stages: tuple[StageOutcome, ...]
    rows: tuple[SummaryRow, ...]
    model: str
    dataset: str
    gates_passed: bool
    alias: str = ""
    deployment: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def skipped(self) -> int:
        return sum(1 for s in self.stages if s.skipped)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "dataset": self.dataset, "model": self.model, "gates_passed": self.gates_passed,
            "alias": self.alias, "seconds": round(self.seconds, 3),
            "stages": [{"stage": s.stage, "skipped": s.skipped, "seconds": round(s.seconds, 3), "key": s.key,
                        "record": s.record, "outputs": s.outputs} for s in self.stages],
            "skipped": self.skipped, "rows": [r.to_json() for r in self.rows], "deployment": self.deployment,
        }


class PipelineRunner:
    """Runs the stages of one :class:`PipelineConfig` against a workspace."""

    def __init__(self, workspace: Workspace, config: PipelineConfig, *, progress: Progress | None = None,
                 on_stage: StageLog | None = None) -> None:
        self.workspace = workspace
        self.config = config
        self.progress = progress or NullProgress()
        self.on_stage = on_stage or (lambda outcome: None)
        self.outcomes: list[StageOutcome] = []

    # -- the cache wrapper -------------------------------------------------------------------------
    def stage(self, name: str, section: Any, inputs: dict[str, Any], code: tuple[str, ...],
              work: Callable[[], tuple[dict[str, Any], list[str]]], *, cache: bool = True) -> dict[str, Any]:
        """Run ``work`` (returning ``(outputs, record ids)``) unless a finished stage has the same key."""
        started = time.perf_counter()
        key = stage_key(name, section, inputs, code)
        found = find_stage(self.workspace, key) if cache else None
        if found is not None:
            record = found.pop("_record")
            outcome = StageOutcome(stage=name, key=key, outputs=found, skipped=True,
                                   seconds=time.perf_counter() - started, record=record)
        else:
            outputs, records = work()
            seconds = time.perf_counter() - started
            record = save_stage(self.workspace, pipeline=self.config.name, stage=name, key=key, outputs=outputs,
                                records=records, seconds=seconds)
            outcome = StageOutcome(stage=name, key=key, outputs=outputs, skipped=bool(outputs.get("unchanged")),
                                   seconds=seconds, record=record)
        self.outcomes.append(outcome)
        self.on_stage(outcome)
        return outcome.outputs

    # -- the chain ---------------------------------------------------------------------------------
    def run(self) -> PipelineResult:
        started = time.perf_counter()
        cfg = self.config
        # Every extra the stages will need, before the first stage (not after an hour of training).
        require("train", needed_by="toolchain pipeline")
        if cfg.deploy.fleet:
            require("deploy", needed_by="toolchain pipeline with a [deploy] fleet")
        if cfg.handoff.formats:
            require("handoff", needed_by="toolchain pipeline with [handoff] formats")
        lake = self._lake()
        dataset = self._ingest(lake)
        model = self._train(dataset)
        evaluation = self._evaluate(model)
        fp32 = self._export(model)
        int8 = self._quantize(fp32) if cfg.quantize.enabled else None
        onnx_for = {"fp32": fp32, "fp16": fp32, "int8": int8}
        accuracy = {"fp32": self._evaluate_onnx("evaluate-fp32", fp32)}
        if int8:
            accuracy["int8"] = self._evaluate_onnx("evaluate-int8", int8)
        accuracy["fp16"] = accuracy["fp32"]
        clip = self._clip()
        rows = []
        for target in cfg.targets:
            for precision in target.precisions:
                onnx = onnx_for[precision]
                assert onnx is not None  # config validation: int8 needs [quantize] enabled
                built = self._build(target, precision, onnx)
                for fmt in cfg.handoff.formats:
                    if fmt == "triton" or _is_tensorrt(target.name):  # DeepStream runs TensorRT engines only
                        self._handoff(built["build"], target.name, precision, fmt)
                bench = (self._bench(built["build"], clip, target.name, precision) if _runs_here(target.name)
                         else {"benchmark": None, "note": f"bench {target.name} engines on the device: toolchain bench "
                                                          f"{built['build'][:12]} --source CAMERA"})
                metrics = accuracy[precision]
                rows.append(SummaryRow(
                    target=target.name, precision=precision, size_mb=built["size_mb"], accuracy=metrics.get("accuracy"),
                    precision_macro=metrics.get("precision_macro"), recall_min=metrics.get("recall_min"),
                    p99_ms=bench.get("p99_ms"), fps=bench.get("fps"), realtime=bench.get("realtime"),
                    build=built["build"], onnx=onnx, benchmark=bench.get("benchmark"),
                ))
        alias = self._register(model, rows, evaluation["passed"])
        if cfg.deploy.fleet and not alias:
            raise QualityGateError(
                "not deploying: the model did not pass its gates, so no alias was set for the fleet to run "
                "(the summary above shows why); fix the gates or deploy a release by hand with `toolchain deploy`"
            )
        deployment = self._deploy(model) if cfg.deploy.fleet else {}
        return PipelineResult(name=cfg.name, stages=tuple(self.outcomes), rows=tuple(rows), model=model, dataset=dataset,
                              gates_passed=evaluation["passed"], alias=alias, deployment=deployment,
                              seconds=time.perf_counter() - started)

    # -- stages -----------------------------------------------------------------------------------
    def _lake(self) -> str:
        data = self.config.data
        if data.source != "synthetic":
            return str(self.config.path(data.source)) if "://" not in data.source else data.source
        # One folder per lake config: the generator is deterministic, so a finished folder is reused.
        out = self.config.work_path / f"lake-{data.images}-seed{data.seed}-corrupt{data.corrupt}"

        def work() -> tuple[dict[str, Any], list[str]]:
            from toolchain.synth.lake import LakeConfig, generate_lake

            if (out / "manifest.csv").is_file():
                return {"lake": str(out)}, []
            # Generated beside the final folder and renamed when complete: a run killed halfway leaves
            # only the partial folder, which the rerun discards (the generator never overwrites files).
            partial = out.with_name(out.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            self.progress.start(f"synth lake: {data.images} images", data.images)
            generate_lake(partial, LakeConfig(images=data.images, seed=data.seed, corrupt=data.corrupt),
                          progress=lambda n: self.progress.advance(n))
            self.progress.finish()
            partial.rename(out)
            return {"lake": str(out)}, []

        section = {k: v for k, v in self.config.section("data").items() if k != "group_by"}
        outputs = self.stage("lake", {**section, "out": str(out)}, {}, ("synth",), work,
                             cache=(out / "manifest.csv").is_file())  # a deleted lake is generated again
        return str(outputs["lake"])

    def _ingest(self, lake: str) -> str:
        from toolchain.data.ingest import IngestConfig, ingest

        def work() -> tuple[dict[str, Any], list[str]]:
            result = ingest(self.workspace, IngestConfig(source=lake, name=self.config.name,
                                                         group_by=self.config.data.group_by), progress=self.progress)
            return {"dataset": result.version, "ref": f"{result.name}@v{result.number}", "unchanged": not result.created,
                    "images": result.counts.get("all", {}).get("total", 0)}, [result.version]

        # Always run: the lake's files may have changed under the same config (ingest is incremental).
        return str(self.stage("ingest", {"lake": lake, "group_by": self.config.data.group_by}, {}, ("data",), work,
                              cache=False)["dataset"])

    def _train(self, dataset: str) -> str:
        t = self.config.train

        def work() -> tuple[dict[str, Any], list[str]]:
            from toolchain.train.search import TrainConfig, train

            result = train(self.workspace, TrainConfig(
                data=dataset, recipe=t.recipe, name=f"{self.config.name}-{t.recipe}", epochs=t.epochs or None,
                search=t.search or None, trials=t.trials, trial_epochs=t.trial_epochs, device=t.device, seed=t.seed,
                overrides=t.overrides, seeds=t.seeds,
            ), progress=self.progress)
            final = result.final
            assert final.model_id is not None
            seeds = result.seed_summary
            return {"model": final.model_id, "ref": final.model_ref, "run": final.run,
                    "val_accuracy": final.val_accuracy, "params": result.best_params,
                    "resumed_from_epoch": final.resumed_from_epoch,
                    **({"seeds": {"count": seeds["count"], "picked_seed": seeds["picked_seed"],
                                  "test_accuracy": seeds["test_accuracy"]}} if seeds else {})}, [final.model_id, final.run]

        return str(self.stage("train", self.config.section("train"), {"dataset": dataset}, ("train", "models"), work)["model"])

    def _evaluate(self, model: str) -> dict[str, Any]:
        g = self.config.gates

        def work() -> tuple[dict[str, Any], list[str]]:
            from toolchain.evaluate.gates import Gate
            from toolchain.evaluate.model import EvaluateConfig, evaluate_model

            gates = [Gate(metric=m, threshold=v) for m, v in
                     (("accuracy", g.min_accuracy), ("recall", g.min_recall), ("precision", g.min_precision)) if v > 0]
            report = evaluate_model(self.workspace, EvaluateConfig(model=model, gates=tuple(gates)))
            return {"evaluation": report.evaluation, "passed": report.gates.passed, "message": report.gates.message(),
                    **_metric_summary(report.to_json())}, [report.evaluation]

        outputs = self.stage("evaluate", self.config.section("gates"), {"model": model}, ("evaluate",), work)
        if not outputs["passed"] and g.on_fail == "stop":
            raise QualityGateError(
                f"quality gate not met: {outputs['message']}. The pipeline stopped before export; improve the data or "
                "recipe, or set [gates] on_fail = \"continue\" to carry on and see the rest"
            )
        return outputs

    def _export(self, model: str) -> str:
        e = self.config.export

        def work() -> tuple[dict[str, Any], list[str]]:
            from toolchain.export.onnx_export import ExportConfig, export_model

            result = export_model(self.workspace, ExportConfig(model=model, opset=e.opset, batch=e.batch, input=e.input,
                                                               target=self.config.targets[0].name), progress=self.progress)
            return {"onnx": result.artifact, "ref": result.ref}, [result.artifact]

        return str(self.stage("export", self.config.section("export"), {"model": model}, ("export", "models"), work)["onnx"])

    def _quantize(self, onnx: str) -> str:
        q = self.config.quantize

        def work() -> tuple[dict[str, Any], list[str]]:
            from toolchain.quantize.static import QuantizeConfig, quantize_model

            result = quantize_model(self.workspace, QuantizeConfig(onnx=onnx, samples=q.samples, max_drop=q.max_drop),
                                    progress=self.progress)
            return {"onnx": result.artifact, "ref": result.ref, "accuracy_drop": result.accuracy_drop}, [result.artifact]

        return str(self.stage("quantize", self.config.section("quantize"), {"onnx": onnx}, ("quantize",), work)["onnx"])

    def _evaluate_onnx(self, name: str, onnx: str) -> dict[str, Any]:
        def work() -> tuple[dict[str, Any], list[str]]:
            from toolchain.evaluate.model import EvaluateConfig, evaluate_model

            report = evaluate_model(self.workspace, EvaluateConfig(model=onnx, plots=False))
            return {"evaluation": report.evaluation, **_metric_summary(report.to_json())}, [report.evaluation]

        return self.stage(name, {}, {"onnx": onnx}, ("evaluate", "runtime"), work)

    def _clip(self) -> str:
        b = self.config.bench
        if b.source != "synthetic":
            return str(self.config.path(b.source)) if "://" not in b.source else b.source
        width, _, height = b.size.partition("x")
        out = self.config.work_path / f"clip-{b.size}-{b.fps:g}fps-{b.seconds:g}s.mp4"

        def work() -> tuple[dict[str, Any], list[str]]:
            from toolchain.synth.video import VideoConfig, write_video

            write_video(out, VideoConfig(width=int(width), height=int(height), fps=b.fps, seconds=b.seconds))
            return {"clip": str(out)}, []

        section = {"size": b.size, "fps": b.fps, "seconds": b.seconds, "out": str(out)}
        return str(self.stage("clip", section, {}, ("synth",), work, cache=out.is_file())["clip"])

    def _build(self, target: Any, precision: str, onnx: str) -> dict[str, Any]:
        def work() -> tuple[dict[str, Any], list[str]]:
            from toolchain.build.service import BuildConfig, build

            result = build(self.workspace, BuildConfig(onnx=onnx, target=target.name, precision=precision,
                                                       on=target.on or None, build_image=target.build_image or None),
                           self.progress)
            return {"build": result.build, "path": str(result.path), "size_mb": round(result.path.stat().st_size / 1e6, 3),
                    "backend": result.backend}, [result.build]

        section = {"target": target.name, "precision": precision, "on": target.on, "build_image": target.build_image}
        return self.stage(f"build-{target.name}-{precision}", section, {"onnx": onnx}, ("build", "targets"), work)

    def _bench(self, build_id: str, clip: str, target: str, precision: str) -> dict[str, Any]:
        b = self.config.bench

        def work() -> tuple[dict[str, Any], list[str]]:
            from toolchain.bench.run import BenchConfig, run_bench

            report = run_bench(self.workspace, BenchConfig(
                artifact=build_id, sources=(clip,), streams=b.streams, pace=b.pace, duration_s=b.duration,
                warmup_s=b.warmup, loop=True,
            ))
            return {"benchmark": report.get("benchmark"), "p99_ms": report["e2e_ms"]["p99"], "p50_ms": report["e2e_ms"]["p50"],
                    "fps": report["fps"], "realtime": report["realtime"], "dropped": report["dropped"],
                    "deadline_misses": report["deadline_misses"]}, [r for r in (report.get("benchmark"),) if r]

        section = {k: v for k, v in self.config.section("bench").items() if k != "source"} | {"clip": clip}
        return self.stage(f"bench-{target}-{precision}", section, {"build": build_id}, ("bench", "runtime"), work)

    def _handoff(self, build_id: str, target: str, precision: str, fmt: str) -> dict[str, Any]:
        """``toolchain handoff`` of one build: a DeepStream config folder or a Triton repository."""
        out = self.config.work_path / "handoff" / f"{target}-{precision}" / fmt

        def work() -> tuple[dict[str, Any], list[str]]:
            from toolchain.handoff import DeepStreamOptions, HandoffConfig, handoff

            result = handoff(self.workspace, HandoffConfig(
                ref=build_id, format=fmt, out=out, deepstream=DeepStreamOptions(mode=self.config.handoff.mode)))
            return {"out": str(result.out), "files": [str(f) for f in result.files],
                    "preprocessing": {"exact": result.preprocessing.exact, "max_error": result.preprocessing.max_error}}, \
                [build_id]

        section = {"format": fmt, "mode": self.config.handoff.mode, "out": str(out)}
        return self.stage(f"handoff-{target}-{precision}-{fmt}", section, {"build": build_id}, ("handoff",), work,
                          cache=out.is_dir())  # a deleted folder is written again

    def _register(self, model: str, rows: list[SummaryRow], gates_passed: bool) -> str:
        alias = self.config.registry.alias
        if not alias or not gates_passed:
            return ""

        def work() -> tuple[dict[str, Any], list[str]]:
            from toolchain.registry.sqlite_store import current_user

            record = self.workspace.registry.get(model)
            assert record is not None
            for target in dict.fromkeys(r.target for r in rows):
                if self.workspace.registry.get_alias(kind="model", name=record.name, alias=alias, target=target) != model:
                    self.workspace.registry.set_alias(kind="model", name=record.name, alias=alias, target=target,
                                                      record_id=model, by=current_user(),
                                                      reason=f"toolchain pipeline {self.config.name}")
            return {"alias": f"{record.name}@{alias}", "targets": sorted({r.target for r in rows})}, [model]

        section = {"alias": alias, "targets": sorted({r.target for r in rows})}
        return str(self.stage("register", section, {"model": model}, ("registry",), work)["alias"])

    def _deploy(self, model: str) -> dict[str, Any]:
        """Package the aliased model for every target of the fleet, then roll it out (Docker needed)."""
        d = self.config.deploy
        fleet_path = self.config.path(d.fleet)
        record = self.workspace.registry.get(model)
        assert record is not None
        ref = f"{record.name}@{self.config.registry.alias}"

        def package_work(target: str) -> tuple[dict[str, Any], list[str]]:
            from toolchain.package.image import PackageConfig, package

            result = package(self.workspace, PackageConfig(ref=ref, target=target, base_image=d.base_image or None,
                                                           docker_host=d.docker_host or None), self.progress)
            data = result.to_json()
            return {"image": data.get("image"), "image_id": data.get("image_id"), "tags": data.get("tags")}, \
                [r for r in (data.get("image"),) if r]

        from toolchain.deploy.fleet import load_fleet

        for target in sorted({unit.target for unit in load_fleet(fleet_path).units}):
            # Not cached here: package has its own cache (a hit when the image is still on the engine).
            self.stage(f"package-{target}", {"base_image": d.base_image, "docker_host": d.docker_host},
                       {"model": model, "alias": ref}, ("package",), lambda t=target: package_work(t), cache=False)

        def work() -> tuple[dict[str, Any], list[str]]:
            from toolchain.deploy.rollout import DeployConfig, deploy

            report = deploy(self.workspace, DeployConfig(ref=ref, fleet=fleet_path, canary=d.canary, parallel=d.parallel),
                            self.progress)
            if not report.ok:
                raise QualityGateError(
                    f"the rollout of {ref} did not succeed on every unit ({report.counts()}); see `toolchain deploy status "
                    f"--fleet {fleet_path}`. Units that failed kept (or were rolled back to) their previous release"
                )
            return report.to_json(), []

        # Never skipped: units change under the same config; deploy itself leaves a unit that already runs the
        # release unchanged.
        return self.stage("deploy", self.config.section("deploy"), {"model": model, "alias": ref}, ("deploy", "package"),
                          work, cache=False)


def _runs_here(target_name: str) -> bool:
    """Whether this machine can run the target's engines (a CPU target of this architecture)."""
    from toolchain.targets.profile import load_target, machine_architecture

    target = load_target(target_name)
    return not target.is_tensorrt and target.architecture == machine_architecture()


def _is_tensorrt(target_name: str) -> bool:
    from toolchain.targets.profile import load_target

    return load_target(target_name).is_tensorrt


def _metric_summary(report: dict[str, Any]) -> dict[str, Any]:
    precision = report.get("precision") or {}
    recall = report.get("recall") or {}
    return {
        "accuracy": report.get("accuracy"),
        "precision_macro": (sum(precision.values()) / len(precision)) if precision else None,
        "recall_min": min(recall.values()) if recall else None,
        "recall": recall,
        "precision": precision,
    }

