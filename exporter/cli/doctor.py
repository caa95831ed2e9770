"""`vitexport doctor`: report what this host can prove about the TensorRT side."""

from __future__ import annotations


import click

from ..config import parse_pair
from . import DEFAULT_OUT, _progress, main
from .options import path_option, switch, PATH


@main.command()
@click.argument("out", type=PATH, required=False)
@click.option(
    "--model",
    "model_name",
    default=None,
    help="Model of the build made when OUT is not given (default: segmenter_digits).",
)
@click.option("--img-size", default=None, help="Its input HxW (default: the model's).")
@click.option(
    "--plugin-lib",
    default=None,
    help="A built libvitexport_plugins.so (default: build it with CMake when TensorRT "
    "headers are found).",
)
@path_option(
    "--report-dir",
    "Where doctor.md and doctor.json go.",
    default=DEFAULT_OUT / "doctor",
    show_default=True,
)
@switch("--force", "Replace an earlier doctor.md/doctor.json there.")
@switch(
    "--build",
    "Without OUT, make the default build even where no engine can be built (minutes).",
)
@switch(
    "--no-gpu-speed",
    "Leave out the GPU speed step (the model against its baseline on the GPU; seconds on "
    "the default model).",
)
def doctor(out, model_name, img_size, plugin_lib, report_dir, force, build, no_gpu_speed):
    """Host facts (GPU, CUDA, TensorRT, plugin library; seconds), then for OUT (default: a
    fresh build of the headline, Expedite 24x24 on the default model, with --plugins
    --precision fp16 in a temporary folder, made only where a GPU can build engines or run
    ONNX Runtime's CUDA provider, or with --build): plugin library, kernel harness, engines
    built, validated and timed, and the GPU speed-up beside the GFLOPs ratio and the paper
    estimate. Missing pieces are skipped with the reason and the command that would fix
    them."""
    from ..doctor import check_report_dir, run_doctor, write_doctor_report

    size = parse_pair("--img-size", img_size) if img_size is not None else None
    check_report_dir(report_dir, force)  # before the slow steps
    result = run_doctor(
        out,
        model_name,
        size,
        plugin_lib,
        progress=_progress,
        build=build,
        gpu_speed=not no_gpu_speed,
    )
    md, js = write_doctor_report(report_dir, result, force=force)
    for step in result["steps"]:
        fix = f" (fix: {step['fix']})" if step["fix"] and step["status"] != "done" else ""
        click.echo(f"{step['status']:8} {step['name']}: {step['detail']}{fix}")
    click.echo(f"report: {md} and {js}")
    failed = any(step["status"] == "failed" for step in result["steps"])
    raise SystemExit(1 if failed else 0)
