"""Issue 12.2, findings at the interfaces: ASCII output, CSV files, the estimators' exceptions,
sparse inputs and the up-front memory check against the process's limits."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ntkdsl

ROOT = Path(__file__).resolve().parents[1]

# One architecture per route a dual can take (DESIGN §2 / README "Routes").
ROUTES = {
    "closed form": "Dense(64, W_std=1.5, b_std=0.1) > Relu > Dense(1)",
    "rules": 'Dense(64) > Fn("sin(x) + 0.5*x") > Dense(1)',
    "numerical": "Dense(64, W_std=1.4) > Tanh > Dense(1)",
    "composed": "Dense(64) > Relu > Sin > Dense(1)",
    "LayerNorm": "Dense(64) > LayerNorm > Erf > Dense(1, b_std=0.1)",
}


def run_cli(*args: str, encoding: str = "ascii", cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python -m ntkdsl.cli ARGS`` in a fresh process whose stdout encoding is ``encoding``."""
    env = {**os.environ, "PYTHONIOENCODING": encoding, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "ntkdsl.cli", *args], capture_output=True,
                          cwd=cwd, env=env, timeout=300)


# --------------------------------------------------------------------- 1. ASCII output --

@pytest.mark.parametrize("route", sorted(ROUTES))
def test_generated_module_is_ascii_for_every_route(route):
    source = ntkdsl.codegen(ROUTES[route])
    assert source.isascii(), sorted({ch for ch in source if not ch.isascii()})


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_codegen_writes_to_an_ascii_stdout(route):
    proc = run_cli("codegen", ROUTES[route])
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr == b""
    assert proc.stdout.decode("ascii") == ntkdsl.codegen(ROUTES[route])


def test_codegen_to_a_file_under_ascii_gives_a_module_with_the_library_numbers(tmp_path):
    arch = ROUTES["numerical"]
    proc = run_cli("codegen", arch, "-o", str(tmp_path / "tanh_kernel.py"))
    assert proc.returncode == 0, proc.stderr.decode()
    source = (tmp_path / "tanh_kernel.py").read_bytes()
    assert source.isascii() and source.decode() == ntkdsl.codegen(arch)
    x = np.random.default_rng(0).standard_normal((6, 3))
    script = ("import json, sys; sys.path.insert(0, '.'); import numpy, tanh_kernel;"
              "x = numpy.array(json.loads(sys.argv[1]));"
              "print(json.dumps(tanh_kernel.ntk(x).tolist()))")
    run = subprocess.run([sys.executable, "-I", "-c", script, json.dumps(x.tolist())],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env={**os.environ, "PYTHONIOENCODING": "ascii"})
    assert run.returncode == 0, run.stderr
    got = np.array(json.loads(run.stdout))
    np.testing.assert_allclose(got, ntkdsl.compile(arch).ntk(x), rtol=1e-12, atol=0)


@pytest.mark.parametrize("args", [("derive", ROUTES["numerical"]),
                                  ("derive", ROUTES["composed"], "--latex"),
                                  ("verify", "--help"), ("fit", "--help"), ("--help",)])
def test_text_output_under_ascii_does_not_crash(args):
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr == b"" and proc.stdout.isascii()
    utf8 = run_cli(*args, encoding="utf-8")
    # What ASCII cannot show is escaped (\xb7, \u03bb), the rest is the same text.
    expected = utf8.stdout.decode().encode("ascii", "backslashreplace")
    assert proc.stdout == expected


def test_ascii_source_names_the_mathematical_characters():
    from ntkdsl.standalone import ascii_source

    text = "# φ(√q z) while √(q1 q2) ≤ 1; dΓ/dk, Γ̇ and ½ ∂"
    assert ascii_source(text) == ("# phi(sqrt(q) z) while sqrt(q1 q2) <= 1; dGamma/dk, "
                                  "Gammadot and 1/2 d")
    assert ascii_source("ω").isascii() and ascii_source("ω") == "\\u03c9"
