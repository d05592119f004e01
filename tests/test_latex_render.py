"""The LaTeX of formulas, rendered by a real MathJax 3 (the npm package mathjax-full, run by
Node.js from tests/js): no TeX error or undefined macro, no escape shown literally, the
numerical duals as Greek letters, a heading that names the kernel and the architecture, and
no row wider than a notebook shows.

Needs Node.js (>= 18) and npm on PATH; the first run installs tests/js/node_modules with
``npm ci`` from the committed package-lock.json (the npm registry must be reachable then).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import ntkdsl
from ntkdsl.formula import TEXT_WIDTH, Formula, latex_roman, latex_tt

JS_DIR = Path(__file__).parent / "js"
ARCHS = {
    "closed form": "Dense(512, W_std=1.5, b_std=0.1) > Relu > Dense(1, W_std=1.5, b_std=0.1)",
    "numerical": "Dense(512, W_std=1.5, b_std=0.1) > Tanh > Dense(1)",
    "numerical Fn": 'Dense(512) > Fn("x*tanh(x)") > Dense(1)',
    "rules Fn": 'Dense(512) > Fn("x^2 + 0.5*x") > Dense(1)',
    "layer norm": "Dense(512, b_std=0.1) > LayerNorm > Erf > Dense(1)",
    "sum": "Dense(512) > (Relu > Dense(512, b_std=0.2) + Identity) > Relu > Dense(1)",
    "standard": ("Dense(512, W_std=1.5, b_std=0.1, parameterization='standard') > Gelu"
                 " > Dense(1, parameterization='standard')"),
    "composed": "Dense(512) > Tanh > Relu > Dense(1)",
    "deep": "(Dense(512, W_std=1.4, b_std=0.1) > Relu) * 3 > Dense(1)",
    "zero variance": "Dense(512) > RectifiedMonomial(0) > Dense(1)",  # cases on q = 0
}
DEEP = "(Dense(512, W_std=1.4, b_std=0.1) > Relu) * 10 > Dense(1)"
KINDS = ("nngp", "ntk", "both")


def _command(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"tests/test_latex_render.py needs '{name}' on PATH (Node.js >= 18 with npm, "
                    "e.g. Debian's 'nodejs' and 'npm' packages): it renders every formula with "
                    "MathJax 3 from tests/js")
    return path


@pytest.fixture(scope="module")
def render():
    """A function: list of TeX strings -> MathJax's findings for each (see tests/js/render.js)."""
    node = _command("node")
    if not (JS_DIR / "node_modules" / "mathjax-full").is_dir():
        npm = _command("npm")
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR,
                              capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            pytest.fail(f"'npm ci' in {JS_DIR} failed (the npm registry must be reachable once):"
                        f"\n{done.stderr[-2000:]}")

    def run(latex: list[str], svg: bool = False) -> list[dict]:
        done = subprocess.run([node, str(JS_DIR / "render.js")] + (["--svg"] if svg else []),
                              input=json.dumps(latex), capture_output=True, text=True,
                              timeout=600, check=False)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    return run


def _formulas() -> list[tuple[str, str]]:
    """(name, TeX) of every LaTeX output for every architecture: latex(), the display
    Jupyter gets, and expanded(latex=True); of the pair and of the diagonal program."""
    found = []
    for case, arch in ARCHS.items():
        net = ntkdsl.compile(arch)
        for program, which in ((net.program, "pair"), (net.diagonal_program, "diagonal")):
            for kind in KINDS:
                formula = Formula(arch, program, kind)
                name = f"{case}/{which}/{kind}"
                found += [(f"{name}/latex", formula.latex()),
                          (f"{name}/jupyter", _display_math(formula._repr_latex_())),
                          (f"{name}/expanded", formula.expanded(latex=True))]
    found.append(("network", _display_math(ntkdsl.compile(ARCHS["numerical"])._repr_latex_())))
    # Over MathJax's 5 KB macro buffer: a macro such as "\\ " (control space), which MathJax
    # expands by rewriting the rest of the input, fails there. (Not expanded(): 40 MB.)
    found.append(("deep 10/latex", ntkdsl.compile(DEEP).formula("ntk").latex()))
    return found


def _display_math(text: str) -> str:
    assert text.startswith("$$") and text.endswith("$$"), text[:40]
    return text[2:-2]


@pytest.fixture(scope="module")
def rendered(render):
    formulas = _formulas()
    return dict(zip((name for name, _ in formulas), render([tex for _, tex in formulas])))


def test_the_renderer_reports_errors_and_shows_escapes(render):
    """What the tests below rely on: an undefined macro and a TeX error are reported (no
    'noundefined'/'noerrors'), and a text-mode escape shows as a literal backslash."""
    undefined, misplaced, escape = render([r"x + \undefinedmacro", r"a & b", r"\text{W\_std}"])
    assert undefined["errors"] and misplaced["errors"] and not escape["errors"]
    assert any("\\" in text for text in escape["texts"])


def test_escaped_text_shows_every_character(render):
    """latex_tt and latex_roman show each printable ASCII character as itself (the math
    spellings of backslash and tilde as their math symbols, '<=' as one relation)."""
    text = "".join(chr(code) for code in range(32, 127))
    tt, roman = render([latex_tt(text), latex_roman(text)])
    assert not tt["errors"] and not roman["errors"]
    as_math = str.maketrans({"\\": "\u2216", "~": "\u223c"})
    assert _shown_text(tt) == text.translate(as_math)
    assert _shown_text(roman) == text.translate(as_math).replace(";<=", ";\u2264")


def test_every_formula_renders_without_errors(rendered):
    failures = {name: r["errors"] for name, r in rendered.items() if r["errors"]}
    assert not failures


def test_no_escape_is_shown_literally(rendered):
    """A backslash in the rendered text is a macro MathJax did not read (\\_ inside \\text,
    \\^{} ...); '^{}' and '\\_' are what LaTeX text-mode escapes look like there."""
    shown = {name: [t for t in r["texts"] if "\\" in t or "^{}" in t or "\\_" in t]
             for name, r in rendered.items()}
    assert not {name: texts for name, texts in shown.items() if texts}


def test_numerical_duals_are_greek_letters(rendered):
    """Gamma[Tanh] shows as Γ with the activation as a subscript, Gammadot with a dot."""
    for name, r in rendered.items():
        assert not any("Gamma" in t for t in r["texts"]), name
    texts = rendered["numerical/pair/ntk/jupyter"]["texts"]
    mathml = rendered["numerical/pair/ntk/jupyter"]["mathml"]
    assert "\u0393" in texts and "\u02d9" in texts  # Γ, and the dot accent of Γ̇
    gamma = r"<mi[^>]*>&#x393;</mi>"
    subscript_tanh = r"(\s*<mrow[^>]*>)+\s*<mi[^>]*>Tanh</mi>"
    assert re.search(r"<msub>\s*" + gamma + subscript_tanh, mathml)
    assert re.search(r"<msub>\s*<mrow[^>]*>\s*<mover>\s*" + gamma + r"\s*<mo>&#x2D9;</mo>\s*"
                     r"</mover>\s*</mrow>" + subscript_tanh, mathml)


def _shown_text(result: dict) -> str:
    return "".join(result["texts"]).replace("\u00a0", " ")


def _starts_with(text: str, start: str) -> bool:
    """Whether ``text`` starts with ``start``, ignoring spaces (a wrapped line loses one)."""
    return "".join(text.split()).startswith("".join(start.split()))


@pytest.mark.parametrize("case", list(ARCHS))
def test_heading_names_kernel_architecture_and_inputs(rendered, case):
    for kind, what in (("ntk", "NTK of "), ("both", "NNGP and NTK of ")):
        text = _shown_text(rendered[f"{case}/pair/{kind}/jupyter"])
        assert _starts_with(text, what + ARCHS[case])  # verbatim: W_std, quotes, '>' and all
        assert "inputs:" in text and "number of features" in text
    diagonal = _shown_text(rendered[f"{case}/diagonal/both/latex"])
    assert _starts_with(diagonal, "NNGP and NTK (identical inputs) of " + ARCHS[case])
    assert "every correlation is exactly 1" in diagonal


def _width_ex(svg: str) -> float:
    return float(re.search(r'<svg[^>]* width="([\d.]+)ex"', svg).group(1))


def test_no_row_is_wider_than_a_notebook_line(render):
    """The numerical route's note (300 characters) wraps: the whole display, headings and
    all, is no wider than a row of TEXT_WIDTH + 10 typewriter characters (fixed width, so
    a count of characters; 90 of them are about 750 pixels at a 16-pixel font), both
    measured in MathJax's SVG output."""
    formula = ntkdsl.compile(ARCHS["numerical"]).formula("ntk")
    assert len(formula.layers[-2].note) > 2 * TEXT_WIDTH  # else the test would not test wrapping
    reference = r"\texttt{" + "x" * (TEXT_WIDTH + 10) + "}"
    display, line = render([_display_math(formula._repr_latex_()), reference], svg=True)
    assert _width_ex(display["svg"]) <= _width_ex(line["svg"])
