"""Issue 12.2, findings at the interfaces: ASCII output, CSV files, the estimators' exceptions,
sparse inputs and the up-front memory check against the process's limits."""
from __future__ import annotations

import io
import json
import os
import re
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


# ------------------------------------------------------------------ 2. CSV files (fit) --

FIT_ARCH = "Dense(16) > Relu > Dense(1)"
_RANDOM = np.random.default_rng(0).bytes(4000)


@pytest.mark.parametrize("content, message", [
    (_RANDOM, r"line \d+, column \d+: a NUL byte; this is a binary file"),
    (bytes(range(128, 256)) * 4, "line 1, column 1: byte 0x80 is not UTF-8 text"),
    ("a,y\n1,2\n3,4\n".encode("utf-16"), "is UTF-16 text"),
    ("a,y\n1,2\n3,4\n".encode("utf-16-le"), "line 1, column 2: a NUL byte"),
    ("a,b,y\n1,2,3\ncaf\u00e9,5,6\n".encode("latin-1"), "line 3, column 4: byte 0xe9 is not UTF-8"),
    (b"", "is empty: it needs a header row and at least 2 data rows"),
    (b"a,b,y\n", "0 data rows below the header"),
    (b"a,b,y\n1,2,3\n", "1 data rows below the header"),
    (b"a,b,y\n1,2,3\n4,5\n", "line 3: 2 fields, but the header has 3"),
    (b"a,b,y\n1,2,3\n\n4,x,6\n", "line 4, column 'b': 'x' is not a number"),
    (b'a,b,y\n1,"2\n",3\n4,x,6\n', "line 4, column 'b': 'x' is not a number"),
    (b"a,b,y\n1,2,3\n4,nan,6\n", "line 3, column 'b': 'nan' is not finite"),
    (b"a,b,y\n1,2,3\n-inf,5,6\n", "line 3, column 'a': '-inf' is not finite"),
    (b"a,b,y\n1,2,3\n4,1e999,6\n", "line 3, column 'b': '1e999' is not finite"),
    (b"a,b,y\n1,2,3.5\n4,5,nan\n", "line 3, column 'y': 'nan' is not finite"),
    (b"a,b,y\n1,2,\n4,5,6\n", "line 2, column 'y': empty cells in the target column"),
    (b"a,b,z\n1,2,3\n4,5,6\n", "no column named 'y'; the columns are a, b, z"),
    (b"a,a,y\n1,2,3\n4,5,6\n", "line 1: the column names 'a' appear more than once"),
    (b"a,y\n" + b"1" * 200_000 + b",2\n3,4\n", "line 2: not valid CSV: field larger than"),
])
def test_bad_csv_is_one_input_error_naming_file_and_place(tmp_path, capsys, content, message):
    from ntkdsl.cli import main

    path = tmp_path / "data.csv"
    path.write_bytes(content)
    assert main(["fit", FIT_ARCH, "--data", str(path), "--target", "y"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"ntkdsl fit: error: {path}") and err.count("error:") == 1, err
    assert re.search(message, err), err


def test_binary_csv_exits_1_without_a_traceback_in_a_fresh_process(tmp_path):
    (tmp_path / "data.csv").write_bytes(_RANDOM)
    proc = run_cli("fit", FIT_ARCH, "--data", "data.csv", "--target", "y", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout == b""
    lines = proc.stderr.decode("ascii").splitlines()
    assert lines[0].startswith("ntkdsl fit: error: data.csv, line ") and "Traceback" not in \
        proc.stderr.decode()


def test_csv_with_a_utf8_byte_order_mark_reads_like_without(tmp_path):
    from ntkdsl.commands.fit import load_csv

    text = "a,b,y\n0.5,1,1\n0.25,-2,0\n3,4.5,1\n"
    path = tmp_path / "bom.csv"
    path.write_bytes(text.encode("utf-8-sig"))  # as spreadsheets save "CSV UTF-8"
    data = load_csv(path, "a", "regression")  # the first column, behind the mark
    expected = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1)
    np.testing.assert_array_equal(data.X, expected[:, 1:])
    np.testing.assert_array_equal(data.y, expected[:, 0])
