"""In-place NumPy statements for the matrix-shaped assignments of a kernel program.

Kernel matrices are the only large arrays in a kernel program; the per-sample variances
are columns (q1) or rows (q2). sympy's printer writes one expression per assignment, so
NumPy allocates a fresh matrix for every operation. This emitter instead turns each
matrix expression into a sequence of ufunc calls that write into buffers it owns
(``out=``), folds scalar, column and row factors together on the small vectors before they
touch a matrix, and lets the caller drop every matrix name after its last use — fewer
passes over memory and few live buffers per block.

Scalar, column and row subexpressions are still printed by the ordinary printer. A column
or row value a matrix operation reads (``_inv_sqrt(q1_1)``, ``2*q2_3 + 1``) is a statement
of its own, so that every statement is either on matrices or on values of one input alone
(``Statement.matrix``): code generation moves the latter out of the pair function into a
side function computed once per evaluation, instead of once per chunk of entries.

Statements come out as ``Statement`` objects — text plus the names each binds and reads —
so liveness (where ``del`` goes, how many arrays are alive at once) is computed from them,
never by reading the text back. Names are numbered slots (``{i}`` in the text, the i-th
name of the step's code), so one template step's statements serve every layer of its
kind by binding the slots to that layer's names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

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


class Statement(NamedTuple):  # a tuple: a deep network's function has tens of thousands
    """One statement of generated code: ``text``, the names it binds (``targets``: a new
    array each, or with ``alias`` a second name for the array it reads), the names it
    reads, the names a ``del`` statement drops, and whether it works on ``matrix`` values
    (one per pair of inputs: it reads or makes one) rather than on values of one input alone
    or scalars. In a step's code (``StepCode``) names are slot numbers and the text has
    ``{i}`` for slot i; ``bound`` gives the statement over actual names."""

    text: str
    targets: tuple = ()
    reads: tuple = ()
    alias: bool = False
    deletes: tuple = ()
    matrix: bool = False

    def bound(self, names: list[str]) -> Statement:
        name = names.__getitem__
        return Statement(self.text.format(*names), tuple(map(name, self.targets)),
                         tuple(map(name, self.reads)), self.alias,
                         tuple(map(name, self.deletes)) if self.deletes else (), self.matrix)


def comment(text: str) -> Statement:
    return Statement(text)


def slot(i: int) -> str:
    return "{" + str(i) + "}"


@dataclass(frozen=True)
class Operand:
    """A matrix value in generated code: slot ``index`` names it; ``owned`` means it is a
    fresh buffer nothing else refers to, so the next operation may overwrite it."""

    index: int
    owned: bool

    @property
    def code(self) -> str:
        return slot(self.index)


class Emitter:
    """Emits statements for assignments in order. ``slots`` maps each symbol the
    statements name to its slot (the printer prints it as ``{i}``); ``kinds`` maps symbols
    to their shape kind (symbols not in it are scalars) and is extended with every target.
    New buffers get new slots (``buffers`` lists them); a buffer made for one target alone
    takes the target's slot instead. A column or row value that a matrix operation reads
    gets a slot of its own too (``vectors``: slot -> shape kind)."""

    def __init__(self, printer, kinds: dict[sp.Symbol, str], slots: dict[sp.Symbol, int]):
        self.printer, self.kinds, self.slots = printer, dict(kinds), dict(slots)
        printer.names = {s: slot(i) for s, i in self.slots.items()}
        self.statements: list[Statement] = []
        self.buffers: list[int] = []
        self.top = max(self.slots.values(), default=-1) + 1  # the next free slot
        self.once: set[sp.Symbol] = set()  # joint values read exactly once: overwritable
        self.claimed: set[int] = set()  # their slots, once read by the value being assigned
        self.vectors: dict[int, str] = {}  # named column/row values and vector buffers

    def kind(self, expr: sp.Expr) -> str:
        return shape_kind(self.kinds.get(s, SCALAR) for s in expr.free_symbols)

    def name(self, symbol: sp.Symbol) -> int:
        """The slot of ``symbol``; a new one if it has none yet (targets, temporaries)."""
        if symbol not in self.slots:
            self.slots[symbol] = self._new_slot()
            self.printer.names[symbol] = slot(self.slots[symbol])
        return self.slots[symbol]

    def _new_slot(self) -> int:
        self.top += 1
        return self.top - 1

    def _emit(self, text: str, targets=(), reads=(), alias: bool = False,
              matrix: bool = True) -> None:
        self.statements.append(Statement(text, tuple(targets), tuple(dict.fromkeys(reads)),
                                         alias, (), matrix))

    def _reads(self, expr: sp.Expr) -> list[int]:
        return [self.slots[s] for s in sorted(expr.free_symbols, key=str) if s in self.slots]

    def joint(self, call: sp.Expr) -> tuple[sp.Symbol, sp.Symbol]:
        """``a, b = helper(*args)``: ``call`` and its partner, which one helper computes
        together (the printer's ``joint``), as two new symbols standing for its results (new
        arrays of the arguments' shape)."""
        return self.results(self.printer.joint_helper(call), call.args, 2)

    def results(self, helper: str, args, count: int) -> tuple[sp.Symbol, ...]:
        """``a, b, ... = helper(*args)``: ``count`` new symbols standing for the helper's
        results (new arrays of the arguments' shape; a joint call's, a group's)."""
        kind = shape_kind(self.kind(a) for a in args)
        matrix = kind == MATRIX
        operands = [self.emit(a) if self.kind(a) == MATRIX else self._small(a, hoist=matrix)
                    for a in args]
        return self._results(helper, operands, kind, count)

    def relu_maps(self, k: sp.Expr, t: sp.Expr, q1: sp.Expr,
                  q2: sp.Expr) -> tuple[sp.Symbol, sp.Symbol]:
        """``a, b = _relu_maps(k, t, -1/sqrt(q1), 1/sqrt(q2), sqrt(q1), sqrt(q2))``: a ReLU
        layer's maps of the matrices k (the NNGP) and t (the NTK) with variances q1 (a
        column) and q2 (a row), sqrt(q1) sqrt(q2) ArcCosine(1, c) and t ArcCosine(0, c) at
        c = Corr(k, q1, q2), as two new symbols. The four vectors are values of their own,
        like the correlation's factors (_corr): outside the pair function where it has one."""
        vectors = [self._inverse_sqrt(q1, negated=True), self._inverse_sqrt(q2),
                   self._small(sp.sqrt(q1)), self._small(sp.sqrt(q2))]
        return self._results(self.printer.relu_maps_helper(),
                             [self.emit(k), self.emit(t), *vectors], MATRIX, 2)

    def _results(self, helper: str, operands, kind: str,
                 count: int) -> tuple[sp.Symbol, ...]:
        """``a, b, ... = helper(*operands)`` as ``count`` new symbols standing for its
        results, values of shape ``kind``."""
        targets = [self._fresh() for _ in range(count)]
        self._emit(f"{', '.join(slot(t) for t in targets)} = "
                   f"{helper}({', '.join(o.code for o in operands)})",
                   targets, [i for o in operands for i in _reads_of(o)], matrix=kind == MATRIX)
        symbols = tuple(sp.Dummy("joint") for _ in targets)
        for symbol, index in zip(symbols, targets):
            self.slots[symbol] = index
            self.printer.names[symbol] = slot(index)
            self.kinds[symbol] = kind
            if kind in (COLUMN, ROW):
                self.vectors[index] = kind
        return symbols

    def named(self, expr: sp.Expr) -> sp.Symbol:
        """A symbol standing for the matrix ``expr``, computed here once (a new buffer):
        a joint call's argument that other expressions of the step read too (a gradient
        program's correlation, also in the derivatives) is then made in one pass, not once
        inside the call and again as a common subexpression of the rest."""
        index = self.emit(expr).index
        symbol = sp.Dummy("named")
        self.slots[symbol] = index
        self.printer.names[symbol] = slot(index)
        self.kinds[symbol] = MATRIX
        return symbol

    def owned_once(self, shared, reduced) -> None:
        """Mark the joint values read exactly once in the step's (cse'd) expressions: that
        one reader may overwrite them."""
        joint = [s for s in self.slots if isinstance(s, sp.Dummy) and s.name == "joint"]
        exprs = [e for _, e in shared] + list(reduced)
        self.once = {s for s in joint if sum(e.count(s) for e in exprs) == 1}

    def _rename_all(self, old: int, new: int) -> None:
        # Only statements that name the slot change (a statement's text names exactly its
        # targets, reads and deletes): renaming all of them was quadratic in a long step.
        self.statements = [_renamed(s, old, new, self.top)
                           if old in s.targets or old in s.reads or old in s.deletes else s
                           for s in self.statements]
        if old in self.buffers:
            self.buffers.remove(old)
        self.vectors.pop(old, None)

    def assign(self, target: sp.Symbol, expr: sp.Expr) -> None:
        to = self.name(target)
        if expr in self.once:
            # The helper's result is this value: it is named the target from the start.
            self.kinds[target] = self.kinds[expr]
            self._rename_all(self.slots[expr], to)
            return
        kind = self.kind(expr)
        self.kinds[target] = kind
        if kind != MATRIX:
            self._emit(f"{slot(to)} = {self.printer.doprint(expr)}", [to], self._reads(expr),
                       matrix=False)
            return
        first, self.claimed = len(self.buffers), set()
        result = self.emit(expr)
        if result.owned and (result.index in self.buffers[first:] or result.index in self.claimed):
            # A buffer made for this value alone: name it the target from the start
            # instead of writing `target = _mN` and `del _mN` (fewer statements to compile).
            self._rename_all(result.index, to)
        else:
            self._emit(f"{slot(to)} = {result.code}", [to], [result.index], alias=True)

    # -- expressions -------------------------------------------------------------------
    def emit(self, expr: sp.Expr) -> Operand:
        """Statements computing the matrix ``expr``; returns where the value is."""
        if expr in self.once:  # a helper's new array, read here only: free to overwrite
            self.once.discard(expr)
            self.claimed.add(self.slots[expr])  # now made for the value being assigned
            return Operand(self.slots[expr], True)
        if expr.is_Symbol:
            return Operand(self.name(expr), False)
        if isinstance(expr, Corr):
            return self._corr(*expr.args)
        affine = self._affine_op(expr)
        if affine is not None:
            return affine
        if isinstance(expr, sp.Add):
            return self._add(expr)
        if isinstance(expr, sp.Mul):
            return self._mul(expr)
        if isinstance(expr, sp.Pow):
            return self._pow(expr)
        if type(expr) in UFUNCS and len(expr.args) == 1:
            return self._apply(UFUNCS[type(expr)], self.emit(expr.args[0]))
        return self._opaque(expr)

    def _affine_op(self, expr: sp.Expr) -> Operand | None:
        """``scale * op(x) + shift`` with scalar scale and shift, for a spatial op whose helper
        applies them itself (a convolution's weights and bias: two passes over the array
        fewer), else None."""
        shift = sp.S.Zero
        if isinstance(expr, sp.Add):
            big = [t for t in expr.args if self.kind(t) == MATRIX]
            if len(big) != 1:
                return None
            shift, expr = expr - big[0], big[0]
        scale = sp.S.One
        if isinstance(expr, sp.Mul):
            big = [f for f in expr.args if self.kind(f) == MATRIX]
            if len(big) != 1:
                return None
            scale, expr = expr / big[0], big[0]
        if not getattr(expr, "affine", False) or (scale == 1 and shift == 0):
            return None
        if shape_kind(self.kinds.get(s, SCALAR) for s in (scale + shift).free_symbols) != SCALAR:
            return None
        operand = self.emit(expr.args[0])
        scale_code, shift_code = self._small(scale), self._small(shift)
        name = self._fresh()
        self._emit(f"{slot(name)} = "
                   + self.printer.affine_call(expr, operand.code, scale_code.code, shift_code.code),
                   [name], [operand.index, *scale_code.reads, *shift_code.reads])
        return Operand(name, True)

    def _small(self, expr: sp.Expr, hoist: bool = True) -> Small:
        """The printed code of a scalar, column or row value a matrix operation reads; a
        column or row expression (not a bare name) is first assigned to a slot of its own
        (unless not ``hoist``), so that it is computed apart from the matrices."""
        small = Small(self.printer.doprint(expr), tuple(self._reads(expr)))
        kind = self.kind(expr)
        return self._named(small, kind) if hoist and not expr.is_Symbol else small

    def _named(self, small: Small, kind: str) -> Small:
        """A column or row value's code assigned to a new slot (a scalar's stays inline)."""
        if kind not in (COLUMN, ROW):
            return small
        index = self._new_slot()
        self.vectors[index] = kind
        self._emit(f"{slot(index)} = {small.code}", [index], small.reads, matrix=False)
        return Small(slot(index), (index,))

    def _fresh(self) -> int:
        index = self._new_slot()
        self.buffers.append(index)
        return index

    def _call(self, ufunc: str, *args: str) -> str:
        return f"{self.printer.ufunc(ufunc)}({', '.join(args)})"

    def _apply(self, ufunc: str, a: Operand, b: Small | Operand | None = None) -> Operand:
        """``ufunc(a[, b])``, in a's buffer when it is free to overwrite."""
        args = [a.code] if b is None else [a.code, b.code]
        reads = [a.index, *([] if b is None else _reads_of(b))]
        if a.owned:
            self._emit(self._call(ufunc, *args, f"out={a.code}"), [], reads)
            return a
        name = self._fresh()
        self._emit(f"{slot(name)} = {self._call(ufunc, *args)}", [name], reads)
        return Operand(name, True)

    def _combine(self, ufunc: str, a: Operand, b: Operand) -> Operand:
        if not a.owned and b.owned and ufunc in COMMUTATIVE:
            a, b = b, a
        return self._apply(ufunc, a, b)

    def _grouped(self, terms: list[sp.Expr], op) -> list[Small]:
        """Small terms folded into at most two vector expressions (scalars join the column
        or row group), so each touches the matrix once."""
        groups: dict[str, list[sp.Expr]] = {SCALAR: [], COLUMN: [], ROW: []}
        for term in terms:
            groups[self.kind(term)].append(term)
        target = COLUMN if groups[COLUMN] else ROW
        groups[target] += groups.pop(SCALAR)
        return [self._small(op(*g)) for g in groups.values() if g]

    def _new(self, ufunc: str, a: Small | Operand, b: Small | Operand) -> Operand:
        """``ufunc(a, b)`` into a new buffer."""
        name = self._fresh()
        self._emit(f"{slot(name)} = {self._call(ufunc, a.code, b.code)}", [name],
                   [*_reads_of(a), *_reads_of(b)])
        return Operand(name, True)

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
            op, first = self.emit(negative.pop(0)), small.pop(0)
            if op.owned:
                self._emit(self._call("numpy.subtract", first.code, op.code, f"out={op.code}"),
                           [], [*first.reads, op.index])
                acc = op
            else:
                acc = self._new("numpy.subtract", first, op)
        elif acc is None and len(small) == 2:     # column + row
            acc = self._new("numpy.add", small.pop(0), small.pop(0))
        elif acc is None:                         # only negative matrix terms
            acc = self._apply("numpy.negative", self.emit(negative.pop(0)))
        for code in small:
            acc = self._apply("numpy.add", acc, code)
        for term in negative:
            acc = self._apply("numpy.subtract", acc, self.emit(term))
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
            return self._new("numpy.multiply", small[0], small[1])
        if acc is None:  # only divisors: numerator is small
            numerator = small.pop(0) if small else Small("1.0", ())
            acc, divisors = self._new("numpy.divide", numerator, self.emit(divisors[0])), divisors[1:]
        for divisor in divisors:
            acc = self._apply("numpy.divide", acc, self.emit(divisor))
        for code in small:
            acc = self._apply("numpy.multiply", acc, code)
        return acc

    def _pow(self, expr: sp.Pow) -> Operand:
        base, exponent = expr.args
        if self.kind(base) != MATRIX or self.kind(exponent) != SCALAR or not exponent.is_Number:
            return self._opaque(expr)
        if exponent == 2:
            op = self.emit(base)
            return self._apply("numpy.multiply", op, op)
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
        scaled = self.emit(k)
        for q in (q1, q2):
            scaled = self._apply("numpy.multiply", scaled, self._inverse_sqrt(q))
        self._emit(self._call("numpy.clip", scaled.code, "-1.0", "1.0", f"out={scaled.code}"),
                   [], [scaled.index])
        return scaled

    def _inverse_sqrt(self, q: sp.Expr, negated: bool = False) -> Operand:
        """1 / sqrt(q) (−1 / sqrt(q) if ``negated``) of a variance vector, a value of its
        own (_inv_sqrt: 0 correlations where a variance is 0)."""
        small = self._small(q)
        sign = "-" if negated else ""
        return self._named(Small(f"{sign}{self.printer.helper('_inv_sqrt')}({small.code})",
                                 small.reads), self.kind(q))

    def _opaque(self, expr: sp.Expr) -> Operand:
        """Any other call (numerical duals, Piecewise, ...): its matrix arguments are emitted
        first, then it is printed as a call. Its result may alias an input, so it is a free
        buffer only when the printer says it returns a new array (``fresh_result``)."""
        operands = {i: self.emit(a) for i, a in enumerate(expr.args) if self.kind(a) == MATRIX}
        args = [self._operand_symbol(operands[i]) if i in operands else self._vector_symbol(a)
                for i, a in enumerate(expr.args)]
        call = expr.func(*args, evaluate=False)
        name = self._fresh()
        self._emit(f"{slot(name)} = {self.printer.doprint(call)}", [name],
                   [*(o.index for o in operands.values()), *self._reads(call)])
        return Operand(name, self.printer.fresh_result(expr.func))

    def _operand_symbol(self, operand: Operand) -> sp.Symbol:
        """A symbol standing for an operand's slot inside a printed call."""
        symbol = sp.Dummy(f"m{operand.index}")
        self.slots[symbol] = operand.index
        self.printer.names[symbol] = operand.code
        return symbol

    def _vector_symbol(self, arg: sp.Expr) -> sp.Expr:
        """A call's column or row argument as a symbol standing for its own slot (a name,
        a scalar or a non-expression argument stays as it is)."""
        if not isinstance(arg, sp.Expr) or arg.is_Symbol or self.kind(arg) not in (COLUMN, ROW):
            return arg
        small = self._small(arg)
        symbol = sp.Dummy(f"v{small.reads[0]}")
        self.slots[symbol] = small.reads[0]
        self.printer.names[symbol] = small.code
        return symbol


@dataclass(frozen=True)
class Small:
    """Printed code of a scalar, column or row value and the slots it reads."""

    code: str
    reads: tuple[int, ...]


def _reads_of(value: Small | Operand) -> tuple[int, ...]:
    return value.reads if isinstance(value, Small) else (value.index,)


def _renamed(statement: Statement, old: int, new: int, top: int) -> Statement:
    """The statement with slot ``old`` replaced by ``new`` (in its text too)."""
    names = [slot(new if i == old else i) for i in range(top)]

    def swap(indices: tuple) -> tuple:
        return tuple(new if i == old else i for i in indices)

    return Statement(statement.text.format(*names), swap(statement.targets),
                     swap(statement.reads), statement.alias, swap(statement.deletes),
                     statement.matrix)
