"""Standalone modules (ntkdsl.codegen / `ntkdsl codegen`): numbers against the reference
and the library in a process that cannot import ntkdsl, sympy or lark; determinism; ruff and
py_compile; injection safety; input validation inside the module."""
import ast
import importlib.util
import io
import json
import os
import subprocess
import sys
import tokenize
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_matches_reference, case_id, load_reference
from test_numerical_duals import quad2

import ntkdsl
from ntkdsl import ast as ntk_ast
from ntkdsl.cli import main
from ntkdsl.derivation import Assignment, Program, Step
from ntkdsl.generate import comment_lines, docstring_literal, function_source
from ntkdsl.standalone import module_source

CASES = load_reference("nt_kernels.json")["cases"]
ARCHS = list(dict.fromkeys(case["arch"] for case in CASES))
RELU = "Dense(512, W_std=1.5, b_std=0.1) > Relu > Dense(1, W_std=1.5, b_std=0.1)"

# Run in `python -I` (no PYTHONPATH, no user site, no cwd): blocks ntkdsl, sympy and lark,
# and scipy for modules that do not declare it, then imports each module and saves its
# kernels for every reference case.
RUNNER = r'''
import importlib.util, json, sys
import numpy
BLOCKED = {"ntkdsl", "sympy", "lark"}

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked in this test: {name}")
        return None

sys.meta_path.insert(0, Blocker())
for name in ("ntkdsl", "sympy", "lark"):
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"the blocker failed to block {name}")
jobs = json.load(open(sys.argv[1]))
results = {}
for job in jobs:
    if not job["scipy"]:
        BLOCKED.add("scipy")
    spec = importlib.util.spec_from_file_location(job["module"], job["path"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    BLOCKED.discard("scipy")
    for i, case in enumerate(job["cases"]):
        x1 = numpy.array(case["x1"])
        x2 = None if case["x2"] is None else numpy.array(case["x2"])
        results[f"{job['module']}_{i}_nngp"] = module.nngp(x1, x2)
        results[f"{job['module']}_{i}_ntk"] = module.ntk(x1, x2)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in {"ntkdsl", "sympy", "lark"})
assert not leaked, leaked
numpy.savez(sys.argv[2], **results)
'''


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """Every reference architecture's module, written as m0.py, m1.py, ..."""
    folder = tmp_path_factory.mktemp("standalone")
    for i, arch in enumerate(ARCHS):
        (folder / f"m{i}.py").write_text(ntkdsl.codegen(arch), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def standalone_results(generated) -> dict:
    jobs = []
    for i, arch in enumerate(ARCHS):
        path = generated / f"m{i}.py"
        jobs.append({"module": f"m{i}", "path": str(path),
                     "scipy": "import scipy" in path.read_text(),
                     "cases": [c for c in CASES if c["arch"] == arch]})
    (generated / "jobs.json").write_text(json.dumps(jobs))
    (generated / "runner.py").write_text(RUNNER)
    out = generated / "results.npz"
    proc = subprocess.run([sys.executable, "-I", str(generated / "runner.py"),
                           str(generated / "jobs.json"), str(out)],
                          capture_output=True, text=True, cwd=generated, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as data:
        return {key: data[key] for key in data.files}


def _result(results: dict, case: dict, kind: str) -> np.ndarray:
    index = ARCHS.index(case["arch"])
    position = [c for c in CASES if c["arch"] == case["arch"]].index(case)
    return results[f"m{index}_{position}_{kind}"]


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("kind", ["nngp", "ntk"])
def test_standalone_module_matches_reference_and_library(case, kind, standalone_results):
    got = _result(standalone_results, case, kind)
    assert_matches_reference(got, case, kind, rtol=1e-10)
    x1 = np.array(case["x1"])
    x2 = None if case["x2"] is None else np.array(case["x2"])
    lib = getattr(ntkdsl.compile(case["arch"]), kind)(x1, x2)
    scale = np.abs(lib).max()
    # At the case's collinear/opposite pairs one rounding of the Gram entry moves the
    # kernel by ~1e-9 (infinite slope in the correlation); the module evaluates the whole
    # matrix, the library in symmetric blocks, so there they agree to the loose rule only.
    loose = np.zeros(lib.shape, bool)
    for i, j in case["loose"]:
        loose[i, j] = True
    err = np.abs(got - lib)
    assert (err <= 1e-12 * np.maximum(np.abs(lib), 1e-3 * scale))[~loose].all()
    assert (err[loose] <= 1e-7 * scale).all()


def test_generated_modules_pass_py_compile_and_ruff(generated):
    for path in sorted(generated.glob("m*.py")):
        proc = subprocess.run([sys.executable, "-m", "py_compile", str(path)],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
    # --isolated: ruff's default rules, whatever configuration surrounds the folder.
    modules = sorted(str(p) for p in generated.glob("m*.py"))
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--isolated", "--no-cache", *modules],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_scipy_is_imported_exactly_where_a_formula_needs_it(generated):
    sources = [(generated / f"m{i}.py").read_text() for i in range(len(ARCHS))]
    for source in sources:
        body = source.split('NTKDSL_VERSION = ', 1)[1]
        assert ("import scipy.special" in source) == ("scipy." in body)
    assert "scipy" not in ntkdsl.codegen(RELU).split('"""')[-1]


_GENERATE = ("import hashlib, json, sys; from ntkdsl.standalone import module_source; "
             "print(json.dumps([hashlib.sha256(module_source(a).encode()).hexdigest() "
             "for a in json.loads(sys.argv[1])]))")


def test_output_is_byte_identical_across_processes_and_hash_seeds():
    def digests(seed: str) -> list[str]:
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", _GENERATE, json.dumps(ARCHS)],
                              capture_output=True, text=True, env=env, timeout=300,
                              check=False)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    first = digests("1")
    assert first == digests("12345")
    assert len(set(first)) == len(ARCHS)


def _load(source: str, tmp_path: Path, name: str = "kernel_module"):
    path = tmp_path / f"{name}.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_module_docstring_and_exports(tmp_path):
    module = _load(ntkdsl.codegen(RELU), tmp_path)
    doc = module.__doc__
    assert RELU in doc and f"ntkdsl {ntkdsl.__version__}" in doc
    assert "theta_2 = acos(c_2)" in doc and "T_2 = T_1*(pi - theta_2)/(2*pi)" in doc
    assert module.ARCHITECTURE == RELU and ntkdsl.__version__ == module.NTKDSL_VERSION
    assert set(module.__all__) == {"nngp", "ntk", "kernels", "pair", "diagonal", "relu_dual"}


def test_dual_functions_match_the_arc_cosine_and_erf_formulas(tmp_path):
    """Hand-written closed forms (Cho & Saul; Williams), independent of the registry."""
    q1, q2 = np.array([0.7, 1.3, 2.0]), np.array([1.1, 0.4, 2.0])
    k = np.array([0.3, -0.5, 2.0]) * np.sqrt(q1 * q2) / np.array([1, 1, 2.0])
    relu = _load(ntkdsl.codegen("Dense(8) > Relu > Dense(1)"), tmp_path, "r").relu_dual
    theta = np.arccos(k / np.sqrt(q1 * q2))
    gamma = np.sqrt(q1 * q2) / (2 * np.pi) * (np.sin(theta) + (np.pi - theta) * np.cos(theta))
    np.testing.assert_allclose(relu(q1, q2, k), [gamma, (np.pi - theta) / (2 * np.pi)],
                               rtol=1e-13)
    erf = _load(ntkdsl.codegen("Dense(8) > Erf > Dense(1)"), tmp_path, "e").erf_dual
    norm = np.sqrt((1 + 2 * q1) * (1 + 2 * q2))
    np.testing.assert_allclose(erf(q1, q2, k)[0], 2 / np.pi * np.arcsin(2 * k / norm),
                               rtol=1e-13)


@pytest.mark.filterwarnings("ignore:The occurrence of roundoff error")  # φ' jumps at 0
def test_a_run_of_activations_exports_the_composed_dual_that_pair_calls(tmp_path):
    """``Relu > Sin`` is one activation, sin∘relu (DESIGN §2): the module exports its dual —
    not relu_dual and sin_dual — checked against nested quadrature of E[φ(u)φ(v)] and
    E[φ'(u)φ'(v)]; ``pair`` and the library's kernels are that dual at the input statistics."""
    arch = "Dense(8) > Relu > Sin > Dense(1)"
    module = _load(ntkdsl.codegen(arch), tmp_path, "composed")
    assert set(module.__all__) == {"nngp", "ntk", "kernels", "pair", "diagonal", "relu_sin_dual"}
    phi = lambda t: np.sin(np.maximum(t, 0.0))
    phi_dot = lambda t: np.cos(np.maximum(t, 0.0)) * (t > 0)
    cases = [(0.7, 1.3, 0.3), (2.0, 0.5, -0.6), (1.0, 1.0, 0.9)]
    q1, q2, c = (np.array(v) for v in zip(*cases))
    k = c * np.sqrt(q1 * q2)
    gamma, gamma_dot = module.relu_sin_dual(q1, q2, k)
    np.testing.assert_allclose(gamma, [quad2(phi, *case) for case in cases], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gamma_dot, [quad2(phi_dot, *case) for case in cases], rtol=1e-9,
                               atol=1e-12)
    # Dense(8) (W_std=1, no bias) keeps the statistics, so the NNGP is Γ(q1, q2, K) and the
    # NTK Γ + K·Γ̇ (Dense(1) adds the NNGP to σw² times the incoming NTK).
    np.testing.assert_allclose(module.pair(q1, q2, k, 4), [gamma, gamma + k * gamma_dot],
                               rtol=1e-12)
    x = np.random.default_rng(3).standard_normal((5, 4))
    gram = x @ x.T / 4
    diag = np.diag(gram)
    g, g_dot = module.relu_sin_dual(diag[:, None] + 0 * gram, diag[None, :] + 0 * gram, gram)
    off = ~np.eye(5, dtype=bool)
    net = ntkdsl.compile(arch)
    np.testing.assert_allclose(net.nngp(x)[off], g[off], rtol=1e-9)
    np.testing.assert_allclose(net.ntk(x)[off], (g + gram * g_dot)[off], rtol=1e-9)


def test_every_dual_derivative_is_the_k_derivative_of_its_dual(tmp_path, generated):
    """Price's theorem, checked by central differences on the generated functions."""
    q1, q2, k = np.array([0.8, 1.5]), np.array([1.2, 0.6]), np.array([0.2, -0.4])
    h = 1e-6
    checked = 0
    for i in range(len(ARCHS)):
        module = _load((generated / f"m{i}.py").read_text(), tmp_path, f"d{i}")
        # Sign's derivative is 0 almost everywhere: its NTK factor is 0 by convention.
        for name in (n for n in module.__all__ if n.endswith("_dual") and n != "sign_dual"):
            dual = getattr(module, name)
            slope = (dual(q1, q2, k + h)[0] - dual(q1, q2, k - h)[0]) / (2 * h)
            np.testing.assert_allclose(dual(q1, q2, k)[1], slope, rtol=1e-6, atol=1e-9,
                                       err_msg=f"{ARCHS[i]}: {name}")
            checked += 1
    assert checked >= 13


@pytest.mark.parametrize("x1, x2, message", [
    (np.ones(3), None, "x1 must be 2-D"),
    (np.ones((0, 3)), None, "x1 is empty"),
    ([[1.0, np.nan]], None, "non-finite value nan at row 0, column 1"),
    (np.ones((2, 3)), np.ones((2, 4)), "x1 has 3 features but x2 has 4"),
    ([["a", "b"]], None, "x1 must be a numeric array"),
    (np.ones((2, 3)), [[1.0, 2.0, np.inf]], "x2 has a non-finite value inf"),
])
def test_module_validates_inputs_with_value_errors(tmp_path, x1, x2, message):
    module = _load(ntkdsl.codegen(RELU), tmp_path)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        module.ntk(x1, x2)


def test_identical_rows_get_the_exact_diagonal(tmp_path):
    """Rows repeated across x1 and x2 take the diagonal recursion, as in the library."""
    module = _load(ntkdsl.codegen(RELU), tmp_path)
    rng = np.random.default_rng(3)
    x1 = rng.normal(size=(4, 512))
    x2 = np.vstack([x1[2], rng.normal(size=(2, 512)), x1[0]])
    ntk = module.ntk(x1, x2)
    diag_nngp, diag_ntk = module.diagonal(np.einsum("ij,ij->i", x1, x1) / 512, 512)
    assert ntk[2, 0] == diag_ntk[2] and ntk[0, 3] == diag_ntk[0]
    np.testing.assert_allclose(ntk, ntkdsl.compile(RELU).ntk(x1, x2), rtol=1e-12)
    np.testing.assert_array_equal(np.diag(module.nngp(x1)), diag_nngp)


# --------------------------------------------------------------------- injection safety

NASTY = ['"""', "'''", '\\', '\\"""', '"', "'", "\n", "\r", "\r\n", "\x00", "\x0c", "\t",
         "\u2028", "\x85", "\u03b8", "#", "\\N{BULLET}", "{x}", 'x"""; raise SystemExit(3); """',
         "\nraise SystemExit(4)\n", "\rraise SystemExit(5)", "\\\n", '"\\']


@pytest.mark.parametrize("text", NASTY + ["".join(NASTY)])
def test_docstring_literal_round_trips_as_one_string_token(text):
    literal = docstring_literal(text)
    assert ast.literal_eval(literal) == text
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(literal).readline)
              if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER)]
    assert [t.type for t in tokens] == [tokenize.STRING]
    assert literal.isascii()


@pytest.mark.parametrize("text", NASTY + ["".join(NASTY)])
def test_comment_lines_stay_comments(text):
    source = "\n".join(comment_lines(text)) + "\nx = 1\n"
    kinds = {t.type for t in tokenize.generate_tokens(io.StringIO(source).readline)}
    assert kinds <= {tokenize.COMMENT, tokenize.NL, tokenize.NAME, tokenize.OP,
                     tokenize.NUMBER, tokenize.NEWLINE, tokenize.ENDMARKER}
    assert len(source.splitlines()) == len(comment_lines(text)) + 1
    namespace: dict = {}
    exec(compile(source, "<test>", "exec"), namespace)
    assert set(namespace) == {"__builtins__", "x"}


def test_function_source_keeps_labels_and_docs_inert():
    import sympy as sp
    a = sp.Symbol("a")
    label = "".join(NASTY)
    program = Program((a,), (Step(label, (Assignment(sp.Symbol("b"), 2 * a),), label),),
                      (sp.Symbol("b"), 3 * a))
    namespace: dict = {}
    exec(compile(function_source(program, "f", label), "<t>", "exec"), namespace)
    assert namespace["f"](2.0) == (4.0, 6.0)
    # continuation lines of a docstring are indented with the function body
    assert namespace["f"].__doc__.replace("\n    ", "\n") == label


def _assert_text_only_in_strings_and_comments(source: str, marker: str) -> None:
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if marker in token.string:
            assert token.type in (tokenize.STRING, tokenize.COMMENT), token


def test_hostile_layer_labels_cannot_escape_the_module(tmp_path, monkeypatch):
    """Until Fn("...") carries user text into labels, give every activation a hostile one."""
    hostile = 'Relu"""\nraise SystemExit(7)\n#\rraise SystemExit(8)\x00 \\ \'\'\' HOSTILE'
    monkeypatch.setattr(ntk_ast.Activation, "__str__", lambda self: hostile)
    source = module_source(RELU)
    _assert_text_only_in_strings_and_comments(source, "HOSTILE")
    _assert_text_only_in_strings_and_comments(source, "SystemExit")
    module = _load(source, tmp_path, "hostile")
    assert "raise SystemExit(7)" in module.__doc__
    assert module.relu_dual.__doc__.replace("\n    ", "\n").startswith("Dual of " + hostile)
    x = np.random.default_rng(1).normal(size=(3, 4))
    monkeypatch.undo()
    np.testing.assert_allclose(module.ntk(x), ntkdsl.compile(RELU).ntk(x), rtol=1e-12)


@pytest.mark.parametrize("arch", [
    'Dense(512,\r\n  W_std=1.5)\t>\fRelu\r> Dense(1, parameterization="standard")',
    "\n\n  Dense(512) >\n Relu  >  Dense(1)   \n",
    "Dense(512, parameterization='ntk') > Relu > Dense(1)",
])
def test_whitespace_and_quotes_in_the_architecture_stay_in_literals(arch, tmp_path):
    source = ntkdsl.codegen(arch)
    assert source.isascii()
    compile(source, "<generated>", "exec")
    module = _load(source, tmp_path, "ws")
    assert arch == module.ARCHITECTURE
    x = np.random.default_rng(2).normal(size=(3, 4))
    np.testing.assert_allclose(module.ntk(x), ntkdsl.compile(arch).ntk(x), rtol=1e-12)


# --------------------------------------------------------------------- command line

def test_codegen_command_writes_the_module(tmp_path, capsys):
    out = tmp_path / "relu_kernel.py"
    assert main(["codegen", RELU, "-o", str(out)]) == 0
    assert out.read_text() == ntkdsl.codegen(RELU)
    assert f"wrote {out}" in capsys.readouterr().err


def test_codegen_command_prints_to_stdout_without_output(capsys):
    assert main(["codegen", RELU]) == 0
    assert capsys.readouterr().out == ntkdsl.codegen(RELU)


def test_codegen_command_reports_errors_on_stderr(tmp_path, capsys):
    assert main(["codegen", "Dense(512) > Relu >", "-o", str(tmp_path / "k.py")]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "ntkdsl codegen: error: line 1" in captured.err
    assert not (tmp_path / "k.py").exists()
    assert main(["codegen", RELU, "-o", str(tmp_path / "missing" / "k.py")]) == 1
    assert "cannot write" in capsys.readouterr().err


def test_codegen_is_a_plain_function_giving_the_module_source():
    import types

    from ntkdsl import codegen
    assert isinstance(codegen, types.FunctionType) and codegen.__module__ == "ntkdsl"
    assert codegen(RELU) == module_source(RELU)


def test_a_formula_needing_scipy_imports_scipy_special(tmp_path, monkeypatch):
    """No closed form in the registry needs scipy yet; give Relu's dual an erf."""
    import sympy as sp

    from ntkdsl import standalone

    def fake_dual_maps(node):
        k = sp.Symbol("K", real=True)
        return sp.erf(k), 2 / sp.sqrt(sp.pi) * sp.exp(-k ** 2), "closed form"

    monkeypatch.setattr(standalone, "dual_maps", fake_dual_maps)
    source = module_source(RELU)
    assert "import scipy.special\n" in source and "import sympy" not in source
    module = _load(source, tmp_path, "with_scipy")
    from math import erf
    assert module.relu_dual(0.0, 0.0, 0.5)[0] == pytest.approx(erf(0.5), rel=1e-15)


def test_numerical_and_composed_duals_travel_with_the_module(tmp_path):
    """Duals on the numerical route carry their helpers (and stdlib/scipy imports) along."""
    x = np.random.default_rng(4).normal(size=(5, 3))
    for arch in ["Dense(512, b_std=0.1) > Tanh > Dense(1)", "Dense(512) > Relu > Erf > Dense(1)"]:
        net = ntkdsl.compile(arch)
        source = ntkdsl.codegen(arch)
        compile(source, "<generated>", "exec")
        module = _load(source, tmp_path, f"num{len(arch)}")
        np.testing.assert_allclose(module.ntk(x), net.ntk(x), rtol=1e-12, atol=1e-15)
