"""`vitexport bench OUT`: a build's model.onnx against the same model with `--method none`
(and the method's authors' formulation, when it differs), timed side by side through
exporter.timing, the one timing and profiling path.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from .errors import InputError
from .folder import file_hashes, read_record, write_report
from .methods import BASELINE, METHODS, apply_method, baseline_of
from .onnx.export import export_onnx
from .paths import PREFIX, note_written
from .record import BuildRecord, Timing
from .reference import eval_set, patched_model
from .timing import compare, count_gflops, limit_of, timing_inputs, token_ops_share


def baseline_settings(settings):
    """The same build with `--method none`."""
    return replace(settings, method=BASELINE, method_args={})


def export_variant(
    folder: Path,
    name: str,
    settings,
    shape,
    record: BuildRecord,
    model=None,
    progress=lambda text: None,
) -> Path:
    """folder/<name>.onnx: the folder's model built with other `settings`, exported once and
    kept; recorded in the report's artifacts and hashes. A file of that name the record does
    not hold (its hash was never recorded) is neither trusted nor overwritten: refused."""
    path = Path(folder) / f"{name}.onnx"
    # read_record checked the sha256 of every file the report records; any other file under
    # this name was not written by the tool and is neither timed nor overwritten
    trusted = record.variant(name) is not None and path.is_file()
    if not trusted and (path.exists() or path.is_symlink()):
        raise InputError(
            "OUT",
            str(path),
            f"a folder whose {path.name} is the one report.json records (or none: bench "
            "exports it)",
            "a file report.json does not record; move it away",
        )
    if not trusted:
        progress(f"export {name} ({settings.method} {settings.method_args}) to {path.name} ...")
        model = patched_model(settings) if model is None else model
        # Exported under its final name in a scratch folder, so that external weights (models
        # past 2 GB) are named `<name>.onnx.data` as the graph refers to them; then moved in,
        # weights first, so a half-written model never sits under the final name.
        with tempfile.TemporaryDirectory(dir=folder, prefix=f"{PREFIX}{name}-") as tmp:
            export_onnx(model, Path(tmp) / path.name, shape, settings.opset, settings.dynamic_batch)
            parts = sorted(Path(tmp).iterdir(), key=lambda f: f.suffix == ".onnx")
            for part in parts:  # checked before any moves: nothing half-replaced
                target = Path(folder) / part.name
                if target.is_symlink() or (target.exists() and not target.is_file()):
                    raise InputError("OUT", str(target), "a plain file or none", "is not one")
            for part in parts:
                part.replace(Path(folder) / part.name)
                note_written(Path(folder) / part.name)
    record.add_variant(name, path.name)
    record.set_hashes({**record.hashes, **file_hashes(folder, [path.name])})
    return path


def export_baseline(
    folder: Path, settings, shape, record: BuildRecord, baseline=None, progress=lambda text: None
) -> Path:
    """folder/baseline.onnx: the same model with `--method none`."""
    return export_variant(
        folder, "baseline", baseline_settings(settings), shape, record, baseline, progress
    )


def authors_settings(settings):
    """The same build with the method's own flags for the authors' formulation, or None."""
    form = getattr(METHODS.get(settings.method), "authors_form", None)
    if not form or all(settings.method_args.get(k) == v for k, v in form.items()):
        return None
    return replace(settings, method_args={**settings.method_args, **form})


def bench_folder(
    out: Path,
    runs: int = 20,
    warmup: int = 2,
    threads: int | None = None,
    progress=lambda text: None,
    record: BuildRecord | None = None,
    rehash: bool = False,
) -> BuildRecord:
    """`vitexport bench OUT`: the folder's model.onnx against the same model with `--method none`.

    The baseline is exported once into OUT/baseline.onnx (kept for later runs). When the method
    has an authors' formulation that differs from the build's (Expedite's dense clustering), it
    is exported into OUT/authors_form.onnx and timed and profiled in the same run. `record`:
    the folder's record as the caller read (and verified) it; else it is read here.
    """
    out = Path(out)
    record = record if record is not None else read_record(out, rehash)
    settings = record.settings
    shape = record.model.input_shape
    reduced = patched_model(settings)  # the weights are loaded once; the variants share them
    variants = {"baseline": baseline_settings(settings)}
    models = {"baseline": baseline_of(reduced.model)}
    authors = authors_settings(settings)
    if authors is not None:
        variants["authors_form"] = authors
        models["authors_form"] = apply_method(reduced.model, authors.method, authors.method_args)
    paths = {
        name: export_variant(out, name, variants[name], shape, record, models[name], progress)
        for name in variants
    }
    paths["reduced"] = out / record.onnx.file
    if record.optimized is not None:
        paths["reduced_optimized"] = out / record.optimized.file
    inputs, note = timing_inputs(
        shape, settings.seed, eval_set(settings, reduced.model), reduced.model.input_name
    )
    progress("count GFLOPs ...")
    one = (1, *shape[1:])
    gflops = {
        "baseline": count_gflops(models["baseline"], one),
        "reduced": count_gflops(reduced, one),
    }
    bench = compare(
        paths,
        gflops,
        shape,
        record.tokens,
        runs,
        warmup,
        threads,
        settings.seed,
        progress=progress,
        inputs=inputs,
        inputs_note=note,
        limit=limit_of(settings, reduced.method.cut, one),
    )
    lat = bench["latency"]
    if authors is not None:
        progress("profile the token operations of the authors' formulation ...")
        a_share = token_ops_share(
            paths["authors_form"], shape, threads=threads, seed=settings.seed, inputs=inputs
        )
        bench["authors_form"] = {
            "flags": variants["authors_form"].method_args,
            "ms": lat["authors_form"]["median_ms"],
            "gflops": count_gflops(models["authors_form"], one),
            "token_ops_share": a_share["share"],
            "token_ops": a_share,
        }
    record.timing = Timing.of(bench)
    write_report(out, record)
    return record
