"""Each TensorRT plugin's sources: its CUDA kernel and its TensorRT wrapper compile, and its
attribute names agree across the Python plugin record, the creator, the YAML spec and the
README. The kernels' math and the plugin graphs are tested in test_plugin_<name>.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from exporter.onnx.plugins import PLUGINS

from .toolchain import (
    NVCC,
    WRAPPER_SKIP_REASON,
    can_compile_wrapper,
    compile_kernel,
    compile_wrapper,
)

ROOT = Path(__file__).resolve().parents[1]
# op_type -> its folder under plugins/ (each holds one *Kernel.cu, one *Plugin.cpp, a README and
# <op_type>_PluginConfig.yaml)
FOLDERS = {"TopKMaskedReconstruct": "topk_masked_reconstruct", "DPCSelect": "dpc_select"}
NAMES = [p.name for p in PLUGINS]


def source(name: str, pattern: str) -> Path:
    (path,) = (ROOT / "plugins" / FOLDERS[name]).glob(pattern)
    return path


def test_every_plugin_has_its_folder():
    assert sorted(FOLDERS) == sorted(NAMES)


@pytest.mark.slow
@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH: the CUDA kernels cannot be compiled")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("name", NAMES)
def test_kernel_compiles(tmp_path, name, arch):
    out = tmp_path / "kernel.o"
    result = compile_kernel(source(name, "*Kernel.cu"), arch, out)
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 0


@pytest.mark.slow
@pytest.mark.skipif(not can_compile_wrapper(), reason=WRAPPER_SKIP_REASON)
@pytest.mark.parametrize("name", NAMES)
def test_plugin_wrapper_compiles(tmp_path, name):
    result = compile_wrapper(source(name, "*Plugin.cpp"), tmp_path / "plugin.o")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("plugin", PLUGINS, ids=NAMES)
def test_attribute_names_agree_across_plugin_files(plugin):
    yaml = pytest.importorskip("yaml")
    spec = yaml.safe_load(source(plugin.name, f"{plugin.name}_PluginConfig.yaml").read_text())
    in_yaml = set(spec["versions"]["1"]["attributes"])
    in_creator = set(
        re.findall(r'PluginField\("(\w+)"', source(plugin.name, "*Plugin.cpp").read_text())
    )
    readme = source(plugin.name, "README.md").read_text()
    in_readme = set(re.findall(r"^\|\s*\w+\s*\|\s*`(\w+)`", readme, flags=re.M))
    assert in_yaml == in_creator == in_readme == set(plugin.attributes)
    assert spec["name"] == plugin.name
