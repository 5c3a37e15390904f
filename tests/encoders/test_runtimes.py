"""Every runtime stays within its stated distance from fp32; `auto` only picks runtimes that pass the guard."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from m3search.cli.main import cli
from m3search.encoders import BGEM3Encoder
from m3search.encoders.registry import spec_for_directory
from m3search.encoders.runtimes import GUARD_BOUNDS, auto_candidates, choose_auto, make_runtime
from m3search.encoders.runtimes.artifacts import read_json, write_json_atomic
from m3search.encoders.runtimes.auto import PROBE_REPS, _table_file, decide
from m3search.encoders.runtimes.guard import GuardBounds, measure_deviation
from m3search.encoders.runtimes.hardware import Hardware
from m3search.encoders.transformer import load_tokenizer
from m3search.errors import InvalidInputError, RuntimeUnavailableError
from tests.conftest import run_on_terminal
from tests.encoders.texts import MULTILINGUAL

#: What each runtime promises on the tiny model (all outputs, the multilingual test texts). onnx-fp32 runs the
#: same fp32 arithmetic in another order; bf16 keeps 8 significant bits in the backbone's matrix products; int8
#: quantizes weights per output channel and activations per batch (feed-forward outputs stay fp32).
BOUNDS = {
    "onnx-fp32": GuardBounds(
        dense_cosine_min=1 - 1e-6, sparse_rel_diff_max=1e-4, colbert_cosine_min=1 - 1e-6
    ),
    "torch-bf16": GUARD_BOUNDS,
    "onnx-int8": GuardBounds(dense_cosine_min=0.995, sparse_rel_diff_max=0.1, colbert_cosine_min=0.99),
}


def _encode(encoder):
    return encoder.encode(MULTILINGUAL, return_sparse=True, return_colbert=True, max_length=512)


@pytest.fixture(scope="module")
def reference(tiny_m3):
    return _encode(tiny_m3)


@pytest.mark.parametrize("runtime", sorted(BOUNDS))
def test_runtime_deviation_within_bounds(runtime, tiny_m3_dir, tiny_m3_onnx, reference):
    encoder = BGEM3Encoder(tiny_m3_dir, runtime=runtime)
    assert encoder.runtime.name == runtime
    result = _encode(encoder)
    dev = measure_deviation(reference, result)
    assert BOUNDS[runtime].violations(dev) == [], dev
    # Same texts, same tokens: only the numbers may differ.
    assert result.num_tokens == reference.num_tokens and result.truncated == reference.truncated
    if runtime == "onnx-fp32":
        assert [set(s) for s in result.sparse] == [set(s) for s in reference.sparse]
    assert [c.shape for c in result.colbert] == [c.shape for c in reference.colbert]
    np.testing.assert_allclose(np.linalg.norm(result.dense, axis=1), 1.0, atol=1e-5)


def test_onnx_export_manifest_records_deviation(tiny_m3_onnx):
    assert set(tiny_m3_onnx["graphs"]) == {"fp32", "int8"}
    assert tiny_m3_onnx["outputs"] == ["dense", "token_weights", "colbert"]
    fp32 = tiny_m3_onnx["graphs"]["fp32"]["deviation"]
    assert fp32["dense_cosine_min"] > 1 - 1e-6 and fp32["sparse_rel_diff_max"] < 1e-4


def test_int8_graph_keeps_only_the_feed_forward_outputs_fp32(tiny_m3_dir, tiny_m3_onnx):
    import onnx

    from m3search.encoders.runtimes.onnx_export import ffn_output_matmuls, graph_path

    spec = spec_for_directory(tiny_m3_dir)
    config = json.loads((tiny_m3_dir / "config.json").read_text())
    int8 = graph_path(tiny_m3_dir, spec, "int8")
    graph = onnx.load(str(int8), load_external_data=False).graph
    constants = {init.name for init in graph.initializer}
    float_weight_products = [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in constants]
    kept = ffn_output_matmuls(int8, config["intermediate_size"])
    assert len(kept) == config["num_hidden_layers"]
    assert sorted(float_weight_products) == sorted(kept)
    assert sum(n.op_type == "MatMulInteger" for n in graph.node) >= 4 * config["num_hidden_layers"]


def _matmul_weight_types(graph_file: Path) -> set[int]:
    """The ONNX element types of the int8 graph's quantized weights (MatMulInteger's second input)."""
    import onnx

    graph = onnx.load(str(graph_file), load_external_data=False).graph
    types = {init.name: init.data_type for init in graph.initializer}
    return {types[n.input[1]] for n in graph.node if n.op_type == "MatMulInteger"}


@pytest.mark.parametrize(("weights", "element"), [("int8", 3), ("uint8", 2)])  # onnx.TensorProto.INT8, UINT8
def test_int8_quantization_makes_the_weight_type_asked(tiny_m3_dir, tiny_m3_onnx, tmp_path, weights, element):
    from m3search.encoders.runtimes.onnx_export import _quantize_int8, graph_path

    config = json.loads((tiny_m3_dir / "config.json").read_text())
    fp32 = graph_path(tiny_m3_dir, spec_for_directory(tiny_m3_dir), "fp32")
    _quantize_int8(fp32, tmp_path / "model.onnx", config["intermediate_size"], weights)
    assert _matmul_weight_types(tmp_path / "model.onnx") == {element}


@pytest.mark.parametrize(("vnni", "weights"), [(True, "int8"), (False, "uint8")])
def test_int8_weights_are_unsigned_on_a_cpu_without_vnni(monkeypatch, vnni, weights):
    """Without VNNI, unsigned-by-signed byte products add pairs in saturating 16 bits (`int8_weights`)."""
    from m3search.encoders.runtimes import onnx_export
    from m3search.encoders.runtimes.hardware import Hardware

    cpu = Hardware("AVX2", cpu_bf16=False, cpu_amx=False, cpu_vnni=vnni, cuda=False, cuda_bf16=False)
    monkeypatch.setattr(onnx_export, "detect_hardware", lambda: cpu)
    assert onnx_export.int8_weights() == weights


def test_export_quantizes_for_this_cpu(tiny_m3_dir, tiny_m3_onnx):
    from m3search.encoders.runtimes.onnx_export import graph_path, int8_weights

    assert tiny_m3_onnx["int8_weights"] == int8_weights()
    int8 = graph_path(tiny_m3_dir, spec_for_directory(tiny_m3_dir), "int8")
    assert _matmul_weight_types(int8) == {3 if int8_weights() == "int8" else 2}


def test_export_is_cached(tiny_m3_dir, tiny_m3_onnx, monkeypatch):
    from m3search.encoders.runtimes import onnx_export

    def fail(*args, **kwargs):
        raise AssertionError("exported again although a cached export exists")

    monkeypatch.setattr(onnx_export, "_export_fp32", fail)
    assert onnx_export.export_onnx(tiny_m3_dir, spec_for_directory(tiny_m3_dir)) == tiny_m3_onnx


def test_an_export_quantized_for_another_cpu_is_made_again(tiny_m3_dir, tiny_m3_onnx):
    """An export copied from a machine that needs the other int8 weight type (VNNI or not): `auto` says so, and
    `export_onnx` (`m3search models export-onnx`, no --force) makes it again for this CPU."""
    from m3search.encoders.runtimes import onnx_export
    from m3search.encoders.runtimes.auto import explain

    spec = spec_for_directory(tiny_m3_dir)
    manifest_file = onnx_export.export_dir(tiny_m3_dir, spec) / onnx_export.MANIFEST
    other = {"int8": "uint8", "uint8": "int8"}[tiny_m3_onnx["int8_weights"]]
    try:
        write_json_atomic(manifest_file, {**tiny_m3_onnx, "int8_weights": other})
        table = {"runtimes": {}, "choice": "torch-fp32", "probe": {"timer": "cpu_timer"}}
        assert f"onnx-int8 was quantized for another CPU ({other} weights" in explain(
            table, tiny_m3_dir, spec, "cpu"
        )
        remade = onnx_export.export_onnx(tiny_m3_dir, spec)
        assert remade["int8_weights"] == onnx_export.int8_weights() != other
        assert read_json(manifest_file) == remade
    finally:
        write_json_atomic(manifest_file, tiny_m3_onnx)


def test_export_cli_reports_guard(tiny_m3_dir, tiny_m3_onnx):
    result = CliRunner().invoke(cli, ["models", "export-onnx", str(tiny_m3_dir)])
    assert result.exit_code == 0, result.output
    assert "onnx-fp32: dense cosine 1.00000" in result.output and "onnx-int8:" in result.output
    assert "passes the guard" in result.output


def test_auto_picks_a_runtime_that_passes_its_guard(tiny_m3_dir, tiny_m3_onnx, reference, capsys):
    encoder = BGEM3Encoder(tiny_m3_dir, runtime="auto")
    dev = measure_deviation(reference, _encode(encoder))
    assert GUARD_BOUNDS.violations(dev) == [], (encoder.runtime.name, dev)
    # one line says which runtime and why; the runtime and the reports carry the same reason
    reason = encoder.runtime.auto_reason
    line = f"runtime auto -> {encoder.runtime.name} ({encoder.runtime.dtype}) for {encoder.name}: {reason}\n"
    assert line in capsys.readouterr().err
    assert encoder.runtime_identity() == {
        "runtime": encoder.runtime.name,
        "dtype": encoder.runtime.dtype,
        "auto": reason,
    }
    if encoder.runtime.name != "torch-fp32":
        assert reason.startswith(f"{encoder.runtime.name} passed its quality guard (dense cosine ")


def test_auto_falls_back_to_fp32_when_no_runtime_passes(tiny_m3_dir, tiny_m3_onnx, reference):
    impossible = GuardBounds(dense_cosine_min=1.1, sparse_rel_diff_max=-1.0, colbert_cosine_min=1.1)
    spec = spec_for_directory(tiny_m3_dir)
    runtime = choose_auto(tiny_m3_dir, spec, "cpu", bounds=impossible)
    assert runtime.name == "torch-fp32"
    encoder = BGEM3Encoder(tiny_m3_dir, runtime="torch-fp32")
    encoder.runtime = runtime
    np.testing.assert_array_equal(_encode(encoder).dense, reference.dense)
    reason = encoder.runtime.auto_reason
    assert reason.startswith("the fp32 reference: no faster runtime qualifies; ")
    assert "failed its quality guard (dense cosine" in reason or "needs native bf16" in reason, reason


def test_auto_skips_onnx_graphs_that_were_not_exported(tiny_m3_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("M3SEARCH_HOME", str(tmp_path / "empty-home"))
    spec = spec_for_directory(tiny_m3_dir)
    runtime = choose_auto(tiny_m3_dir, spec, "cpu")
    table = read_json(_table_file(tiny_m3_dir, spec, "cpu"))
    assert not any(name.startswith("onnx-") for name in table["runtimes"])
    assert runtime.name == table["choice"] and "torch-fp32" in table["runtimes"]
    assert not (tmp_path / "empty-home" / "onnx").exists()
    assert "onnx-int8 not exported (`m3search models export-onnx`)" in runtime.auto_reason


def _hardware(**overrides) -> Hardware:
    base = {
        "cpu_capability": "AVX2",
        "cpu_bf16": False,
        "cpu_amx": False,
        "cpu_vnni": False,
        "cuda": False,
        "cuda_bf16": False,
    }
    return Hardware(**{**base, **overrides})


def test_auto_candidates_follow_hardware():
    onnx = ["onnx-int8", "onnx-fp32"]  # onnxruntime is installed in the test environment
    assert auto_candidates(_hardware()) == ["torch-fp32", *onnx]
    assert auto_candidates(_hardware(cpu_bf16=True)) == ["torch-fp32", "torch-bf16", *onnx]
    assert auto_candidates(_hardware(cuda=True)) == ["cuda-fp16", "torch-fp32"]
    assert auto_candidates(_hardware(cuda=True, cuda_bf16=True)) == ["cuda-fp16", "torch-fp32"]
    assert "cuda-fp16" not in auto_candidates(_hardware(cuda=True), device="cpu")


def _scripted(seconds: dict[str, float], calls: list[str]):
    """A timer that runs the real forward pass but reports the given seconds per runtime."""

    def timer(name, fn):
        fn()
        calls.append(name)
        return seconds[name]

    return timer


#: fp32 arithmetic in another order passes these; int8 (dense cosine ~0.998 on the tiny model) does not.
STRICT = GuardBounds(dense_cosine_min=1 - 1e-5, sparse_rel_diff_max=1e-3, colbert_cosine_min=1 - 1e-5)


@pytest.mark.parametrize(
    "seconds",
    [
        {"torch-fp32": 3.0, "torch-bf16": 2.0, "onnx-fp32": 1.0, "onnx-int8": 0.5},
        {"torch-fp32": 0.8, "torch-bf16": 2.0, "onnx-fp32": 1.0, "onnx-int8": 0.5},
    ],
)
def test_auto_picks_the_measured_fastest_runtime_that_passes_the_guard(tiny_m3_dir, tiny_m3_onnx, seconds):
    spec = spec_for_directory(tiny_m3_dir)
    calls: list[str] = []
    table, runtime = decide(
        tiny_m3_dir,
        spec,
        "cpu",
        load_tokenizer(tiny_m3_dir),
        bounds=STRICT,
        timer=_scripted(seconds, calls),
        force=True,
    )
    rows = table["runtimes"]
    assert {"torch-fp32", "onnx-fp32", "onnx-int8"} <= set(rows)
    assert rows["onnx-int8"]["violations"], "int8 must fail the strict guard for this test to mean anything"
    passing = [n for n, r in rows.items() if not r["violations"]]
    fastest_passing = min(passing, key=lambda n: seconds[n])
    assert table["choice"] == runtime.name == fastest_passing
    assert all(rows[n]["best"] == seconds[n] for n in rows)
    assert sorted(calls) == sorted(list(rows) * PROBE_REPS)  # every runtime timed, interleaved reps


def test_auto_decision_is_cached(tiny_m3_dir, tiny_m3_onnx):
    """The second `auto` load reads the stored table and loads only the winner: nothing is timed again."""
    spec = spec_for_directory(tiny_m3_dir)
    seconds = {"torch-fp32": 2.0, "torch-bf16": 3.0, "onnx-fp32": 1.5, "onnx-int8": 1.0}
    calls: list[str] = []
    _table_file(tiny_m3_dir, spec, "cpu").unlink(missing_ok=True)
    first = choose_auto(tiny_m3_dir, spec, "cpu", timer=_scripted(seconds, calls), bounds=STRICT)
    assert calls and first.name == "onnx-fp32"
    calls.clear()
    second = choose_auto(tiny_m3_dir, spec, "cpu", timer=_scripted(seconds, calls), bounds=STRICT)
    assert calls == [] and second.name == "onnx-fp32"


def test_auto_measures_again_after_the_int8_graph_changes(tiny_m3_dir, tiny_m3_onnx):
    """A table measured on other ONNX graphs (an export with the other int8 weight type) is not reused."""
    from m3search.encoders.runtimes.onnx_export import MANIFEST, export_dir

    spec = spec_for_directory(tiny_m3_dir)
    seconds = {"torch-fp32": 2.0, "torch-bf16": 3.0, "onnx-fp32": 1.5, "onnx-int8": 1.0}
    calls: list[str] = []
    choose_auto(tiny_m3_dir, spec, "cpu", timer=_scripted(seconds, calls), bounds=STRICT)
    manifest_file = export_dir(tiny_m3_dir, spec) / MANIFEST
    manifest = read_json(manifest_file)
    other = {"int8": "uint8", "uint8": "int8"}[manifest["int8_weights"]]
    try:
        write_json_atomic(manifest_file, {**manifest, "int8_weights": other})
        calls.clear()
        choose_auto(tiny_m3_dir, spec, "cpu", timer=_scripted(seconds, calls), bounds=STRICT)
        assert calls, "the cached table was reused for graphs it did not measure"
    finally:
        write_json_atomic(manifest_file, manifest)
        _table_file(tiny_m3_dir, spec, "cpu").unlink(missing_ok=True)


def test_models_bench_shows_the_table(tiny_m3_dir, tiny_m3_onnx):
    result = CliRunner().invoke(cli, ["models", "bench", str(tiny_m3_dir), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name in ("torch-fp32", "onnx-fp32", "onnx-int8"):
        assert any(line.startswith(name) for line in lines), result.output
    chosen = [line.split()[0] for line in lines if line.endswith("<- auto")]
    cached = read_json(_table_file(tiny_m3_dir, spec_for_directory(tiny_m3_dir), "cpu"))
    assert chosen == [cached["choice"]]


GUARD_ON_FIRST_START = """
import sys
from pathlib import Path
from m3search.encoders import BGEM3Encoder
from m3search.encoders.runtimes import auto
auto.auto_candidates = lambda hw, device=None: ["torch-fp32", "torch-bf16"]
BGEM3Encoder(sys.argv[1], runtime="auto")
"""


def test_guard_shows_progress_on_first_start(tiny_m3_dir, tmp_path):
    """The guard runs the probe in fp32 and in the candidate once per machine; on a terminal a bar shows it."""
    command = [sys.executable, "-c", GUARD_ON_FIRST_START, str(tiny_m3_dir)]
    shown = run_on_terminal(command, env={"M3SEARCH_HOME": str(tmp_path / "home")})
    steps = 2 * (2 + PROBE_REPS)  # per candidate: load, guard, timed repetitions
    assert "first start: measuring runtimes torch-fp32, torch-bf16 for" in shown, shown
    assert f"{steps}/{steps}" in shown and "runtime auto -> " in shown, shown
    again = run_on_terminal(command, env={"M3SEARCH_HOME": str(tmp_path / "home")})
    assert "measuring runtimes" not in again and "runtime auto -> " in again  # the decision is cached


@pytest.mark.parametrize("runtime", ["cuda-fp16", "cuda-bf16"])
def test_cuda_runtime_without_cuda_is_a_clear_error(tiny_m3_dir, runtime, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeUnavailableError, match="needs a CUDA GPU"):
        BGEM3Encoder(tiny_m3_dir, runtime=runtime)
    with pytest.raises(InvalidInputError, match="runs on a CUDA device"):
        BGEM3Encoder(tiny_m3_dir, runtime=runtime, device="cpu")


def test_unknown_runtime_lists_choices(tiny_m3_dir):
    spec = spec_for_directory(tiny_m3_dir)
    with pytest.raises(InvalidInputError, match="torch-bf16.*onnx-int8"):
        make_runtime("tensorrt", tiny_m3_dir, spec)


def test_cli_encode_with_each_runtime(tiny_m3_dir, tiny_m3_onnx, tmp_path, reference):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(MULTILINGUAL[:4])))
    for runtime in ("torch-bf16", "onnx-int8"):
        dst = tmp_path / f"{runtime}.jsonl"
        result = CliRunner().invoke(
            cli,
            [
                "encode",
                "-m",
                str(tiny_m3_dir),
                "--input",
                str(src),
                "--output",
                str(dst),
                "--runtime",
                runtime,
            ],
        )
        assert result.exit_code == 0, result.output
        dense = np.array([json.loads(line)["dense"] for line in dst.read_text().splitlines()])
        assert np.min(np.sum(dense * reference.dense[:4], axis=1)) > BOUNDS[runtime].dense_cosine_min


def test_onnx_runs_long_batches_a_few_rows_at_a_time(tiny_m3_dir, tiny_m3_onnx, monkeypatch):
    """Row-splitting (which bounds attention memory) gives the same outputs as one run."""
    from m3search.encoders.runtimes import onnx_runtime

    encoder = BGEM3Encoder(tiny_m3_dir, runtime="onnx-fp32")
    whole = _encode(encoder)
    monkeypatch.setattr(onnx_runtime, "ATTENTION_ELEMENTS", 1)
    split = _encode(encoder)
    np.testing.assert_allclose(split.dense, whole.dense, atol=1e-6)
    for a, b in zip(split.sparse, whole.sparse):
        assert set(a) == set(b) and all(abs(a[k] - b[k]) < 1e-6 for k in a)


def test_mcls_on_onnx_is_a_clear_error(tiny_m3_dir, tiny_m3_onnx):
    """The exported graph pools its first token only, so Multiple CLS names the runtimes that can."""
    encoder = BGEM3Encoder(tiny_m3_dir, runtime="onnx-fp32")
    with pytest.raises(RuntimeUnavailableError, match="torch-fp32"):
        encoder.encode(" ".join(["word"] * 600), chunking="mcls", mcls_interval=64)


def test_gpu_casts_keep_layernorm_parameters_in_the_backbone_dtype(tiny_m3_dir):
    """CUDA's LayerNorm takes no fp32 parameters under an fp16/bf16 input (it raises 'expected scalar type
    Half but found Float'): GPU runtimes cast the whole backbone, CPU runtimes keep fp32 LayerNorms."""
    import torch

    from m3search.encoders.model import load_torch_model
    from m3search.encoders.runtimes.torch_runtime import _fp32_norms

    assert _fp32_norms("cpu") and not _fp32_norms("cuda") and not _fp32_norms(torch.device("cuda", 1))
    spec = spec_for_directory(tiny_m3_dir)
    for fp32_norms in (True, False):
        model = load_torch_model(tiny_m3_dir, spec, torch.bfloat16, fp32_norms=fp32_norms)
        norms = {
            p.dtype
            for m in model.backbone.modules()
            if isinstance(m, torch.nn.LayerNorm)
            for p in m.parameters()
        }
        assert norms == {torch.float32 if fp32_norms else torch.bfloat16}
        assert model.backbone.embeddings.word_embeddings.weight.dtype == torch.bfloat16
        assert model.sparse_linear.weight.dtype == model.colbert_linear.weight.dtype == torch.float32
        ids = torch.tensor([[0, 35378, 2]])
        dense, _, _ = model(ids, torch.ones_like(ids))
        assert dense.dtype == torch.float32 and torch.isfinite(dense).all()
