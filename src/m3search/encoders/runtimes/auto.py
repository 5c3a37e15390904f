"""`auto`: the fastest runtime on this machine among those whose quality guard holds, decided by measurement.

Every candidate that can run here (`auto_candidates`: torch-fp32 always, torch-bf16 with native bf16, the
ONNX graphs once exported, cuda-fp16 on a GPU) is loaded, checked against torch-fp32 on the guard's
probe texts, and timed on a short probe batch: warm-up, then `PROBE_REPS` repetitions interleaved round-robin
(a busy machine slows every candidate alike), each measured in the process's CPU time (all its threads: time
spent descheduled behind other jobs does not count). The fastest best repetition among those passing the
guard wins; the whole table is cached per checkpoint x machine fingerprint under `$M3SEARCH_HOME/auto/`, so
later loads read it and load only the winner. `m3search models bench MODEL` measures again and prints it.
"""

from __future__ import annotations

import functools
import gc
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from m3search.encoders.registry import ModelSpec
from m3search.encoders.runtimes import RUNTIMES, Runtime
from m3search.encoders.runtimes.artifacts import artifact_dir, read_json, write_json_atomic
from m3search.encoders.runtimes.guard import (
    GUARD_BOUNDS,
    PROBE_TEXTS,
    GuardBounds,
    probe_batch,
    runtime_deviation,
)
from m3search.encoders.runtimes.hardware import Hardware, detect_hardware, machine_fingerprint
from m3search.errors import M3SearchError
from m3search.progress import bar, note

log = logging.getLogger(__name__)

#: The timed probe: rows x tokens of multilingual probe text, all heads. Long enough that one repetition
#: is many operator calls (so scheduling jitter averages out), short enough that measuring the four CPU
#: runtimes of full-size bge-m3 takes well under a minute on two cores.
PROBE_ROWS, PROBE_TOKENS, PROBE_REPS = 4, 128, 3

#: Bump when the probe or the table's layout changes, so cached tables are measured again.
TABLE_FORMAT = 1

#: Times one call of `fn` for runtime `name`, in seconds. The default counts the process's CPU time; tests
#: pass scripted timings through this seam while the real runtimes still run.
Timer = Callable[[str, Callable[[], object]], float]


def cpu_timer(name: str, fn: Callable[[], object]) -> float:
    """CPU seconds of the whole process (every thread) spent in `fn`."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def cuda_timer(name: str, fn: Callable[[], object]) -> float:
    """Wall seconds of `fn` with the GPU's queue drained (CPU time says nothing about GPU work)."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def _on_cuda(hw: Hardware, device: str | None) -> bool:
    return hw.cuda if device is None else torch.device(device).type == "cuda"


def _onnx_installed() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def auto_candidates(hw: Hardware, device: str | None = None) -> list[str]:
    """Runtimes `auto` measures on this hardware (ONNX ones are then kept only when already exported).

    torch-bf16 needs native bf16 (AMX or AVX512-BF16): emulated, it is several times slower than fp32
    (docs/PERFORMANCE.md), so measuring it would only cost a load. On a GPU fp16 is the candidate: as fast as
    bf16 on an H200 and several times closer to fp32 (docs/PERFORMANCE.md, GPU), and the reference's own GPU
    setting; `cuda-bf16` stays available by name.
    """
    if _on_cuda(hw, device):
        return ["cuda-fp16", "torch-fp32"]
    names = ["torch-fp32"]
    if hw.cpu_bf16:
        names.append("torch-bf16")
    if _onnx_installed():
        names += ["onnx-int8", "onnx-fp32"]
    return names


def _exported(path: Path, spec: ModelSpec) -> bool:
    return _export_recipe(path, spec) is not None


def _export_recipe(path: Path, spec: ModelSpec) -> dict[str, Any] | None:
    """What decides the exported ONNX graphs' speed and deviation (export format, int8 weight type), or None
    when there is no export: a table measured on other graphs is measured again."""
    from m3search.encoders.runtimes.onnx_export import exported_weights, load_manifest

    manifest = load_manifest(path, spec)
    if manifest is None:
        return None
    return {"format": manifest["format"], "int8_weights": exported_weights(manifest)}


def speed_batch(
    tokenizer: Any, rows: int = PROBE_ROWS, tokens: int = PROBE_TOKENS
) -> tuple[np.ndarray, np.ndarray]:
    """`rows` full rows of `tokens` ids (special tokens included) cut from the probe texts, no padding."""
    backend = tokenizer.backend_tokenizer
    content = [i for e in backend.encode_batch(list(PROBE_TEXTS), add_special_tokens=False) for i in e.ids]
    need = rows * (tokens - 2)
    content = (content * (need // len(content) + 1))[:need]
    cls = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    body = np.asarray(content, dtype=np.int64).reshape(rows, tokens - 2)
    ids = np.concatenate([np.full((rows, 1), cls), body, np.full((rows, 1), eos)], axis=1).astype(np.int64)
    return ids, np.ones_like(ids)


def _probe(runtime: Runtime, ids: np.ndarray, mask: np.ndarray, sparse: bool) -> object:
    """One timed forward pass of the speed probe, all heads."""
    return runtime.forward(ids, mask, dense=True, sparse=sparse, colbert=True)


def _table_file(path: Path, spec: ModelSpec, device: str) -> Path:
    return artifact_dir("auto", path, spec) / f"{torch.device(device).type}.json"


def _table_key(
    path: Path, spec: ModelSpec, device: str, candidates: list[str], bounds: GuardBounds
) -> dict[str, Any]:
    return {
        "format": TABLE_FORMAT,
        "machine": machine_fingerprint(device),
        "candidates": candidates,
        "onnx_export": _export_recipe(path, spec) if any(n.startswith("onnx-") for n in candidates) else None,
        "bounds": asdict(bounds),
    }


def _available(path: Path, spec: ModelSpec, device: str) -> list[str]:
    """The candidates that can load without minutes of work (ONNX graphs only when exported)."""
    hw = detect_hardware()
    return [n for n in auto_candidates(hw, device) if not n.startswith("onnx-") or _exported(path, spec)]


def measure_runtimes(
    path: Path,
    spec: ModelSpec,
    device: str,
    tokenizer: Any,
    *,
    bounds: GuardBounds = GUARD_BOUNDS,
    timer: Timer | None = None,
) -> tuple[dict[str, Any], dict[str, Runtime]]:
    """Load every available candidate, check its guard and time the probe; return the table and the runtimes.

    The table's `choice` is the runtime with the fastest best repetition among those passing the guard
    (torch-fp32, the reference, always passes).
    """
    timer = timer or (cuda_timer if torch.device(device).type == "cuda" else cpu_timer)
    candidates = _available(path, spec, device)
    loaded: dict[str, Runtime] = {}
    rows: dict[str, dict[str, Any]] = {}
    steps = bar(
        total=len(candidates) * (2 + PROBE_REPS),
        desc=f"first start: measuring runtimes {', '.join(candidates)} for {spec.name}",
        unit="step",
    )
    for name in candidates:
        steps.update()
        try:
            loaded[name] = RUNTIMES[name](path, spec, device)
        except M3SearchError as exc:
            if name == "torch-fp32":  # the reference: if it cannot load, the model cannot (a bad checkpoint)
                raise
            rows[name] = {"error": str(exc)}
            log.info("auto: cannot load %s: %s", name, exc)
    sparse = spec.family == "m3"
    ids, mask = probe_batch(tokenizer)
    reference_name = "torch-fp32" if "torch-fp32" in loaded else next(iter(loaded))  # a GPU without fp32
    reference = loaded[reference_name].forward(ids, mask, dense=True, sparse=sparse, colbert=True)
    for name, runtime in loaded.items():
        dev = runtime_deviation(reference, runtime, ids, mask, sparse=sparse)
        rows[name] = {"deviation": dev.to_dict(), "violations": bounds.violations(dev), "seconds": []}
        steps.update()
    speed_ids, speed_mask = speed_batch(tokenizer)
    for runtime in loaded.values():  # warm-up: first-call allocations and kernel selection
        runtime.forward(speed_ids, speed_mask, dense=True, sparse=sparse, colbert=True)
    for _ in range(PROBE_REPS):
        for name, runtime in loaded.items():
            seconds = timer(name, functools.partial(_probe, runtime, speed_ids, speed_mask, sparse))
            rows[name]["seconds"].append(float(seconds))
            steps.update()
    steps.close()
    tokens = int(speed_mask.sum())
    for row in rows.values():
        if row.get("seconds"):
            best, median = min(row["seconds"]), statistics.median(row["seconds"])
            row.update(best=best, tokens_per_s=tokens / max(best, 1e-9), noise=median / max(best, 1e-9) - 1)
    passing = [n for n in loaded if not rows[n]["violations"]]
    choice = min(passing, key=lambda n: rows[n]["best"]) if passing else reference_name
    table = {
        **_table_key(path, spec, device, candidates, bounds),
        "probe": {
            "rows": PROBE_ROWS,
            "tokens": tokens,
            "reps": PROBE_REPS,
            "timer": getattr(timer, "__name__", ""),
        },
        "runtimes": rows,
        "choice": choice,
    }
    return table, loaded


def decide(
    path: Path,
    spec: ModelSpec,
    device: str,
    tokenizer: Any,
    *,
    bounds: GuardBounds = GUARD_BOUNDS,
    timer: Timer | None = None,
    force: bool = False,
) -> tuple[dict[str, Any], Runtime | None]:
    """The decision table for this checkpoint on this machine (cached unless `force`), and the chosen
    runtime when it was loaded while measuring (None when the table came from the cache)."""
    file = _table_file(path, spec, device)
    cached = None if force else read_json(file)
    key = _table_key(path, spec, device, _available(path, spec, device), bounds)
    if cached is not None and all(cached.get(k) == v for k, v in key.items()) and cached.get("choice"):
        return cached, None
    log.info("auto: measuring the runtimes of %s on this machine (once; cached in %s)", spec.name, file)
    table, loaded = measure_runtimes(path, spec, device, tokenizer, bounds=bounds, timer=timer)
    write_json_atomic(file, table)
    chosen = loaded.pop(table["choice"])
    loaded.clear()
    gc.collect()
    return table, chosen


def choose_auto(
    path: Path,
    spec: ModelSpec,
    device: str | None = None,
    tokenizer: Any = None,
    *,
    bounds: GuardBounds = GUARD_BOUNDS,
    timer: Timer | None = None,
) -> Runtime:
    """The measured-fastest runtime here among those passing the quality guard (see the module docstring)."""
    hw = detect_hardware()
    device = device or ("cuda" if _on_cuda(hw, device) else "cpu")
    if tokenizer is None:
        from m3search.encoders.transformer import load_tokenizer

        tokenizer = load_tokenizer(path)
    table, runtime = decide(path, spec, device, tokenizer, bounds=bounds, timer=timer)
    if runtime is None:
        try:
            runtime = RUNTIMES[table["choice"]](path, spec, device)
        except M3SearchError as exc:  # e.g. the export was removed since: measure again
            log.info("auto: cached choice %s does not load (%s); measuring again", table["choice"], exc)
            table, runtime = decide(path, spec, device, tokenizer, bounds=bounds, timer=timer, force=True)
    assert runtime is not None  # decide() measured and loaded the winner
    runtime.auto_reason = explain(table, path, spec, device)
    note(f"runtime auto -> {runtime.name} ({runtime.dtype}) for {spec.name}: {runtime.auto_reason}")
    return runtime


def _deviation_text(dev: dict[str, float | None]) -> str:
    """The measured deviations, e.g. `dense cosine 0.99990, ColBERT cosine 0.99710`."""
    labels = {"dense_cosine_min": "dense cosine", "sparse_rel_diff_max": "sparse diff"}
    labels["colbert_cosine_min"] = "ColBERT cosine"
    return ", ".join(f"{labels[k]} {v:.5f}" for k, v in dev.items() if v is not None)


def explain(table: dict[str, Any], path: Path, spec: ModelSpec, device: str) -> str:
    """Why `auto` chose the table's runtime: its guard and speed, then why each other runtime lost or was
    not measured (not exported, no native bf16, failed its guard, slower)."""
    rows, choice = table["runtimes"], table["choice"]
    unit = "tokens per CPU-second" if table["probe"]["timer"] == "cpu_timer" else "tokens/s"
    speed = lambda n: f"{rows[n]['tokens_per_s']:.0f} {unit}"  # noqa: E731
    if choice == "torch-fp32":
        reasons = ["the fp32 reference: no faster runtime qualifies"]
    else:
        reasons = [
            f"{choice} passed its quality guard ({_deviation_text(rows[choice]['deviation'])}) and measured "
            f"fastest ({speed(choice)})"
        ]
    for name, row in rows.items():
        if name == choice:
            continue
        if "error" in row:
            reasons.append(f"{name} cannot run here ({row['error']})")
        elif row["violations"]:
            reasons.append(f"{name} failed its quality guard ({'; '.join(row['violations'])})")
        else:
            reasons.append(f"{name} was slower ({speed(name)})")
    hw = detect_hardware()
    if not _on_cuda(hw, device):
        if not _onnx_installed():
            reasons.append("onnx-int8 needs onnxruntime (`pip install 'm3search[onnx]'`)")
        elif (recipe := _export_recipe(path, spec)) is None:
            reasons.append("onnx-int8 not exported (`m3search models export-onnx`)")
        else:
            from m3search.encoders.runtimes.onnx_export import int8_weights

            wanted = int8_weights()
            if recipe["int8_weights"] != wanted:
                reasons.append(
                    f"onnx-int8 was quantized for another CPU ({recipe['int8_weights']} weights; "
                    f"`m3search models export-onnx` makes {wanted} ones for this one)"
                )
        if not hw.cpu_bf16:
            reasons.append("torch-bf16 needs native bf16 (AMX or AVX512-BF16), which this CPU lacks")
    return "; ".join(reasons)


def format_table(table: dict[str, Any]) -> str:
    """The decision table as aligned text: guard deviation, best probe time, tokens per second of that time
    (CPU seconds with the default timer), noise (median over best), and the choice."""
    header = (
        "runtime",
        "guard",
        "dense cos",
        "sparse diff",
        "ColBERT cos",
        "best s",
        "noise",
        "tokens/s",
        "",
    )
    lines = [header]
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for name, row in table["runtimes"].items():
        if "error" in row:
            lines.append((name, "cannot load: " + row["error"], "", "", "", "", "", "", ""))
            continue
        dev = row["deviation"]
        lines.append(
            (
                name,
                "fails: " + "; ".join(row["violations"]) if row["violations"] else "passes",
                fmt(dev["dense_cosine_min"], ".5f"),
                fmt(dev["sparse_rel_diff_max"], ".4f"),
                fmt(dev["colbert_cosine_min"], ".5f"),
                fmt(row["best"], ".3f"),
                fmt(100 * row["noise"], ".0f") + "%",
                fmt(row["tokens_per_s"], ".0f"),
                "<- auto" if name == table["choice"] else "",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)
