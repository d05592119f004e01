"""Standalone modules of convolutional networks (``ntkdsl codegen``): numpy only, the same
numbers. Every architecture of nt_cnn_kernels.json as a module, run in a process that cannot
import ntkdsl, sympy or lark, against neural-tangents' numbers and the library's; the modules
pass py_compile and ruff, validate images with the library's messages, and are the same
bytes in every process."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_codegen import RUNNER

import ntkdsl

REFERENCE = json.loads((Path(__file__).parent / "reference" / "nt_cnn_kernels.json").read_text())
CASES = REFERENCE["cases"]
ARCHS = list(dict.fromkeys(case["arch"] for case in CASES))


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("conv_standalone")
    for i, arch in enumerate(ARCHS):
        (folder / f"c{i}.py").write_text(ntkdsl.codegen(arch), encoding="ascii")
    return folder


@pytest.fixture(scope="module")
def results(generated) -> dict:
    jobs = [{"module": f"c{i}", "path": str(generated / f"c{i}.py"),
             "scipy": "import scipy" in (generated / f"c{i}.py").read_text(),
             "cases": [c for c in CASES if c["arch"] == arch]} for i, arch in enumerate(ARCHS)]
    (generated / "jobs.json").write_text(json.dumps(jobs))
    (generated / "runner.py").write_text(RUNNER)
    out = generated / "results.npz"
    proc = subprocess.run([sys.executable, "-I", str(generated / "runner.py"),
                           str(generated / "jobs.json"), str(out)],
                          capture_output=True, text=True, cwd=generated, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.parametrize("index", range(len(CASES)))
@pytest.mark.parametrize("kind", ["nngp", "ntk"])
def test_module_gives_the_reference_and_library_numbers(index, kind, results):
    case = CASES[index]
    arch_index = ARCHS.index(case["arch"])
    position = [c for c in CASES if c["arch"] == case["arch"]].index(case)
    got = results[f"c{arch_index}_{position}_{kind}"]
    x1 = np.array(case["x1"])
    x2 = None if case["x2"] is None else np.array(case["x2"])
    library = getattr(ntkdsl.compile(case["arch"]), kind)(x1, x2)
    ref = np.array(case[kind])
    loose = np.zeros(ref.shape, bool)
    for i, j in case["loose"]:
        loose[i, j] = True
    identical = np.zeros(ref.shape, bool)
    for i, j in case["identical"]:
        identical[i, j] = True
    # (identical entries: the library's exact values, see test_conv_reference.py)
    assert (np.abs(got - ref) <= 1e-10 * np.abs(ref))[~loose & ~identical].all()
    assert (np.abs(got - ref)[loose] <= 1e-7 * np.abs(ref).max()).all()
    # the module and the library compute the same program (their Gram products are blocked
    # differently, so they agree to rounding; the loose pairs to the loose rule)
    err = np.abs(got - library)
    assert (err <= 1e-13 * np.abs(library))[~loose].all()
    assert (err[loose] <= 1e-7 * np.abs(library).max()).all()
    for i, j in case["identical"]:
        assert got[i, j] == library[i, j]  # both the exact diagonal recursion


def test_modules_pass_py_compile_and_ruff(generated):
    modules = sorted(str(p) for p in generated.glob("c*.py"))
    for path in modules:
        proc = subprocess.run([sys.executable, "-m", "py_compile", path], capture_output=True,
                              text=True, check=False)
        assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--isolated", "--no-cache",
                           *modules], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_module_says_what_it_takes(generated):
    source = (generated / f"c{ARCHS.index(CASES[4]['arch'])}.py").read_text()
    assert "channels-last images (n, H, W, C)" in source
    assert "every pair of positions" in source and "POSITION_PAIRS = True" in source
    flatten = (generated / f"c{ARCHS.index(CASES[0]['arch'])}.py").read_text()
    assert "the same positions only (no pooling: the cheap path)" in flatten
    assert "def side(" in flatten and "def _st_conv(" in flatten


def test_module_validates_images_with_the_library_messages(tmp_path):
    import importlib.util
    arch = CASES[16]["arch"]  # 1-D
    path = tmp_path / "conv1d.py"
    path.write_text(ntkdsl.codegen(arch), encoding="ascii")
    spec = importlib.util.spec_from_file_location("conv1d", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    images = np.ones((2, 9, 3))
    for bad, message in ((np.ones((2, 9, 9, 3)), "4-D) but this network, whose filters have "
                          "1 spatial axis, takes 3-D channels-last images (n, L, C)"),
                         (images[..., :2], "x1 has 3 channels but x2 has 2")):
        with pytest.raises(ValueError, match=r".*") as caught:
            module.ntk(images, bad) if bad.ndim == 3 else module.ntk(bad)
        assert message in str(caught.value)
        with pytest.raises(ntkdsl.errors.ShapeError) as library:
            ntkdsl.compile(arch).ntk(images, bad) if bad.ndim == 3 else ntkdsl.compile(arch).ntk(bad)
        assert message in str(library.value)


def test_the_same_bytes_in_every_process():
    script = ("import sys, ntkdsl; sys.stdout.write(ntkdsl.codegen(sys.argv[1]))")
    outputs = {subprocess.run([sys.executable, "-c", script, CASES[12]["arch"]],
                              capture_output=True, text=True, check=True,
                              env={"PYTHONHASHSEED": str(seed), "PATH": "/usr/bin:/bin",
                                   "PYTHONPATH": str(Path(ntkdsl.__file__).parents[1])}).stdout
               for seed in (0, 1)}
    assert len(outputs) == 1 and outputs.pop() == ntkdsl.codegen(CASES[12]["arch"])
