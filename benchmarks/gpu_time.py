"""The time model of benchmarks/gpu.py and its gate. The measurement is a list of units (one sub-result each: a
Trainer run, a model load and its inference, the 270M, the plan) in order of value; each unit's time is projected as
a fixed part, measured per kind of unit in the tiny CPU run (`python -m benchmarks.gpu --device cpu --tiny`, where
the sizes are too small for bytes or FLOPs to count), plus what the full size adds: the bytes its checkpoint reads or
writes and the FLOPs it computes at the planner's throughput for the GPU. The run starts a unit only when that
projection, scaled by how the units so far compared with theirs, fits in the time left."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from functools import cache

from benchmarks.gpu_steps import gemma2_config, mean_row_tokens

GB = 1e9

# Fixed part of each kind of unit, seconds: the most a unit of that kind took in the tiny CPU run on 2 shared cores
# (`python -m benchmarks.gpu --out /tmp/g.md --device cpu --tiny`, 3 runs on 2026-12-07: their units' `seconds`;
# ~1e5 parameters there, so this is Python, library and framework work, which a GPU run repeats), rounded up; on
# CUDA "environment" adds the context's creation. "start" is the interpreter, the imports and this model's own
# projection before the first unit (12 s there; torch's CUDA libraries load too on a GPU). "plan" is the 42-layer
# plan at full size on the same CPU (the plan step's 5 plans, ~150 s there): it counts FLOPs on the meta device.
FIXED_S = {"start": 15.0, "environment": 3.0, "checkpoint": 4.0, "trainer": 11.0, "inference": 4.5, "small": 17.0,
           "plan_tiny": 7.0, "plan": 150.0}
# What the full size adds on the GPU machine (conservative: local disk through the page cache does more).
READ_GB_S = 1.0    # a checkpoint loaded: safetensors read and quantized onto the GPU
WRITE_GB_S = 0.5   # a random checkpoint saved: GPU -> host -> local disk
# A 2-4 layer build keeps the GPU busy less than the planner's anchor (a whole 9B model on T4s): half its efficiency.
EFFICIENCY_SHARE = 0.5
CPU_TFLOPS = 0.05  # the tiny run's CPU (its sizes make this term negligible)
CALIBRATION_RANGE = (0.5, 3.0)  # measured / projected of the units so far, as the next projection's factor
RESERVE_S = 10.0  # kept free at the end: the last save of results.json and the report


@dataclass(frozen=True)
class Unit:
    """One sub-result: `step` is the results section it fills, `kind` what its fixed part is, `args` the step
    function's arguments."""

    step: str
    name: str
    kind: str
    args: tuple = ()

    @property
    def kwargs(self) -> dict:
        return dict(self.args)


def schedule(size: dict) -> list[Unit]:
    """Every unit in the order it runs, the most valuable first: the recipe's training at its own length (does the 9B
    fit a T4?), then the T4's inference path (nf4 in float16), float16 training (overflow, skipped steps), training at
    the long length, the T4's other weight formats, the 270M on CUDA, nf4 under the GPU's own decisions (bf16), and
    on the CPU the plan (`--plan-only` adds it to a GPU run's results on any machine: it needs no GPU). The GPU's own
    int8 and float16 inference are left out: the T4 profile's runs of them time the same GPU."""
    counts, (first, second) = size["layer_counts"], size["train_lengths"]
    t4, native = "t4x2", "native"

    def training(length, steps, step="training"):
        layers, more = (counts, "") if step == "training" else ((max(counts),), f", {steps} steps")
        return [Unit(step, f"{length} tokens, {n} layers{more}", "trainer", (("length", length), ("layers", n),
                                                                               ("steps", steps))) for n in layers]

    def inference(profile, quantizations):
        return [Unit("inference", f"{profile}/{q}, {n} layers", "inference",
                     (("profile", profile), ("quantization", q), ("layers", n)))
                for q in quantizations for n in counts]

    formats = size["quantizations"]
    units = [Unit("environment", "environment", "environment"),
             Unit("checkpoints", "random checkpoints", "checkpoint", (("layers", max(counts)),)),
             *training(first, size["memory_steps"]), *inference(t4, formats[:1]),
             *training(first, size["fp16_steps"], "float16 training"), *training(second, size["memory_steps"]),
             *inference(t4, formats[1:]), Unit("small model", "small model", "small"), *inference(native, formats[:1])]
    if size["plan_in_run"]:
        units.append(Unit("plan", "plan", "plan"))
    return units


# ---- what a unit costs ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Machine:
    """What the machine running the measurement does per second (the fixed parts are FIXED_S)."""

    name: str
    tflops: float  # effective, on the measurement's shapes
    plan_s: float  # the plan step at the run's sizes

    @classmethod
    def for_device(cls, device: str, tiny: bool) -> Machine:
        plan_s = FIXED_S["plan_tiny" if tiny else "plan"]
        if device == "cpu":
            return cls("cpu", CPU_TFLOPS, plan_s)
        from arena import planner

        gpu = planner.GPUS["h100"]  # the lent machines: H100 or H200 (the H200 computes as fast)
        return cls(gpu.gpu_name, gpu.tensor_tflops * _anchor_efficiency() * EFFICIENCY_SHARE, plan_s)


@cache
def _anchor_efficiency() -> float:
    from arena import planner

    return planner.anchor_efficiency()


@cache
def _shape(tiny: bool, layers: int) -> tuple:
    """(parameters, linear-layer parameters, transformers config) of the 9B build with `layers` layers."""
    from arena import planner
    from arena.model import meta_backbone

    hf_config = gemma2_config(tiny, layers)
    backbone = meta_backbone(hf_config)
    linear = planner._linear_numel(backbone)
    return sum(p.numel() for p in backbone.parameters()), linear, hf_config


def forward_flops(tiny: bool, layers: int, tokens: float) -> float:
    from arena import planner

    _, linear, hf_config = _shape(tiny, layers)
    return planner.forward_flops_per_token(hf_config, linear, tokens)


def checkpoint_bytes(tiny: bool, layers: int) -> float:
    return 2 * _shape(tiny, layers)[0]  # bfloat16 on disk; the tied output embedding is stored once


SMALL_PARAMETERS = 268e6  # the Gemma-3 270M
RECIPE_BATCH = (2, 2)  # configs/gemma2-9b-qlora-t4x2.yaml: per-device batch x grad accumulation


def projected_seconds(unit: Unit, size: dict, machine: Machine, tiny: bool) -> float:
    """The unit's projected time: its fixed part plus its bytes and FLOPs at full size on `machine`."""
    a = unit.kwargs
    fixed = FIXED_S[unit.kind]
    if unit.kind == "checkpoint":
        return fixed + checkpoint_bytes(tiny, a["layers"]) / (WRITE_GB_S * GB)
    if unit.kind == "trainer":
        rows, accumulation = RECIPE_BATCH
        # forward, recomputed forward (gradient checkpointing) and backward, every row padded to the full length
        flops = 3 * a["steps"] * accumulation * rows * a["length"] * forward_flops(tiny, a["layers"], a["length"])
        return fixed + checkpoint_bytes(tiny, a["layers"]) / (READ_GB_S * GB) + flops / (machine.tflops * 1e12)
    if unit.kind == "inference":
        length = size["infer_length"]
        tokens = size["infer_rows"] * mean_row_tokens(length)
        flops = tokens * forward_flops(tiny, a["layers"], mean_row_tokens(length))
        return fixed + checkpoint_bytes(tiny, a["layers"]) / (READ_GB_S * GB) + flops / (machine.tflops * 1e12)
    if unit.kind == "small" and not tiny:
        # its random checkpoint written, then loaded three times (training, CUDA and CPU predictions)
        return fixed + 2 * SMALL_PARAMETERS * (1 / WRITE_GB_S + 3 / READ_GB_S) / GB
    if unit.kind == "plan":
        return machine.plan_s
    return fixed


def projection(size: dict, device: str, tiny: bool) -> dict:
    """Every unit's projected seconds in order, and the total with the start-up."""
    machine = Machine.for_device(device, tiny)
    units = [{"step": u.step, "name": u.name, "kind": u.kind,
              "projected_s": round(projected_seconds(u, size, machine, tiny), 1)} for u in schedule(size)]
    return {"machine": machine.name, "start_s": FIXED_S["start"], "units": units,
            "total_s": round(FIXED_S["start"] + sum(u["projected_s"] for u in units), 1)}


# ---- the gate ------------------------------------------------------------------------------------------------------

@dataclass
class Budget:
    """The time left before `limit_s` after the process started (`started`: time.time() then); a unit is started
    only when its projection, scaled by measured/projected of the units so far, fits before limit_s - RESERVE_S."""

    limit_s: float | None
    started: float
    clock: object = time.time
    projected_done: float = 0.0
    measured_done: float = 0.0
    log: list = field(default_factory=list)

    def elapsed(self) -> float:
        return self.clock() - self.started

    def factor(self) -> float:
        if self.projected_done <= 0:
            return 1.0
        low, high = CALIBRATION_RANGE
        return min(high, max(low, self.measured_done / self.projected_done))

    def run(self, unit: Unit, projected: float, fn) -> dict:
        """fn() if the unit fits; the record of it either way: projected and measured seconds, or why it was
        skipped, or fn's exception (the next units still run)."""
        expected = projected * self.factor()
        record = {"step": unit.step, "name": unit.name, "projected_s": round(projected, 1),
                  "start_s": round(self.elapsed(), 1)}
        if self.limit_s is not None and self.elapsed() + expected > self.limit_s - RESERVE_S:
            record["skipped"] = (f"projected {expected:.0f} s (x{self.factor():.2f}, measured/projected so far), "
                                 f"{self.limit_s - RESERVE_S - self.elapsed():.0f} s left before the "
                                 f"{self.limit_s:.0f} s limit less {RESERVE_S:.0f} s")
            self.log.append(record)
            return record
        began = self.clock()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - a failed unit is a result too
            record.update(error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(limit=8))
        record["seconds"] = round(self.clock() - began, 1)
        if unit.kind != "environment":
            self.projected_done += projected
            self.measured_done += record["seconds"]
        self.log.append(record)
        return record
