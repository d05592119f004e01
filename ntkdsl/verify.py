"""Check the infinite-width theory on finite networks of growing width.

The theory behind ntkdsl makes three claims, each measured here for one architecture at
several widths n (all expected to fall roughly like n^(-1/2)):

1. At initialisation the network is a Gaussian process with the NNGP kernel — the relative
   error of the Monte-Carlo NNGP and of the empirical NTK against the analytic kernels.
2. Training barely moves it — the relative change of the weights and of the empirical NTK
   over full-batch gradient descent.
3. So it trains like its linearisation — the gap between the trained network's test
   predictions and the closed-form gradient-flow prediction with the analytic NTK at the
   same time t, started from the network's own initial outputs f₀:
   ``f₀(x*) + Θ*ᵀ Θ⁻¹ (I − exp(−η Θ t/(N k))) (Y − f₀(X))`` (:mod:`ntkdsl.predict`).

Gradient descent is discrete while the prediction is a flow; the difference of the two for
the *linearised* network (the "discretisation floor") is reported, since the gap cannot be
expected to fall below it. Relative errors are Frobenius norms: ‖estimate − exact‖/‖exact‖.

A convolutional architecture gets images (channels last, ``input_shape``; by default 8×8
single-channel images for 2-D filters, 8 positions for 1-D ones), and its width is the number
of channels of every hidden Conv.
"""
from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .ast import input_axes
from .errors import ArchitectureError, InputError, Span
from .evaluation import check_input_rank, example_shape
from .finite import FiniteNetwork, _as_ast, monte_carlo_nngp, with_width
from .network import compile as compile_network
from .predict import gradient_descent_mse_ensemble
from .progress import stages

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["METRICS", "Verification", "WidthResult", "make_data", "verify"]

DEFAULT_WIDTHS = (64, 256, 1024, 4096)

# (attribute, column heading, description) of every measured quantity.
METRICS = (
    ("nngp_error", "MC NNGP err", "Monte-Carlo NNGP vs analytic NNGP"),
    ("ntk_error", "emp. NTK err", "empirical NTK at init vs analytic NTK"),
    ("weight_change", "Δ weights", "relative change of the weights in training"),
    ("ntk_change", "Δ NTK", "relative change of the empirical NTK in training"),
    ("prediction_gap", "pred. gap", "trained network vs gradient-flow prediction (test)"),
)


@dataclass
class WidthResult:
    """Every measured quantity at one width (all relative, dimensionless)."""

    width: int
    nngp_error: float
    ntk_error: float
    weight_change: float
    ntk_change: float
    prediction_gap: float
    learning_rate: float


@dataclass
class Verification:
    """The measurements of :func:`verify`, with the fitted log–log slopes."""

    arch: str
    rows: list[WidthResult]
    steps: int
    samples: int
    n_train: int
    n_test: int
    discretisation_floor: float
    slopes: dict[str, float | None] = field(default_factory=dict)
    input_shape: tuple[int, ...] | None = None  # one example's shape (images only)

    def __post_init__(self):
        widths = np.log([row.width for row in self.rows])
        for name, _, _ in METRICS:
            values = np.array([getattr(row, name) for row in self.rows])
            # A quantity that is exactly 0 at some width (e.g. the NTK change of a Sign
            # network, whose first layer never moves) has no log-log slope: None, not NaN.
            self.slopes[name] = (float(np.polyfit(widths, np.log(values), 1)[0])
                                 if len(self.rows) > 1 and np.all(values > 0) else None)

    def table(self) -> str:
        """The measurements as a text table, slopes in the last row ("n/a": no slope)."""
        head = f"{'width':>7}" + "".join(f"  {title:>12}" for _, title, _ in METRICS)
        lines = [head]
        for row in self.rows:
            lines.append(f"{row.width:>7}" + "".join(f"  {getattr(row, name):>12.3e}"
                                                     for name, _, _ in METRICS))
        lines.append(f"{'slope':>7}" + "".join(f"  {_slope_text(self.slopes[name]):>12}"
                                               for name, _, _ in METRICS))
        return "\n".join(lines)

    def report(self) -> str:
        rates = sorted({round(row.learning_rate, 12) for row in self.rows})
        rate = f"{rates[0]:.4g}" if len(rates) == 1 else "per width, " + ", ".join(
            f"{r:.3g}" for r in rates)
        images = "" if self.input_shape is None else f" of shape {self.input_shape}"
        return "\n".join([
            f"architecture  {self.arch}",
            (f"data          {self.n_train} train / {self.n_test} test inputs{images}; MC NNGP over "
            f"{self.samples} initialisations; {self.steps} gradient-descent steps at "
            f"learning rate {rate}"),
            "",
            self.table(),
            "",
            "slope: fitted d log(error) / d log(width); about -0.5 is the expected rate.",
            *self._no_slope_notes(),
            (f"discretisation floor (gradient descent vs flow, linearised): "
            f"{self.discretisation_floor:.2e} — the prediction gap cannot fall below it."),
        ])

    def _no_slope_notes(self) -> list[str]:
        missing = [title for name, title, _ in METRICS if self.slopes[name] is None]
        if not missing:
            return []
        return [f"n/a: {', '.join(missing)} is exactly 0 at some width, so it has no slope "
                "(nothing of the network's kernel changes there)."]

    def figure(self) -> Figure:
        """The curves on log–log axes with a width^(-1/2) guide (a matplotlib Figure):
        every width a labelled tick, a grid, fonts readable at a glance."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FixedLocator, NullLocator

        widths = np.array([row.width for row in self.rows], dtype=float)
        with plt.rc_context(PLOT_STYLE):
            figure, axis = plt.subplots(figsize=(12, 7.5), layout="constrained")
            for name, _, description in METRICS:
                values = np.array([getattr(row, name) for row in self.rows])
                slope = self.slopes[name]
                label = (f"{description} (slope {slope:.2f})" if slope is not None
                         else f"{description} (0 at some width: no slope)")
                axis.loglog(widths, values, "o-", linewidth=2, markersize=6, label=label)
            top = max(getattr(self.rows[0], name) for name, _, _ in METRICS)
            axis.loglog(widths, top * np.sqrt(widths[0] / widths), "k:", linewidth=2,
                        label="width$^{-1/2}$")
            axis.axhline(self.discretisation_floor, color="grey", linewidth=1.2,
                         linestyle="--", label="discretisation floor")
            # Every measured width is a tick with its number; log axes otherwise label
            # only the powers of ten.
            axis.xaxis.set_major_locator(FixedLocator(widths))
            axis.xaxis.set_minor_locator(NullLocator())
            axis.set_xticklabels([f"{w:g}" for w in widths])
            axis.grid(True, which="major", alpha=0.5)
            axis.grid(True, which="minor", axis="y", alpha=0.2)
            axis.set_xlabel("hidden width")
            axis.set_ylabel("relative error / change")
            # Below the axes, not over the curves (constrained layout makes room for it).
            axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=2)
            axis.set_title(textwrap.fill(self.arch, 100))
        return figure

    def plot(self, path: str | os.PathLike) -> None:
        """Save :meth:`figure` as an image (the format from the file name, e.g. .png)."""
        save_figure(self.figure(), path)


# Font sizes for figures read at a glance (matplotlib's default 10 pt is small at 120 dpi).
PLOT_STYLE = {"font.size": 13, "axes.titlesize": 13, "axes.labelsize": 14,
              "xtick.labelsize": 12, "ytick.labelsize": 12, "legend.fontsize": 11,
              "figure.titlesize": 15}


def save_figure(figure, path) -> None:
    """Write a matplotlib figure to ``path`` and close it; a file that cannot be written is
    an InputError."""
    import matplotlib.pyplot as plt

    try:
        figure.savefig(Path(path), dpi=120)
    except OSError as err:
        raise InputError(f"cannot write {path}: {err.strerror}") from None
    except ValueError as err:  # an unknown image format, from the file's extension
        raise InputError(f"cannot write {path}: {err}", hint="use a .png, .pdf or .svg "
                         "file name") from None
    finally:
        plt.close(figure)


def _slope_text(slope: float | None) -> str:
    return "n/a" if slope is None else f"{slope:.2f}"


def make_data(n_train: int, n_test: int, input_shape: int | tuple[int, ...], outputs: int,
              seed: int):
    """Inputs on the sphere of radius √d (so x·x/d = 1; d = all entries of an example, so an
    image's channels have mean square 1 over its positions) and smooth targets
    sin(2 x·u/√d). ``input_shape`` is d, or one example's shape (images, channels last)."""
    shape = (input_shape,) if isinstance(input_shape, (int, np.integer)) else tuple(input_shape)
    d = int(np.prod(shape))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_train + n_test, d))
    x *= np.sqrt(d) / np.linalg.norm(x, axis=1, keepdims=True)
    directions = rng.standard_normal((d, outputs))
    y = np.sin(2 * x @ directions / np.sqrt(d))
    x = x.reshape(-1, *shape)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _relative(estimate: np.ndarray, exact: np.ndarray) -> float:
    return float(np.linalg.norm(estimate - exact) / np.linalg.norm(exact))


def _check_widths(widths) -> list[int]:
    try:
        values = [int(w) for w in widths]
    except (TypeError, ValueError):
        raise InputError(f"widths must be whole numbers, got {widths!r}") from None
    if not values or any(w < 1 for w in values) or any(w != v for w, v in zip(values, widths)):
        raise InputError(f"widths must be whole numbers >= 1, got {list(widths)!r}")
    distinct = sorted(set(values))
    if len(distinct) < 2:
        raise InputError(f"widths must hold at least two different widths to fit a slope "
                         f"against, got {list(widths)!r}", hint="e.g. 64,256,1024,4096")
    return distinct


def _check_hidden_dense(ast, source: str) -> None:
    """Refuse an architecture whose widths cannot vary: without a hidden Dense or Conv (one
    that another Dense or Conv follows) every width gives the same network."""
    # with_width leaves the tree unchanged for every width exactly when nothing is hidden.
    if with_width(ast, 1) == with_width(ast, 2):
        text = source or str(ast)
        raise ArchitectureError(
            "this architecture has no hidden Dense or Conv layer (one that another Dense or "
            "Conv follows), so the widths would change nothing", source=text,
            span=Span.at(text, 0, len(text)),
            hint="end it in a readout, e.g. Dense(512) > Relu > Dense(1)")


def _check_count(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _flow_prediction(ntk, n_train, f0, y_train, learning_rate, steps):
    """f₀ on the test inputs plus the flow of the residual Y − f₀(X), at t = steps."""
    ensemble = gradient_descent_mse_ensemble(ntk[:n_train, :n_train], y_train - f0[:n_train],
                                             learning_rate=learning_rate)
    flow = ensemble.predict(ntk[n_train:, :n_train], t=float(steps)).mean
    return f0[n_train:] + flow


def discretisation_floor(ntk: np.ndarray, n_train: int, residual: np.ndarray, learning_rate: float,
                         steps: int) -> float:
    """‖discrete − continuous‖ / ‖continuous‖ for the linearised network's test change."""
    evals, evecs = np.linalg.eigh(ntk[:n_train, :n_train])
    rates = learning_rate * np.maximum(evals, 0) / residual.size
    coefficients = evecs.T @ residual
    # 1 − (1 − r)^s: through log1p for small r (precision), a plain power near r = 1, where
    # rounding can put r a hair above 1 and log1p(−r) would be NaN.
    slow = -np.expm1(steps * np.log1p(-np.minimum(rates, 0.5)))
    learnt = np.where(rates < 0.5, slow, 1.0 - np.power(1.0 - rates, steps))
    with np.errstate(divide="ignore", invalid="ignore"):
        discrete = np.where(evals > 0, learnt / evals, 0.0)
        flow = np.where(evals > 0, -np.expm1(-steps * rates) / evals, 0.0)
    cross = ntk[n_train:, :n_train] @ evecs
    return _relative(cross @ (discrete[:, None] * coefficients),
                     cross @ (flow[:, None] * coefficients))


def _measure_width(ast, width, data, samples, steps, rate, seed, bar) -> tuple[WidthResult, float]:
    x_train, y_train, x_test, _ = data
    x = np.concatenate([x_train, x_test])
    n = len(x_train)
    analytic = compile_network(str(with_width(ast, width)))
    nngp, ntk = analytic.kernels(x)
    bar(f"width {width}: Monte-Carlo NNGP")
    mc = monte_carlo_nngp(ast, x, width=width, samples=samples, seed=seed)
    net = FiniteNetwork(ast, x.shape[1:], width)
    params = net.init(seed)
    bar(f"width {width}: empirical NTK")
    ntk0 = net.ntk(params, x)[0]
    # Step size: a fixed fraction of the stability limit of the analytic NTK's top mode.
    learning_rate = rate * y_train.size / np.linalg.eigvalsh(ntk[:n, :n])[-1]
    bar(f"width {width}: {steps} gradient-descent steps")
    trained = net.train(params, x_train, y_train, learning_rate, steps,
                        callback=lambda step: bar.note(f"step {step + 1}/{steps}"))
    f0, f_t = net.apply(params, x)[0], net.apply(trained, x_test)[0]
    flow = _flow_prediction(ntk, n, f0, y_train, learning_rate, steps)
    change = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(trained, params))
                     / sum(np.sum(a ** 2) for a in params))
    result = WidthResult(width, _relative(mc, nngp), _relative(ntk0, ntk), float(change),
                         _relative(net.ntk(trained, x)[0], ntk0), _relative(f_t, flow),
                         float(learning_rate))
    floor = discretisation_floor(ntk, n, y_train - f0[:n], learning_rate, steps)
    return result, floor


def verify(arch: str, widths: Sequence[int] = DEFAULT_WIDTHS, *, samples: int = 16, steps: int = 100,
           rate: float = 1.0, n_train: int = 16, n_test: int = 8, input_dim: int = 8,
           input_shape: Sequence[int] | None = None, seed: int = 0,
           progress: bool = False) -> Verification:
    """Measure, for each width, how close finite networks are to the infinite-width theory.

    Args:
        arch: architecture string; every hidden Dense and Conv gets each width (a Conv's
            width is its channels) in turn (output layers keep theirs, see
            :func:`ntkdsl.finite.with_width`).
        widths: the widths to try, at least two different ones (the slopes are fitted
            over them).
        samples: initialisations averaged by the Monte-Carlo NNGP (>= 2).
        steps: full-batch gradient-descent steps; t = learning_rate × steps.
        rate: learning rate as a fraction of N·k / λ_max(analytic training NTK), the
            stability scale of gradient descent (smaller: closer to the flow, slower).
        n_train, n_test, input_dim: the synthetic regression problem (see :func:`make_data`).
        input_shape: one example's shape, channels last, e.g. (8, 8, 1): the images a
            convolutional architecture gets (it replaces ``input_dim``). None: (input_dim,)
            for a fully-connected architecture, 8 positions per spatial axis of its filters
            and windows (4 from three axes on) and one channel for a convolutional one.
        seed: seeds the data, the initialisations and the Monte-Carlo estimate.
        progress: show a progress bar (tqdm) on stderr.

    Returns:
        A :class:`Verification`; ``print(result.report())``, ``result.plot("file.png")``.
    """
    ast, source = _as_ast(arch)
    widths = _check_widths(widths)
    samples = _check_count(samples, "samples", 2)
    steps = _check_count(steps, "steps", 1)
    seed = _check_count(seed, "seed", 0)
    n_train, n_test = _check_count(n_train, "n_train", 2), _check_count(n_test, "n_test", 1)
    shape = _input_shape(ast, source, _check_count(input_dim, "input_dim", 1), input_shape)
    if not 0 < rate < 2:
        raise InputError(f"rate must be in (0, 2) (gradient descent diverges beyond 2), "
                         f"got {rate!r}")
    outputs = FiniteNetwork(ast, shape, widths[0]).output_dim
    compile_network(source or str(ast))  # no analytic kernel: say so before anything else
    _check_hidden_dense(ast, source)
    data = make_data(n_train, n_test, shape, outputs, seed)
    rows, floors = [], []
    with stages(progress, 3 * len(widths)) as bar:
        for width in widths:
            row, floor = _measure_width(ast, width, data, samples, steps, rate, seed, bar)
            rows.append(row)
            floors.append(floor)
    return Verification(source or str(ast), rows, steps, samples, n_train, n_test,
                        float(max(floors)), input_shape=shape if len(shape) > 1 else None)


def _input_shape(ast, source: str, input_dim: int, input_shape) -> tuple[int, ...]:
    """One example's shape: as given (checked against the architecture), else the default
    for the architecture — (input_dim,) fully connected, small single-channel images else."""
    if input_shape is not None:
        shape = example_shape(input_shape)
        check_input_rank(ast, ("n", *shape), f"a batch of input_shape {shape}", source)
        return shape
    rank = input_axes(ast, source)[0]
    if rank == 0:
        return (input_dim,)
    rank = 2 if rank is None else rank  # only Flatten or global pools: any rank, say images
    return (8 if rank <= 2 else 4,) * rank + (1,)


