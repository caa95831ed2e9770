"""The `vitexport` command: parse flags, call the library, print. No logic lives here.

Each command group may live in a module of this package that attaches its commands to `main`
(`from . import main` then `@main.command()`); `COMMAND_MODULES` lists them.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import click

from ..config import BuildSettings, ModelSpec, parse_pair
from ..errors import InputError

DEFAULT_OUT = Path("vitexport-out")


def _echo_err(text: str) -> None:
    click.echo(text, err=True)


def _progress(text: str) -> None:
    click.echo(f"  {text}", err=True)


def _terminated(signum, frame):
    raise SystemExit(128 + signum)


class OneLineErrors(click.Group):
    """Usage mistakes print one line and exit with 2: no usage dump, no traceback."""

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        # A terminated build unwinds like an interrupted one, so its temporary folder is removed.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _terminated)
        try:
            rv = super().main(*args, **kwargs)
        except click.UsageError as err:
            _echo_err(f"Error: {err.format_message()}")
            sys.exit(2)
        except InputError as err:
            _echo_err(f"Error: {err}")
            sys.exit(2)
        except click.exceptions.Abort:
            _echo_err("Aborted.")
            sys.exit(130)
        sys.exit(rv or 0)


@click.group(cls=OneLineErrors)
@click.version_option(package_name="vitexport")
def main():
    """Export token-reduced Vision Transformers for dense prediction to ONNX / TensorRT."""


def method_options(func):
    """One click option per method flag in the registry; all default to None (method's default)."""
    from ..methods import all_options

    for flag, uses in reversed(list(all_options().items())):
        opt = uses[0][1]
        text = "; ".join(f"{name}: {o.help} (default {o.default_text})" for name, o in uses)
        if opt.is_flag:
            func = click.option(flag, opt.key, is_flag=True, default=None, help=text)(func)
        else:
            func = click.option(flag, opt.key, default=None, help=text)(func)
    return func


@main.command()
@click.option("--preset", default=None,
              help="A paper's settings by name (see `vitexport presets`); explicit flags win.")
@click.option("--model", "model_name", default=None,
              help="segmenter_digits|tiny|small|base|large, dpt_base|large|hybrid, a timm ViT "
                   "(vit_*, deit*) or Swin (swin_*) name. Default: segmenter_digits (shipped).")
@click.option("--checkpoint", default=None, help="Weights (.pth with weights_only, or .safetensors).")
@click.option("--img-size", default=None, help="Input HxW (default: the model's, 64x64 for segmenter_digits, 512x512 for other Segmenters).")
@click.option("--num-classes", type=int, default=None, help="Segmenter classes (default 150; segmenter_digits has 11).")
@click.option("--method", default=None,
              help="Token-reduction method (see `vitexport methods`). Default: expedite.")
@method_options
@click.option("--batch", type=int, default=1, show_default=True, help="Batch size of the export.")
@click.option("--dynamic-batch", is_flag=True, help="Export with a dynamic batch dimension.")
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset (17..23).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of random weights and of validation inputs.")
@click.option("--atol", type=float, default=None, help="Absolute tolerance (default 1e-3).")
@click.option("--rtol", type=float, default=None, help="Relative tolerance (default 1e-3).")
@click.option("--plugins", is_flag=True,
              help="Also write model.plugins.onnx with TensorRT plugin nodes (validated on the CPU).")
@click.option("--engine", is_flag=True, help="Also build a TensorRT engine (needs TensorRT).")
@click.option("--precision", default="fp32", show_default=True, help="Engine precision: fp32 | fp16 (fp16 also writes model.fp16.onnx).")
@click.option("--workspace", type=int, default=None, help="TensorRT workspace in MiB.")
@click.option("--opt-level", type=int, default=None, help="TensorRT builder optimisation level 0..5.")
@click.option("--plugin-lib", default=None, help="Path of libvitexport_plugins.so for the engine.")
@click.option("--eval-data", default=None,
              help="An .npz of images float32 [N,3,H,W] and labels int [N,H,W] (255 = ignore): "
                   "report mIoU of baseline and reduced model (segmenter_digits: its "
                   "validation split by default).")
@click.option("--eval-count", type=int, default=None,
              help="Evaluate only the first N images (segmenter_digits default: 100 of 500).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: vitexport-out/<model>-<method>).")
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
@click.option("--bench/--no-bench", "run_bench", default=None,
              help="--bench: then time the result against --method none as `vitexport bench "
                   "OUT` does; --no-bench: skip the quick timing a build with evaluation data "
                   "does against its baseline.onnx (default).")
def build(preset, model_name, checkpoint, img_size, num_classes, method, batch, dynamic_batch, opset, seed,
          atol, rtol, plugins, engine, precision, workspace, opt_level, plugin_lib, eval_data,
          eval_count, out, force, run_bench, **method_args):
    """Patch a model with a token-reduction method, export ONNX, validate, write a report."""
    from ..build import build as run_build, passed

    from ..presets import resolve

    size = parse_pair("--img-size", img_size) if img_size is not None else None
    spec, method, method_args = resolve(
        preset, ModelSpec(model_name, checkpoint, size, num_classes), method,
        {k: v for k, v in method_args.items() if v is not None})
    model_name = spec.name
    settings = BuildSettings(
        model=spec, method=method, method_args=method_args,
        batch=batch, dynamic_batch=dynamic_batch, opset=opset, seed=seed, plugins=plugins,
        engine=engine, precision=precision, workspace_mib=workspace, opt_level=opt_level,
        plugin_library=plugin_lib, eval_data=eval_data, eval_count=eval_count)
    if atol is not None:
        settings.atol = atol
    if rtol is not None:
        settings.rtol = rtol
    out = out or DEFAULT_OUT / f"{model_name}-{method}"
    _echo_err(f"vitexport build: {model_name} + {method} -> {out}")
    from ..build import ExportRuleError
    start = time.perf_counter()
    try:
        report = run_build(settings, out, force=force, progress=_progress,
                           bench=run_bench is None)
    except ExportRuleError as err:
        _echo_err(f"Error: the exported graph breaks the export rules: {err}")
        sys.exit(1)
    if run_bench:
        from ..bench import bench_folder
        from ..report import format_bench

        report = bench_folder(out, progress=_progress)
        click.echo(format_bench(report["bench"]))
    _print_summary(report, out)
    click.echo(f"built in {time.perf_counter() - start:.0f} s")
    sys.exit(0 if passed(report) else 1)


@main.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--atol", type=float, default=None, help="Absolute tolerance (default: the build's).")
@click.option("--rtol", type=float, default=None, help="Relative tolerance (default: the build's).")
def validate(out, atol, rtol):
    """Re-run validation of every artifact in an output folder."""
    from ..build import passed, revalidate

    report = revalidate(out, progress=_progress, atol=atol, rtol=rtol)
    _print_summary(report, out)
    sys.exit(0 if passed(report) else 1)


@main.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--precision", default="fp32", show_default=True, help="Engine precision: fp32 | fp16 (fp16 also writes model.fp16.onnx).")
@click.option("--workspace", type=int, default=None, help="TensorRT workspace in MiB.")
@click.option("--opt-level", type=int, default=None, help="TensorRT builder optimisation level 0..5.")
@click.option("--plugin-lib", default=None, help="Path of libvitexport_plugins.so.")
def engine(out, precision, workspace, opt_level, plugin_lib):
    """Build the TensorRT engine of an output folder and validate it."""
    from ..build import engine_for_folder, passed

    report = engine_for_folder(out, precision, workspace, opt_level, plugin_lib, progress=_progress)
    if report["engine"]["built"]:
        _print_summary(report, out)
        sys.exit(0 if passed(report) else 1)
    click.echo(f"no engine built; build_engine.sh written in {out}")


@main.command()
@click.argument("out", type=click.Path(path_type=Path), required=False)
@click.option("--runs", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Timed runs of each model, interleaved.")
@click.option("--warmup", type=click.IntRange(0, 100), default=2, show_default=True)
@click.option("--threads", type=click.IntRange(1, 256), default=None,
              help="ONNX Runtime intra-op threads (default: ONNX Runtime's).")
@click.option("--model", "model_name", default=None, hidden=True,
              help="Moved: `vitexport sweep --model NAME`.")
def bench(out, runs, warmup, threads, model_name):
    """Time a build against its --method none baseline side by side (OUT: an output folder);
    `vitexport sweep` times every method on a model."""
    if model_name is not None:
        raise InputError("--model", model_name, "OUT, an output folder of `vitexport build`",
                         "every method on a model is now `vitexport sweep --model NAME`")
    if out is None:
        raise InputError("OUT", "(none)", "an output folder of `vitexport build`")
    from ..bench import bench_folder
    from ..report import format_bench

    report = bench_folder(out, runs, warmup, threads, progress=_progress)
    click.echo(format_bench(report["bench"]))
    click.echo(f"report: {Path(out) / 'report.md'}")


@main.command()
@click.argument("out", type=click.Path(path_type=Path))
def lint(out):
    """Check an output folder's ONNX files against the export rules and TensorRT's parser."""
    from ..build import lint_existing

    report = lint_existing(out)
    for f in report["lint"]:
        click.echo(f"{f['artifact']}: {f['severity']}: {f['op']} in '{f['module']}': {f['message']}")
    errors = [f for f in report["lint"] if f["severity"] == "error"]
    click.echo(f"{len(errors)} errors, {len(report['lint']) - len(errors)} warnings "
               f"in {', '.join(n for n in report['artifacts'].values() if n.endswith('.onnx'))}")
    sys.exit(1 if errors else 0)


@main.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--image", type=click.Path(path_type=Path), default=None,
              help="Picture to run (resized to the model's input). Default: the first digits "
                   "validation image for segmenter_digits, else a synthetic image.")
def visualize(out, image):
    """Draw the token assignment, the reduced picture and baseline vs reduced predictions."""
    from ..visualize import visualize_folder

    result = visualize_folder(out, image, progress=_progress)
    for note in result["notes"]:
        click.echo(note)
    for path in result["files"]:
        click.echo(f"wrote {path}")


@main.command("train-demo")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for segmenter_digits.safetensors/.json (default: the package's weights).")
@click.option("--steps", type=int, default=None, help="Steps on 32x32 canvases (default 3000).")
@click.option("--full-steps", type=int, default=None,
              help="Final steps on full 64x64 canvases (default 150).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eval-count", type=int, default=None,
              help="Validation canvases for the recorded mIoU (default 500).")
@click.option("--threads", type=int, default=2, show_default=True,
              help="torch CPU threads (1 is faster on a loaded machine).")
def train_demo(out, steps, full_steps, seed, eval_count, threads):
    """Train the digits Segmenter (the default model) and write its weights and metadata."""
    from ..demo import train

    args = {k: v for k, v in {"steps": steps, "full_steps": full_steps,
                              "eval_count": eval_count}.items() if v is not None}
    meta = train.train(out or train.WEIGHTS_DIR, seed=seed, log=_progress, threads=threads,
                       command=" ".join(["vitexport"] + sys.argv[1:]), **args)
    click.echo(f"val mIoU {meta['val_miou']:.4f} ({meta['val_count']} canvases), "
               f"{meta['train_seconds']:.0f} s")


@main.command()
def methods():
    """List the token-reduction methods with their flags and defaults."""
    from ..methods import METHODS

    for spec in METHODS.values():
        click.echo(f"{spec.name:14} {spec.description}")
        for opt in spec.options:
            click.echo(f"    {opt.flag:14} {opt.help} (default: {opt.default_text})")


@main.command()
def presets():
    """List the presets: the papers' settings by name, with the table each comes from."""
    from ..presets import PRESETS

    for p in PRESETS.values():
        args = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in p.args.items())
        click.echo(f"{p.name:26} {p.source}")
        click.echo(f"{'':26} --model {p.model} --img-size {p.img_size[0]}x{p.img_size[1]} "
                   f"--method {p.method} {args}"
                   + (f" --num-classes {p.num_classes}" if p.num_classes else ""))
        if p.note:
            click.echo(f"{'':26} note: {p.note}")


@main.command()
def models():
    """List the built-in models (any timm ViT name works too)."""
    from ..models import MODELS

    for entry in MODELS.values():
        click.echo(f"{entry.name:20} {entry.description}")
    click.echo(f"{'<timm name>':20} any timm VisionTransformer, e.g. vit_base_patch16_224")
    click.echo(f"{'<timm swin name>':20} any timm SwinTransformer, e.g. swin_tiny_patch4_window7_224 "
               "(outputs: the four stage maps)")


def _print_summary(report: dict, out: Path) -> None:
    tok = report["tokens"]
    click.echo(f"{report['model']['name']} + {report['method']['name']}: "
               f"{tok['full']} -> {tok['reduced']} tokens; weights: {report['model']['weights']}")
    for v in report["validation"]:
        worst = min((o.get("cosine", 0.0) for o in v["outputs"].values()), default=0.0)
        agree = [o["argmax_agreement"] for o in v["outputs"].values()
                 if o.get("argmax_agreement") is not None]
        extra = f", argmax agreement {min(agree):.6f}" if agree else ""
        max_abs = max((o.get("max_abs", float("inf")) for o in v["outputs"].values()), default=0.0)
        click.echo(f"  {v['artifact']} ({v['runtime']}): {'PASSED' if v['passed'] else 'FAILED'} "
                   f"cosine {worst:.8f}, max abs {max_abs:.3g}{extra}")
    a = report.get("accuracy")
    if a:
        ret = f"{a['retention']:.2%}" if a.get("retention") is not None else "-"
        click.echo(f"  mIoU on {a['images']} images: baseline {a['baseline']:.4f}, reduced "
                   f"{a['reduced']:.4f}, retention {ret}")
    if report.get("bench"):
        from ..report import speed_line

        click.echo(f"  {speed_line(report['bench'], a)}")
    click.echo(f"report: {out / 'report.md'}")


# Modules of this package that attach commands to `main` (imported for that effect).
COMMAND_MODULES: tuple[str, ...] = ("deploy", "doctor", "sweep")


def _attach() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}")


_attach()

if __name__ == "__main__":
    main()
