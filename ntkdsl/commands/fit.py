"""ntkdsl fit ARCH: what an infinitely wide network learns, without training it.

Runs kernel regression with the architecture's NTK (or NNGP) on a dataset — one bundled with
scikit-learn by default, or the user's CSV file — and reports train and test metrics of the
trained ensemble at t = inf and at a few finite training times, optionally plotting the test
and train loss and accuracy (R² for regression) against training time. A convolutional
architecture gets the rows as images: digits as its 8x8 single-channel images, any other
data in the shape given with --shape.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import sys
import textwrap
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..evaluation import kernel_name
from ..progress import stages
from ..sklearn import MAX_RESTARTS
from ..templates import ArchTemplate, arch_placeholders
from .options import (
    add_arch,
    add_command,
    assignments,
    check_output_directory,
    comma_list,
    image_path,
    real,
    seed,
    whole,
)

DATASETS = {  # name: (scikit-learn loader, task)
    "breast_cancer": ("load_breast_cancer", "classification"),
    "wine": ("load_wine", "classification"),
    "iris": ("load_iris", "classification"),
    "digits": ("load_digits", "classification"),
    "diabetes": ("load_diabetes", "regression"),
}
# The shape of one example, channels last, of the bundled datasets that are images: the
# rows a convolutional architecture gets reshaped to (digits' rows are its 8x8 images, row-major).
IMAGE_SHAPES = {"digits": (8, 8, 1)}
DEFAULT_DATASET = "breast_cancer"
DEFAULT_TIMES = "1,10,100,1000,10000"
_MAX_FORMULA_LINES = 40
# Integer targets with at most this many distinct values count as class labels (--task auto).
_MAX_AUTO_CLASSES = 20


@dataclass
class Dataset:
    name: str
    X: np.ndarray
    y: np.ndarray
    task: str
    feature_names: list[str]
    image_shape: tuple[int, ...] | None = None  # one example's shape if the rows are images


EXAMPLES = """
  ntkdsl fit "(Dense(512, W_std=1.5, b_std=0.05) > Relu) * 2 > Dense(1, W_std=1.5, b_std=0.05)"
  ntkdsl fit "Dense(512) > Erf > Dense(1)" --dataset diabetes --times 1,100 --plot curves.png
  ntkdsl fit "Dense(512) > Relu > Dense(1)" --data mydata.csv --target label --kernel nngp
  ntkdsl fit "Conv(64, (3, 3), padding='SAME') > Relu > Flatten > Dense(1)" --dataset digits
  ntkdsl fit "(Dense(512, W_std={w}, b_std={b}) > Relu) * 3 > Dense(1, W_std={w})" \
      --dataset diabetes --kernel nngp --set w=1,b=0.5 --diag-reg 0.1 \
      --optimize w=0.1:10,b=0.001:10,diag_reg=1e-4:10
  ntkdsl fit "Dense(512) > Relu > Dense(1)" --data big.csv --target y --solver nystrom --n-components 2000
"""
# Records of a CSV file parsed and converted to arrays at a time: the Python lists of one
# chunk are what parsing holds beyond the arrays (a million rows of 21 fields would be GBs).
CSV_CHUNK_ROWS = 65_536


def register(subparsers) -> None:
    """Add the ``fit`` subcommand to the ``ntkdsl`` parser."""
    parser = add_command(
        subparsers, "fit", help="predict a trained infinitely wide network on a dataset, "
        "without training", description=__doc__, examples=EXAMPLES)
    add_arch(parser, "(Dense(512, W_std=1.5, b_std=0.05) > Relu) * 2 > Dense(1, W_std=1.5, "
                     "b_std=0.05)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dataset", choices=sorted(DATASETS), default=None,
                        help=f"a dataset shipped with scikit-learn (default: {DEFAULT_DATASET})")
    source.add_argument("--data", metavar="FILE.csv", type=Path,
                        help="your own data: a CSV file with a header row, numeric features "
                             "(needs --target; default: the bundled --dataset)")
    parser.add_argument("--target", metavar="COLUMN",
                        help="for --data: the CSV column to predict (no default)")
    parser.add_argument("--task", choices=["auto", "classification", "regression"],
                        default="auto", help="for --data: what the target is (default auto: "
                        "classification for non-numeric or few integer values)")
    parser.add_argument("--kernel", type=_kernel_argument, default="ntk", metavar="{ntk,nngp}",
                        help="ntk: every layer trained; nngp: readout only / Bayesian "
                             "(any case, as everywhere in ntkdsl)")
    parser.add_argument("--times", default=DEFAULT_TIMES, type=parse_times, metavar="T1,T2,...",
                        help=f"finite training times (steps), comma-separated numbers >= 0 "
                             f"(default: {DEFAULT_TIMES}); t = inf is always reported")
    parser.add_argument("--learning-rate", type=real(0), default=1.0, metavar="RATE",
                        help="gradient-descent learning rate; time t counts steps at this rate")
    parser.add_argument("--diag-reg", type=real(0, low_included=True), default=0.0,
                        metavar="RIDGE",
                        help="ridge on the kernel diagonal, relative to its mean")
    parser.add_argument("--test-size", type=real(0, 1), default=0.25, metavar="FRACTION",
                        help="fraction of samples held out for testing, between 0 and 1")
    parser.add_argument("--shape", type=comma_list(whole(1), "8,8,1"), default=None,
                        metavar="H,W,C",
                        help="for a convolutional architecture: the shape of one example, "
                             "channels last, that each row is reshaped to (default: the "
                             "dataset's image shape, digits: 8,8,1)")
    parser.add_argument("--solver", choices=["auto", "exact", "nystrom", "cg"], default="auto",
                        help="exact: factorise the N x N kernel; nystrom: m landmark features, "
                             "O(N m²) time and O(m²) memory; cg: conjugate gradients and "
                             "Krylov steps on the stored kernel; auto: exact up to N = 10,000 "
                             "when it fits in memory, else nystrom")
    parser.add_argument("--n-components", type=whole(1), default=None, metavar="M",
                        help="Nyström landmarks, at most the training samples (default: "
                             "min(N, 2000))")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the train/test split")
    parser.add_argument("--set", type=assignments(_placeholder_value, "w=1.5,L=2"),
                        default=None, metavar="NAME=VALUE,...",
                        help="values of the architecture's {name} placeholders (for "
                             "--optimize, the start values; default: none)")
    parser.add_argument("--optimize", type=assignments(_bound, "w=0.1:10,diag_reg=1e-4:1"),
                        default=None, metavar="NAME=LOW:HIGH,...",
                        help="fit these placeholders (and diag_reg, starting at --diag-reg) "
                             "by maximising the log marginal likelihood, within the bounds "
                             "(log space; a placeholder not --set starts at the geometric "
                             "mean of its bounds; default: no fit)")
    parser.add_argument("--restarts", type=whole(0, MAX_RESTARTS), default=0,
                        help="for --optimize: further optimiser runs from random starts "
                             "(drawn with --seed)")
    parser.add_argument("--plot", metavar="FILE.png", type=image_path,
                        help="save test and train loss and accuracy (R²) against training "
                             "time (default: no plot)")
    parser.set_defaults(func=run, check=partial(check_usage, parser))


def check_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage rules between options (a usage error through ``parser.error``)."""
    if args.data is not None and args.target is None:
        parser.error("--data needs --target COLUMN: the name of the column to predict")
    if args.data is None and (args.target is not None or args.task != "auto"):
        parser.error("--target and --task are for --data FILE.csv")
    if args.n_components is not None and args.solver in ("exact", "cg"):
        parser.error(f"--n-components is for --solver nystrom (or auto), not {args.solver}")


def _placeholder_value(text: str) -> int | float:
    """--set: a whole number (a width, a depth) or a real number."""
    try:
        return int(text)
    except ValueError:
        return real(-math.inf)(text)


def _bound(text: str) -> tuple[float, float]:
    """--optimize: LOW:HIGH with 0 < LOW <= HIGH (the search is in log space)."""
    low, colon, high = text.partition(":")
    positive = real(0, reason=" (the search is in log space)")
    if not colon:
        raise argparse.ArgumentTypeError(f"{text!r} is not LOW:HIGH")
    bound = positive(low), positive(high)
    if bound[0] > bound[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: LOW is above HIGH")
    return bound


def _template(args) -> str | ArchTemplate:
    """The architecture of the run: the string, or the template with --set's values (an
    optimised placeholder not set starts at the geometric mean of its bounds)."""
    names, given = arch_placeholders(args.arch), args.set or {}
    if not names:
        if given:
            raise InputError(f"--set {', '.join(given)}: the architecture has no "
                             "{name} placeholders", hint="drop --set, or write placeholders")
        return args.arch
    bounds = dict(args.optimize or {})
    starts = {name: math.sqrt(low * high) for name, (low, high) in bounds.items()
              if name in names and name not in given}
    unknown = [name for name in given if name not in names]
    if unknown:
        raise InputError(f"--set {', '.join(unknown)}: not placeholders of the architecture",
                         hint=f"its placeholders are {', '.join(names)}")
    missing = [name for name in names if name not in {**given, **starts}]
    if missing:
        listed = ", ".join("{" + m + "}" for m in missing)
        raise InputError(f"the architecture's placeholders {listed} need values",
                         hint=f"give it with --set {missing[0]}=VALUE, or fit it with "
                              f"--optimize {missing[0]}=LOW:HIGH")
    return ArchTemplate(args.arch, **given, **starts)


def _kernel_argument(text: str) -> str:
    """--kernel: ntkdsl's one rule for kernel names, as an argparse type (a usage error)."""
    try:
        return kernel_name(text)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# ----------------------------------------------------------------------------- data

def load_bundled(name: str) -> Dataset:
    """A dataset shipped inside scikit-learn (no download)."""
    import sklearn.datasets

    loader, task = DATASETS[name]
    bunch = getattr(sklearn.datasets, loader)()
    return Dataset(name, bunch.data.astype(np.float64), bunch.target, task,
                   list(map(str, bunch.feature_names)), IMAGE_SHAPES.get(name))


def load_csv(path: Path, target: str | None, task: str = "auto") -> Dataset:
    """Features and target from a UTF-8 CSV file with a header; every feature must be numeric.

    Every problem with the file (not text, not UTF-8, ragged rows, no data, text or NaN
    among the features, no such target column) is an InputError naming the file and, where
    there is one, the line and column."""
    if target is None:
        raise InputError("--data needs --target COLUMN: the name of the column to predict")
    records = _csv_records(path, _csv_text(path))
    first = next(records, None)
    if first is None:
        raise InputError(f"{path} is empty: it needs a header row and at least 2 data rows")
    header = [name.strip() for name in first[1]]
    _check_header(path, header, target)
    index = header.index(target)
    features = [name for name in header if name != target]
    if not features:
        raise InputError(f"{path}: no feature columns besides the target {target!r}")
    columns = [header.index(f) for f in features]
    blocks, labels, lines = [], [], []
    for body in _chunks((record for record in records
                         if any(cell.strip() for cell in record[1])), CSV_CHUNK_ROWS):
        for line, row in body:
            if len(row) != len(header):
                raise InputError(f"{path}, line {line}: {len(row)} fields, but the header has "
                                 f"{len(header)}")
        blocks.append(_numeric_columns(path, body, header, columns))
        labels.append(np.array([row[index].strip() for _, row in body]))
        lines.append(np.array([line for line, _ in body]))
    if sum(map(len, lines)) < 2:
        raise InputError(f"{path}: {sum(map(len, lines))} data rows below the header; need a "
                         "header row and at least 2 data rows")
    y, task = _target_and_task(path, target, np.concatenate(lines), np.concatenate(labels),
                               task)
    return Dataset(path.name, np.concatenate(blocks), y, task, features)


def _chunks(items, size: int):
    """Lists of up to ``size`` consecutive items."""
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _csv_text(path: Path) -> str:
    """The file's text: UTF-8 (a byte-order mark is dropped, as spreadsheets write one);
    a binary file or another encoding is an InputError at the first byte that does not fit."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(f"{path} is UTF-16 text (it starts with a UTF-16 byte-order mark); "
                         "save it as UTF-8 CSV")
    nul = data.find(b"\0")
    if nul >= 0:
        raise InputError(f"{path}, {_byte_place(data, nul)}: a NUL byte; this is a binary file, "
                         "not CSV text", hint="give a text file of comma-separated values")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}, {_byte_place(data, err.start)}: byte "
                         f"0x{data[err.start]:02x} is not UTF-8 text",
                         hint="save the file as UTF-8 CSV (in a spreadsheet: 'CSV UTF-8')") \
            from None


def _byte_place(data: bytes, offset: int) -> str:
    """'line L, column C' (1-based; the column counts bytes) of ``data[offset]``."""
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def _csv_records(path: Path, text: str):
    """(first line of the record, the record) one by one: lines as a text editor numbers
    them, so that a quoted field over several lines does not shift the numbers after it."""
    reader = csv.reader(io.StringIO(text, newline=""))
    end = 0
    try:
        for row in reader:
            yield end + 1, row
            end = reader.line_num
    except csv.Error as err:
        raise InputError(f"{path}, line {reader.line_num}: not valid CSV: {err}") from None


def _check_header(path: Path, header: list[str], target: str) -> None:
    if target not in header:
        raise InputError(f"{path}: no column named {target!r}; the columns are "
                         f"{', '.join(header)}")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise InputError(f"{path}, line 1: the column names {', '.join(map(repr, repeated))} "
                         "appear more than once; every column needs its own name")


def _numeric_columns(path, body, header, columns) -> np.ndarray:
    try:  # numpy parses the whole chunk at once; the loop below names a bad cell
        X = np.array([[row[c] for c in columns] for _, row in body]).astype(np.float64)
    except ValueError:
        X = _numeric_cells(path, body, header, columns)
    if not np.all(np.isfinite(X)):
        i, j = np.argwhere(~np.isfinite(X))[0]
        raise InputError(f"{path}, line {body[i][0]}, column {header[columns[j]]!r}: "
                         f"{body[i][1][columns[j]].strip()!r} is not finite; every feature "
                         "value must be a finite number (drop or impute it)")
    return X


def _numeric_cells(path, body, header, columns) -> np.ndarray:
    X = np.empty((len(body), len(columns)))
    for j, column in enumerate(columns):
        for i, (line, row) in enumerate(body):
            try:
                X[i, j] = float(row[column])
            except ValueError:
                raise InputError(
                    f"{path}, line {line}, column {header[column]!r}: {row[column]!r} is not a "
                    "number; every feature column must be numeric (encode categories as "
                    "numbers, drop text columns, fill missing values)") from None
    return X


def _target_and_task(path, target, lines, labels, task) -> tuple[np.ndarray, str]:
    """The target column (``labels``, stripped text, with the ``lines`` of their records)
    as numbers or class labels, and the task."""
    empty = np.flatnonzero(labels == "")
    if empty.size:
        raise InputError(f"{path}, line {lines[empty[0]]}, column {target!r}: empty cells in "
                         f"the target column ({empty.size} of {labels.size} rows); every row "
                         "needs a target")
    try:
        values = labels.astype(np.float64)
    except ValueError:
        if task == "regression":
            raise InputError(f"{path}: column {target!r} is not numeric, so it cannot be a "
                             "regression target; use --task classification") from None
        return labels, "classification"
    if task == "auto":
        few_integers = (np.all(values == np.round(values))
                        and len(np.unique(values)) <= _MAX_AUTO_CLASSES)
        task = "classification" if few_integers else "regression"
    if task == "classification":
        return labels, task
    if not np.all(np.isfinite(values)):
        first = np.flatnonzero(~np.isfinite(values))[0]
        raise InputError(f"{path}, line {lines[first]}, column {target!r}: "
                         f"{str(labels[first])!r} is not finite; every target must be a finite "
                         "number")
    return values, task


# ----------------------------------------------------------------------------- evaluation

def _time(text: str) -> float:
    """One training time: a number >= 0; 'inf' is allowed (it is always reported)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"times must be >= 0, got {text!r}")
    return value


def parse_times(text: str) -> np.ndarray:
    """The --times option: comma-separated times >= 0, sorted, without 'inf' (t = inf is
    always added by the caller); a bad value is a usage error."""
    times = np.array(comma_list(_time, DEFAULT_TIMES)(text))
    return np.unique(times[np.isfinite(times)])


def _metrics(task: str, truth, outputs, classes=None) -> dict[str, float]:
    """Loss (½ mean squared error on the training targets' scale) and accuracy or R²."""
    if task == "classification":
        one_hot = (truth[:, None] == classes[None, :]).astype(float)
        loss = 0.5 * np.mean((outputs - one_hot) ** 2)
        accuracy = np.mean(classes[np.argmax(outputs, axis=1)] == truth)
        return {"loss": loss, "accuracy": accuracy}
    residual = outputs - truth
    return {"loss": 0.5 * np.mean(residual**2),
            "r2": 1.0 - np.sum(residual**2) / np.sum((truth - truth.mean()) ** 2)}


@dataclass
class Run:
    """Outputs of one fit, at every time (last row: t = ∞)."""

    times: np.ndarray
    train: np.ndarray
    test: np.ndarray
    estimator: object


def example_shape(arch: str, data: Dataset, shape: list[int] | None) -> tuple[int, ...] | None:
    """The shape each row becomes for the architecture: None (rows) for a fully-connected
    one; --shape, else the dataset's own image shape, for one with spatial layers. A shape
    whose values are not the rows' features, or whose spatial axes are not the filters',
    is refused here, in the terms the user gave it (--shape, or the dataset's images)."""
    from ..ast import _axes_text, input_axes  # the rank rule and its wording
    from ..parser import parse

    axes, fixed_by = input_axes(parse(arch), arch)
    if axes == 0:
        if shape is not None:
            raise InputError(f"--shape {','.join(map(str, shape))} is for convolutional "
                             "architectures; this one is fully connected and takes the rows "
                             "as they are", hint="drop --shape")
        return None
    features = data.X.shape[1]
    if shape is None and data.image_shape is None:
        raise InputError(
            f"this architecture has spatial layers, so it takes images, but {data.name} has no "
            f"known image shape", hint=f"give one with --shape H,W,C (channels last, "
                                       f"H*W*C = {features} features), or use "
                                       f"--dataset {', '.join(IMAGE_SHAPES)}")
    chosen = tuple(shape) if shape is not None else data.image_shape
    rank = len(chosen) - 1  # spatial axes, then the channels
    image = f"{'x'.join(map(str, chosen))} image"
    given = (f"--shape {','.join(map(str, shape))} makes each row a {image}" if shape is not None
             else f"the {data.name} rows are {image}s (the dataset's own shape)")
    if math.prod(chosen) != features:
        raise InputError(f"{given} of {math.prod(chosen)} values, but {data.name} has "
                         f"{features} features per row",
                         hint=f"give --shape {_shape_letters(rank)} (channels last) with "
                              f"{'*'.join(_shape_letters(rank).split(','))} = {features}, "
                              f"e.g. {_example_shape(data, rank)}")
    if axes is not None and rank != axes:
        layer, span = fixed_by
        raise InputError(f"{given}, with {_axes_text(rank)}, but the filters and windows "
                         f"of this architecture have {_axes_text(axes)} ({layer})",
                         source=arch, span=span,
                         hint=f"give --shape {_shape_letters(axes)} (channels last, product "
                              f"{features}), e.g. {_example_shape(data, axes)}, or filters "
                              f"with {_axes_text(rank)}")
    return chosen


def _shape_letters(axes: int) -> str:
    """L,C / H,W,C / S1,S2,S3,C: the sizes of an image with ``axes`` spatial axes."""
    names = {1: ["L"], 2: ["H", "W"]}.get(axes, [f"S{i + 1}" for i in range(axes)])
    return ",".join([*names, "C"])


def _example_shape(data: Dataset, axes: int) -> str:
    """A --shape with ``axes`` spatial axes for the dataset's rows: its own image shape where
    that has them, else all features along the first axis, one channel."""
    if data.image_shape is not None and len(data.image_shape) == axes + 1:
        return ",".join(map(str, data.image_shape))
    return ",".join(map(str, (data.X.shape[1],) + (1,) * axes))


def _fit_and_trace(args, data: Dataset, split, times: np.ndarray, step) -> Run:
    from ..estimators import NTKClassifier, NTKRegressor

    X_train, X_test, y_train, _ = split
    cls = NTKClassifier if data.task == "classification" else NTKRegressor
    arch = _template(args)
    start = arch.render() if isinstance(arch, ArchTemplate) else arch
    estimator = cls(arch, kernel=args.kernel, learning_rate=args.learning_rate,
                    diag_reg=args.diag_reg, verbose=sys.stderr.isatty(),
                    input_shape=example_shape(start, data, args.shape),
                    optimize=args.optimize, n_restarts_optimizer=args.restarts,
                    random_state=args.seed, solver=args.solver, n_components=args.n_components)
    step(f"{'marginal-likelihood fit and ' * (args.optimize is not None)}kernel on "
         f"{len(X_train)} training samples")
    estimator.fit(X_train, y_train)
    all_times = np.append(times, np.inf)
    step("eigendecomposition and training-set trajectory")
    if estimator.solver_ != "exact":  # the other solvers predict on the training rows
        train = estimator._outputs(X_train, all_times)
        step(f"predictions on {len(X_test)} test samples")
        return _run(all_times, train, estimator._outputs(X_test, all_times), estimator, data)
    train = estimator.ensemble_.predict_train(all_times).mean
    step(f"predictions on {len(X_test)} test samples")
    shape = estimator.input_shape_  # the rows as the kernels take them (images)
    X_test = X_test if shape is None else X_test.reshape(len(X_test), *shape)
    test = estimator.ensemble_.predict(
        getattr(estimator.network_, estimator.ensemble_.kernel)(X_test, estimator.X_fit_),
        all_times).mean
    return _run(all_times, train, test, estimator, data)


def _run(all_times, train, test, estimator, data: Dataset) -> Run:
    if data.task == "classification":  # back from centred to one-hot scale
        train, test = train + 1 / len(estimator.classes_), test + 1 / len(estimator.classes_)
    return Run(all_times, train, test, estimator)


def _standardise(split, task):
    """Features to zero mean, unit variance (training statistics); regression targets too."""
    from sklearn.preprocessing import StandardScaler

    X_train, X_test, y_train, y_test = split
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    if task == "regression":
        centre, scale = y_train.mean(), y_train.std() or 1.0
        y_train, y_test = (y_train - centre) / scale, (y_test - centre) / scale
    return X_train, X_test, y_train, y_test


def _split(data: Dataset, args):
    from sklearn.model_selection import train_test_split

    stratify = data.y if data.task == "classification" else None
    try:
        split = train_test_split(data.X, data.y, test_size=args.test_size,
                                 random_state=args.seed, stratify=stratify)
    except ValueError as err:
        raise InputError(f"cannot split {data.name} into train and test sets: {err}") from None
    return _standardise(split, data.task)


# ----------------------------------------------------------------------------- report

def _solver_summary(estimator) -> str:
    """The kernel's size and spectrum as the fitted solver sees it."""
    ensemble = estimator.ensemble_
    if estimator.solver_ == "nystrom":
        evals = ensemble.eigenvalues
        return (f"Nyström with {ensemble.n_components} landmarks, eigenvalues of the "
                f"regularised approximate kernel {evals[0]:.3g} .. {evals[-1]:.3g}")
    if estimator.solver_ == "cg":
        return (f"conjugate gradients / Krylov steps, preconditioner rank {ensemble.rank}, "
                f"mean diagonal {ensemble.operator.trace / ensemble.n_train:.4g}")
    evals = ensemble.factor.eigensystem[0]
    return (f"mean diagonal {np.mean(np.diag(ensemble.k_train_train)):.4g}, eigenvalues "
            f"{evals[0]:.3g} .. {evals[-1]:.3g}")


def _kernel_summary(estimator, data: Dataset, n_train: int, n_test: int) -> list[str]:
    ensemble = estimator.ensemble_
    shape = estimator.input_shape_
    images = "" if shape is None else f" as {'x'.join(map(str, shape))} images"
    lines = [f"architecture  {getattr(estimator, 'arch_', None) or estimator.architecture()}",
             f"data          {data.name}: {data.task}, {data.X.shape[1]} features{images}, "
             f"{n_train} train / {n_test} test samples"
             + (f", {len(estimator.classes_)} classes" if data.task == "classification" else ""),
             f"kernel        {ensemble.kernel.upper()} "
             f"({'all layers trained' if ensemble.kernel == 'ntk' else 'readout only'}), "
             f"{_solver_summary(estimator)}, diag_reg {ensemble.effective_diag_reg:.3g}",
             f"solver        {estimator.solver_} ({estimator.solver_reason_})"]
    if hasattr(estimator, "params_"):
        fitted = ", ".join(f"{name} = {value:.6g}" for name, value in estimator.params_.items())
        starts = {**getattr(estimator.arch, "values", {}), "diag_reg": estimator.diag_reg}
        started = ", ".join(f"{name} = {starts[name]:g}" for name in estimator.params_)
        lines.append(f"fitted        {fitted}: log marginal likelihood "
                     f"{estimator.log_marginal_likelihood_value_:.6g} (from {started})")
    formula = getattr(estimator.network_, "formula", None)
    if callable(formula):
        derivation = str(formula(ensemble.kernel)).splitlines()
        lines += ["", *derivation[:_MAX_FORMULA_LINES]]
        if len(derivation) > _MAX_FORMULA_LINES:
            lines.append(f"  ... {len(derivation) - _MAX_FORMULA_LINES} more lines "
                         "(the full derivation: net.formula() in Python)")
    return lines


def _table(run: Run, data: Dataset, y_train, y_test) -> list[str]:
    classes = getattr(run.estimator, "classes_", None)
    score = "accuracy" if data.task == "classification" else "r2"
    lines = [f"{'time':>10}  {'train loss':>11}  {'train ' + score:>14}  "
             f"{'test loss':>11}  {'test ' + score:>13}"]
    for i, t in enumerate(run.times):
        train = _metrics(data.task, y_train, run.train[i], classes)
        test = _metrics(data.task, y_test, run.test[i], classes)
        lines.append(f"{'inf' if np.isinf(t) else f'{t:g}':>10}  {train['loss']:>11.4g}  "
                     f"{train[score]:>14.4f}  {test['loss']:>11.4g}  {test[score]:>13.4f}")
    return lines


# The loss axis ends one decade below the smallest loss at a finite time, but spans at most
# this many decades below the largest: t = inf losses of an interpolating ensemble are
# ~1e-30, which would squash every finite time into the top of a log axis.
_LOSS_DECADES = 8


def figure(args, data: Dataset, run: Run, y_train, y_test):
    """Train and test loss (log axis) and accuracy or R² against training time (log axis),
    with the t = inf values as dashed lines: a matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..verify import PLOT_STYLE

    classes = getattr(run.estimator, "classes_", None)
    score = "accuracy" if data.task == "classification" else "r2"
    shown = np.isfinite(run.times) & (run.times > 0)  # a log time axis has no t = 0
    curves = {label: [_metrics(data.task, truth, o, classes) for o in outputs]
              for outputs, truth, label in ((run.train, y_train, "train"),
                                            (run.test, y_test, "test"))}
    losses = np.array([[m["loss"] for m in metrics] for metrics in curves.values()])
    smallest = losses[:, shown].min(initial=np.inf, where=losses[:, shown] > 0)
    floor = max(losses.max() * 10.0 ** -_LOSS_DECADES, smallest / 10)
    with plt.rc_context(PLOT_STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), constrained_layout=True)
        for label, metrics in curves.items():
            for axis, key in zip(axes, ("loss", score)):
                values = np.array([m[key] for m in metrics])
                at_inf = values[np.isinf(run.times)][0]
                if key == "loss":
                    values = np.maximum(values, floor)
                line, = axis.plot(run.times[shown], values[shown], linewidth=2, label=label)
                below = key == "loss" and at_inf < floor
                axis.axhline(max(at_inf, floor) if key == "loss" else at_inf,
                             color=line.get_color(), linestyle="--", linewidth=1.5,
                             label=f"{label}, t = inf" + (f" (< {floor:.1e}, at the floor)"
                                                          if below else ""))
        axes[0].set_yscale("log")
        axes[0].set_ylim(bottom=floor / 2)
        for axis, key in zip(axes, ("loss (½ MSE)", "accuracy" if score == "accuracy" else "R²")):
            axis.set_xscale("log")
            axis.set_xlabel(f"training time t (steps at learning rate {args.learning_rate:g})")
            axis.set_ylabel(key)
            axis.grid(True, which="major", alpha=0.5)
            axis.grid(True, which="minor", alpha=0.15)
            axis.legend()
        fig.suptitle(textwrap.fill(f"{data.name}: {args.kernel.upper()} ensemble of "
                                   f"{args.arch}", 100))
    return fig


def run(args) -> int:
    """Load the data, fit, print the kernel summary and metrics, plot if asked."""
    check_output_directory(args.plot, "--plot")
    data = (load_csv(args.data, args.target, args.task) if args.data is not None
            else load_bundled(args.dataset or DEFAULT_DATASET))
    times = args.times
    plot_times = np.unique(np.concatenate([times, np.geomspace(0.1, 1e5, 61)])) \
        if args.plot else times
    # Stage names on a terminal only: silent when output is redirected.
    with stages(None, 3, bar_format="{desc} [{elapsed}]") as step:
        X_train, X_test, y_train, y_test = _split(data, args)
        trace = _fit_and_trace(args, data, (X_train, X_test, y_train, y_test), plot_times, step)
    report = [*_kernel_summary(trace.estimator, data, len(X_train), len(X_test)), ""]
    keep = np.isin(trace.times, np.append(times, np.inf))
    table_run = Run(trace.times[keep], trace.train[keep], trace.test[keep], trace.estimator)
    report += _table(table_run, data, y_train, y_test)
    if data.task == "regression":
        report.append("(regression targets standardised with training mean and std; "
                      "loss in those units)")
    print("\n".join(report))
    if args.plot:
        from ..verify import save_figure

        save_figure(figure(args, data, trace, y_train, y_test), args.plot)
        print(f"plot saved to {args.plot}")
    return 0
