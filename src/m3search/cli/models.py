"""`m3search models list|import|export-onnx|bench`: what can load here, importing models for offline use, ONNX export, runtime speed."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import click

from m3search.encoders.registry import KNOWN_MODELS, ModelSpec
from m3search.encoders.resolve import imported_model_dir, resolve_model
from m3search.settings import models_dir


def _availability(spec: ModelSpec) -> str:
    from huggingface_hub import try_to_load_from_cache

    if (imported_model_dir(spec.name) / "config.json").is_file():
        return "ready (m3search models dir)"
    if isinstance(try_to_load_from_cache(spec.name, "config.json"), str):
        return "ready (Hugging Face cache)"
    if spec.offline_source and importlib.util.find_spec(spec.offline_source) is not None:
        return f"offline (from the {spec.offline_source} package, converted on first use)"
    return "download on first use"


@click.group("models")
def command() -> None:
    """List and import models."""


@command.command("list")
def list_models() -> None:
    """Show the registered models, where each would load from, and imported directories."""
    rows = [(s.name, str(s.dim), ",".join(s.outputs), _availability(s)) for s in KNOWN_MODELS]
    known = {imported_model_dir(s.name).name for s in KNOWN_MODELS}
    for path in sorted(models_dir().iterdir()):
        if (
            path.is_dir()
            and not path.name.startswith(".")
            and path.name not in known
            and (path / "config.json").is_file()
        ):
            rows.append((path.name.replace("--", "/"), "?", "?", f"ready ({path})"))
    widths = [max(len(r[i]) for r in rows + [("model", "dim", "outputs", "status")]) for i in range(4)]
    for row in [("model", "dim", "outputs", "status")] + rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


@command.command("import")
@click.argument("source")
@click.option("--name", default=None, help="Name to register a directory under (default: its folder name).")
def import_model(source: str, name: str | None) -> None:
    """Make SOURCE loadable offline: a hub id (downloads or converts it) or a model directory (copied)."""
    path = Path(source).expanduser()
    if path.is_dir():
        resolve_model(path)  # validates that it is a model directory
        dest = imported_model_dir(name or path.name)
        if dest.exists():
            raise click.ClickException(f"{dest} already exists; remove it or pick another --name")
        shutil.copytree(path, dest)
        click.echo(f"imported {path} as {dest.name.replace('--', '/')} -> {dest}")
        return
    resolved, spec = resolve_model(source)
    click.echo(f"{spec.name} -> {resolved}")


@command.command("export-onnx")
@click.argument("model")
@click.option("--force", is_flag=True, help="Export again even if a cached export of this checkpoint exists.")
def export_onnx_command(model: str, force: bool) -> None:
    """Export MODEL to ONNX (fp32 and int8) for the onnx-* runtimes; cached per checkpoint.

    Each graph's deviation from torch fp32 is measured on the quality guard's probe texts and stored with it;
    `--runtime auto` uses a graph only if it passed.
    """
    from m3search.encoders.runtimes.guard import GUARD_BOUNDS, Deviation
    from m3search.encoders.runtimes.onnx_export import export_dir, export_onnx

    path, spec = resolve_model(model)
    manifest = export_onnx(path, spec, force=force)
    click.echo(f"{spec.name} -> {export_dir(path, spec)}")
    for precision, info in manifest["graphs"].items():
        dev = Deviation(**info["deviation"])
        violations = GUARD_BOUNDS.violations(dev)
        verdict = "fails the guard: " + "; ".join(violations) if violations else "passes the guard"
        sparse = "" if dev.sparse_rel_diff_max is None else f", sparse diff {dev.sparse_rel_diff_max:.4f}"
        click.echo(
            f"  onnx-{precision}: dense cosine {dev.dense_cosine_min:.5f}, ColBERT cosine "
            f"{dev.colbert_cosine_min:.5f}{sparse} ({verdict})"
        )


@command.command("bench")
@click.argument("model")
@click.option("--device", default=None, help="cpu or cuda (default: cuda when available).")
def bench_command(model: str, device: str | None) -> None:
    """Measure every runtime that can run MODEL here and show the table `--runtime auto` decides from.

    Each runtime is checked against torch-fp32 (the quality guard) and timed on a short probe in CPU time;
    the fastest that passes is `auto`'s choice, cached for later loads on this machine.
    """
    from m3search.encoders.runtimes.auto import decide, format_table
    from m3search.encoders.runtimes.hardware import detect_hardware, machine_fingerprint
    from m3search.encoders.transformer import load_tokenizer

    path, spec = resolve_model(model)
    device = device or ("cuda" if detect_hardware().cuda else "cpu")
    table, _ = decide(path, spec, device, load_tokenizer(path), force=True)
    machine = machine_fingerprint(device)
    probe = table["probe"]
    click.echo(f"{spec.name} on {machine['cpu']} ({machine['flags']}), {machine['threads']} threads")
    click.echo(
        f"probe: {probe['rows']} x {probe['tokens'] // probe['rows']} tokens, best of {probe['reps']} ({probe['timer']})"
    )
    click.echo(format_table(table))
