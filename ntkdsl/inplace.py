"""In-place NumPy statements for the matrix-shaped assignments of a kernel program.

Kernel matrices are the only large arrays in a kernel program; the per-sample variances
are columns (q1) or rows (q2). sympy's printer writes one expression per assignment, so
NumPy allocates a fresh matrix for every operation. This emitter instead turns each
matrix expression into a sequence of ufunc calls that write into buffers it owns
(``out=``), folds scalar, column and row factors together on the small vectors before they
touch a matrix, and lets the caller drop every matrix name after its last use — fewer
passes over memory and few live buffers per block.

Scalar, column and row subexpressions are still printed by the ordinary printer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import sympy as sp

from .symbolic import Corr

SCALAR, COLUMN, ROW, MATRIX = "scalar", "column", "row", "matrix"

# sympy function -> NumPy/SciPy ufunc (each accepts out=).
UFUNCS = {
    sp.acos: "numpy.arccos", sp.asin: "numpy.arcsin", sp.atan: "numpy.arctan",
    sp.exp: "numpy.exp", sp.log: "numpy.log", sp.sin: "numpy.sin", sp.cos: "numpy.cos",
    sp.tan: "numpy.tan", sp.tanh: "numpy.tanh", sp.sinh: "numpy.sinh", sp.cosh: "numpy.cosh",
    sp.Abs: "numpy.absolute", sp.erf: "scipy.special.erf", sp.erfc: "scipy.special.erfc",
}
COMMUTATIVE = {"numpy.add", "numpy.multiply"}

def shape_kind(kinds) -> str:
    """The kind of a value built from values of the given kinds (broadcasting)."""
    found = set(kinds) - {SCALAR}
    if not found:
        return SCALAR
    if MATRIX in found or found == {COLUMN, ROW}:
        return MATRIX
    return found.pop()


@dataclass(frozen=True)
class Operand:
    """A matrix value in generated code: ``code`` names it; ``owned`` means it is a fresh
    buffer nothing else refers to, so the next operation may overwrite it."""

    code: str
    owned: bool


class Emitter:
    """Emits statements for assignments in order; ``kinds`` maps symbols to their shape
    kind (symbols not in it are scalars) and is extended with every target."""

    def __init__(self, printer, kinds: dict[sp.Symbol, str]):
        self.printer, self.kinds = printer, dict(kinds)
        self.lines: list[str] = []
        self.count = 0

    def kind(self, expr: sp.Expr) -> str:
        return shape_kind(self.kinds.get(s, SCALAR) for s in expr.free_symbols)

    def assign(self, target: sp.Symbol, expr: sp.Expr) -> None:
        kind = self.kind(expr)
        self.kinds[target] = kind
        if kind != MATRIX:
            self.lines.append(f"{target} = {self.printer.doprint(expr)}")
            return
        start, first_buffer = len(self.lines), self.count + 1
        code = self.emit(expr).code
        if _BUFFER.fullmatch(code) and int(code[2:]) >= first_buffer:
            # A buffer made for this value alone: name it the target from the start
            # instead of writing `target = _mN` and `del _mN` (fewer statements to compile).
            word = re.compile(rf"\b{code}\b")
            self.lines[start:] = [word.sub(str(target), line) for line in self.lines[start:]]
        else:
            self.lines.append(f"{target} = {code}")

    # -- expressions -------------------------------------------------------------------
    def emit(self, expr: sp.Expr) -> Operand:
        """Statements computing the matrix ``expr``; returns where the value is."""
        if expr.is_Symbol:
            return Operand(str(expr), False)
        if isinstance(expr, Corr):
            return self._corr(*expr.args)
        if isinstance(expr, sp.Add):
            return self._add(expr)
        if isinstance(expr, sp.Mul):
            return self._mul(expr)
        if isinstance(expr, sp.Pow):
            return self._pow(expr)
        if type(expr) in UFUNCS and len(expr.args) == 1:
            return self._apply(UFUNCS[type(expr)], self.emit(expr.args[0]))
        return self._opaque(expr)

    def _small(self, expr: sp.Expr) -> str:
        return self.printer.doprint(expr)

    def _fresh(self) -> str:
        self.count += 1
        return f"_m{self.count}"

    def _apply(self, ufunc: str, a: Operand, b: str | None = None) -> Operand:
        """``ufunc(a[, b])``, in a's buffer when it is free to overwrite."""
        args = a.code if b is None else f"{a.code}, {b}"
        if a.owned:
            self.lines.append(f"{ufunc}({args}, out={a.code})")
            return a
        name = self._fresh()
        self.lines.append(f"{name} = {ufunc}({args})")
        return Operand(name, True)

    def _combine(self, ufunc: str, a: Operand, b: Operand) -> Operand:
        if not a.owned and b.owned and ufunc in COMMUTATIVE:
            a, b = b, a
        return self._apply(ufunc, a, b.code)

    def _grouped(self, terms: list[sp.Expr], op) -> list[str]:
        """Small terms folded into at most two vector expressions (scalars join the column
        or row group), so each touches the matrix once."""
        groups: dict[str, list[sp.Expr]] = {SCALAR: [], COLUMN: [], ROW: []}
        for term in terms:
            groups[self.kind(term)].append(term)
        target = COLUMN if groups[COLUMN] else ROW
        groups[target] += groups.pop(SCALAR)
        return [self._small(op(*g)) for g in groups.values() if g]

    def _add(self, expr: sp.Add) -> Operand:
        big = [t for t in expr.args if self.kind(t) == MATRIX]
        small = self._grouped([t for t in expr.args if self.kind(t) != MATRIX], sp.Add)
        # Matrix terms with coefficient -1 are subtracted rather than negated first.
        negative = [-t for t in big if t.as_coeff_Mul()[0] == -1]
        positive = [t for t in big if t.as_coeff_Mul()[0] != -1]
        acc = None
        for term in positive:
            op = self.emit(term)
            acc = op if acc is None else self._combine("numpy.add", acc, op)
        if acc is None and small and negative:      # small - m
            op = self.emit(negative.pop(0))
            target = op.code if op.owned else self._fresh()
            out = f", out={target}" if op.owned else ""
            prefix = "" if op.owned else f"{target} = "
            self.lines.append(f"{prefix}numpy.subtract({small.pop(0)}, {op.code}{out})")
            acc = Operand(target, True)
        elif acc is None and len(small) == 2:     # column + row
            name = self._fresh()
            self.lines.append(f"{name} = numpy.add({small.pop(0)}, {small.pop(0)})")
            acc = Operand(name, True)
        elif acc is None:                         # only negative matrix terms
            acc = self._apply("numpy.negative", self.emit(negative.pop(0)))
        for code in small:
            acc = self._apply("numpy.add", acc, code)
        for term in negative:
            acc = self._apply("numpy.subtract", acc, self.emit(term).code)
        return acc

    def _mul(self, expr: sp.Mul) -> Operand:
        big = [f for f in expr.args if self.kind(f) == MATRIX]
        small = self._grouped([f for f in expr.args if self.kind(f) != MATRIX], sp.Mul)
        divisors = [f.base for f in big if f.is_Pow and f.exp == -1]
        factors = [f for f in big if not (f.is_Pow and f.exp == -1)]
        acc = None
        for factor in factors:
            op = self.emit(factor)
            acc = op if acc is None else self._combine("numpy.multiply", acc, op)
        if acc is None and len(small) == 2 and not divisors:
            name = self._fresh()
            self.lines.append(f"{name} = numpy.multiply({small[0]}, {small[1]})")
            return Operand(name, True)
        if acc is None:  # only divisors: numerator is small
            name = self._fresh()
            numerator = small.pop(0) if small else "1.0"
            self.lines.append(f"{name} = numpy.divide({numerator}, {self.emit(divisors[0]).code})")
            acc, divisors = Operand(name, True), divisors[1:]
        for divisor in divisors:
            acc = self._apply("numpy.divide", acc, self.emit(divisor).code)
        for code in small:
            acc = self._apply("numpy.multiply", acc, code)
        return acc

    def _pow(self, expr: sp.Pow) -> Operand:
        base, exponent = expr.args
        if self.kind(base) != MATRIX or self.kind(exponent) != SCALAR or not exponent.is_Number:
            return self._opaque(expr)
        if exponent == 2:
            op = self.emit(base)
            return self._apply("numpy.multiply", op, op.code)
        if exponent == sp.S.Half:
            return self._apply("numpy.sqrt", self.emit(base))
        if exponent == -1:
            return self._apply("numpy.reciprocal", self.emit(base))
        if exponent == -sp.S.Half:
            return self._apply("numpy.reciprocal", self._apply("numpy.sqrt", self.emit(base)))
        return self._apply("numpy.power", self.emit(base), self._small(exponent))

    def _corr(self, k: sp.Expr, q1: sp.Expr, q2: sp.Expr) -> Operand:
        """k / sqrt(q1 q2) clipped to [-1, 1], in three passes: the inverse square roots
        are taken on the variance vectors (0 where a variance is 0, as for _corr)."""
        scaled = self._apply("numpy.multiply", self.emit(k), f"_inv_sqrt({self._small(q1)})")
        scaled = self._apply("numpy.multiply", scaled, f"_inv_sqrt({self._small(q2)})")
        self.lines.append(f"numpy.clip({scaled.code}, -1.0, 1.0, out={scaled.code})")
        return scaled

    def _opaque(self, expr: sp.Expr) -> Operand:
        """Any other call (numerical duals, Piecewise, ...): its matrix arguments are emitted
        first, then it is printed as a call. Its result may alias an input, so it is a free
        buffer only when the function says it returns a new array (``fresh_result``)."""
        args = [sp.Symbol(self.emit(a).code) if self.kind(a) == MATRIX else a
                for a in expr.args]
        name = self._fresh()
        self.lines.append(f"{name} = {self.printer.doprint(expr.func(*args, evaluate=False))}")
        return Operand(name, getattr(expr.func, "fresh_result", False))


_NAME = re.compile(r"[A-Za-z_]\w*")
_BUFFER = re.compile(r"_m\d+")


def drop_dead_names(lines: list[str], names: set[str], keep: set[str]) -> list[str]:
    """Insert ``del`` for each of ``names`` after the last line that uses it (except the
    ``keep`` names, e.g. outputs), so a block's matrices are freed as soon as possible."""
    last: dict[str, int] = {}
    for i, line in enumerate(lines):
        if line.lstrip().startswith("#"):
            continue
        for token in _NAME.findall(line):
            if token in names and token not in keep:
                last[token] = i
    after: dict[int, list[str]] = {}
    for name, i in last.items():
        after.setdefault(i, []).append(name)
    out: list[str] = []
    for i, line in enumerate(lines):
        out.append(line)
        if i in after:
            out.append("del " + ", ".join(sorted(after[i])))
    return out
