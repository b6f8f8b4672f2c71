"""The exported PyTorch script rebuilds the same network without cnnlab.

The tests execute the scripts `to_python` generates from presets: trusted output of our own
code, never user text.
"""

from __future__ import annotations

import subprocess
import sys
import types

import pytest
import torch

from cnnlab.analysis.codegen import to_python
from cnnlab.analysis.layers import inspect_spec
from cnnlab.arch.checks import SpecError
from cnnlab.arch.models import build
from cnnlab.arch.presets import PRESETS, VGG_B
from cnnlab.arch.specs import VGGSpec
from tests.conftest import meta_model


def generated(spec, name=None) -> dict:
    """The namespace of the script for `spec`, loaded as a module (not as __main__)."""
    module = types.ModuleType("cnnlab_export")
    sys.modules[module.__name__] = module  # dataclasses look their module up while executing
    try:
        exec(compile(to_python(spec, name=name), f"<export of {name or spec.family}>", "exec"),
             vars(module))
    finally:
        del sys.modules[module.__name__]
    return vars(module)


@pytest.mark.parametrize("name", list(PRESETS))
def test_the_script_rebuilds_every_preset_with_the_same_params_and_output(name):
    spec = PRESETS[name]
    with torch.device("meta"):  # full size, nothing allocated
        model = generated(spec, name)["build"]().eval()
    table = inspect_spec(spec)
    assert sum(p.numel() for p in model.parameters()) == table.total_params
    x = torch.empty(1, spec.in_channels, spec.input_size, spec.input_size, device="meta")
    assert tuple(model(x).shape[1:]) == table.output_shape


@pytest.mark.parametrize("name", list(PRESETS))
def test_the_script_names_parameters_as_cnnlab_does(name):
    spec = PRESETS[name]
    with torch.device("meta"):
        exported = generated(spec)["build"]()
    ours = meta_model(spec)
    assert {k: v.shape for k, v in exported.state_dict().items()} == \
        {k: v.shape for k, v in ours.state_dict().items()}


# Small widths and inputs: a real forward pass on the CPU in milliseconds.
SMALL = {
    "alexnet-small": dict(width=0.25),
    "vgg11-small": dict(input_size=32, width=0.125, hidden=(64, 64)),
    "nin-small": dict(width=0.25),
    "googlenet": dict(input_size=32, width=0.125),
    "bn-lenet-scratch": {},
    "bn-lenet": {},
    "resnet18": dict(input_size=32, width=0.125),
    "resnet50": dict(input_size=32, width=0.0625, preact=True,
                     stages=((1, 256), (1, 512), (1, 1024), (1, 2048))),
    "densenet": dict(input_size=32, width=0.25, bottleneck=True, compression=0.6),
}


@pytest.mark.parametrize("name", list(SMALL))
def test_the_script_computes_what_cnnlabs_model_computes(name):
    spec = PRESETS[name].replace(**SMALL[name])
    torch.manual_seed(0)
    ours = build(spec).eval()
    exported = generated(spec)["build"]().eval()
    exported.load_state_dict(ours.state_dict())
    x = torch.randn(2, spec.in_channels, spec.input_size, spec.input_size)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), ours(x))


def test_an_edited_spec_is_exported_with_its_own_numbers():
    spec = VGGSpec(conv_arch=VGG_B, input_size=96, width=0.5, batch_norm=True, hidden=(512,))
    namespace = generated(spec)
    assert namespace["SPEC"].conv_arch == VGG_B and namespace["SPEC"].width == 0.5
    with torch.device("meta"):
        model = namespace["build"]()
    assert sum(p.numel() for p in model.parameters()) == inspect_spec(spec).total_params


def test_the_script_imports_only_torch_and_the_standard_library():
    for spec in PRESETS.values():
        code = to_python(spec)
        imports = [line for line in code.splitlines() if line.startswith(("import ", "from "))]
        assert imports == ["from __future__ import annotations",
                           "from collections import OrderedDict",
                           "from dataclasses import dataclass",
                           "import torch", "from torch import nn"]
        assert "cnnlab." not in code.replace("cnnlab's", "")


def test_the_script_runs_as_a_program_where_cnnlab_cannot_be_imported(tmp_path):
    path = tmp_path / "bn_lenet.py"
    path.write_text(to_python(PRESETS["bn-lenet"], name="bn-lenet"))
    # `sys.modules["cnnlab"] = None` makes any `import cnnlab` fail.
    runner = ("import runpy, sys; sys.modules['cnnlab'] = None; "
              f"runpy.run_path({str(path)!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "conv1                output shape: (1, 6, 12, 12)" in result.stdout
    assert "44,878 parameters" in result.stdout  # BN-LeNet's parameters in d2l 7.5


def test_the_script_says_what_it_builds():
    code = to_python(PRESETS["vgg11"], name="vgg11")
    assert code.startswith('"""vgg11, exported by cnnlab')
    assert "128,806,154 parameters; input 1x224x224 -> output 10" in code
    assert "def vgg_block(" in code and "def build()" in code


def test_an_invalid_spec_is_refused():
    with pytest.raises(SpecError):
        to_python(PRESETS["vgg11"].replace(input_size=16))
