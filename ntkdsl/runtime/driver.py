"""Input validation, the search for identical input rows, and the kernel-matrix drivers of
standalone modules; for convolutional networks, channels-last images, their validation and
the input statistics of their kernel arrays (ntkdsl.runtime.stencil's layouts).

Part of ntkdsl's runtime: NumPy only, nothing from ntkdsl. The library validates inputs
and finds identical rows with these very functions (ntkdsl.evaluation turns InputProblem
into ntkdsl's InputError or ShapeError, with the same message); standalone modules embed
this text verbatim and raise InputProblem, a ValueError.
"""
import numpy


class InputProblem(ValueError):
    """A bad input array. Its text is the message and the hint on the next line, as
    ntkdsl's InputError shows them; ``shape`` says it is about shapes (ShapeError)."""

    def __init__(self, message, hint=None, shape=False):
        super().__init__(message if hint is None else f"{message}\n{hint}")
        self.message, self.hint, self.shape = message, hint, shape


def refuse_complex(value, name):
    """InputProblem if ``value`` (an array or anything array-like) holds complex numbers."""
    dtype = getattr(value, "dtype", None)
    if not isinstance(dtype, numpy.dtype):  # lists, DataFrames, objects with __array__ only
        try:
            dtype = numpy.asarray(value).dtype
        except (TypeError, ValueError):
            return  # not an array at all: the float conversion that follows says so
    if dtype.kind == "c":
        # The wording starts as scikit-learn's, which its estimator checks look for.
        raise InputProblem(f"Complex data not supported: {name} has a complex dtype; kernels and "
                           "solvers take real numbers only",
                           f"pass {name}.real or np.abs({name}) if that is what you mean")


def as_real(value, name, what="a numeric array"):
    """``value`` as a float64 array (a view when it already is one). Complex data is
    refused rather than cut to its real part (NumPy's float conversion would drop the
    imaginary part with only a warning)."""
    refuse_complex(value, name)
    try:
        return numpy.asarray(value, dtype=numpy.float64)
    except (TypeError, ValueError) as err:
        raise InputProblem(f"{name} must be {what}: {err}") from None


def as_matrix(x, name):
    """x as a finite float64 (n, d) array with n, d >= 1."""
    arr = as_real(x, name, "a numeric array of shape (n, d)")
    check_rank(arr.shape, name, 0)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputProblem(f"{name} is empty (shape {arr.shape}); it needs at least one "
                           "sample and one feature", shape=True)
    check_finite(arr, name)
    return arr


def check_finite(arr, name, first_row=0):
    """InputProblem naming the first non-finite value of ``arr`` by its place, its row
    counted from ``first_row`` (a block of a larger array names its row in the whole)."""
    if numpy.isfinite(arr).all():
        return
    index = tuple(int(i) for i in numpy.argwhere(~numpy.isfinite(arr))[0])
    value, row = arr[index], index[0] + first_row
    where = (f"row {row}, column {index[1]}" if arr.ndim == 2
             else f"index {(row,) + index[1:]}")
    raise InputProblem(f"{name} has a non-finite value {value} at {where}",
                       "kernels are defined for finite inputs only; drop or impute it")


def check_inputs(x1, x2):
    """Validated float64 copies (or views) of the inputs: (a, b), b None when x2 is."""
    a = as_matrix(x1, "x1")
    if x2 is None:
        return a, None
    b = as_matrix(x2, "x2")
    check_features(a, b)
    return a, b


def check_features(a, b):
    """InputProblem unless the (n, d) arrays a and b have the same number of columns."""
    if a.shape[1] != b.shape[1]:
        raise InputProblem(f"x1 has {a.shape[1]} features but x2 has {b.shape[1]}; "
                           "both must have the same number of columns", shape=True)


def squared_norms(x):
    """Row-wise x.x / d, the input layer's variances."""
    return numpy.einsum("ij,ij->i", x, x) / x.shape[1]


# ------------------------------------------------------------------- identical rows --

_HASH_ENTRIES = 32768  # per chunk of rows hashed: temporaries of 256 KB


def _row_hashes(x):
    """A 64-bit hash per row, equal for rows with equal values (-0.0 counts as 0.0).
    Computed in row chunks so the temporaries stay small."""
    mult = numpy.random.default_rng(0x6E746B).integers(1, 2**63, size=x.shape[1],
                                                        dtype=numpy.uint64) | numpy.uint64(1)
    out = numpy.empty(len(x), dtype=numpy.uint64)
    step = max(1, _HASH_ENTRIES // x.shape[1])
    for s in range(0, len(x), step):
        bits = (x[s:s + step] + 0.0).view(numpy.uint64)  # + 0.0 turns -0.0 into 0.0
        bits *= mult  # wraps modulo 2**64
        out[s:s + step] = bits.sum(axis=1)
    return out


def _exact_ids(rows, offset):
    """Group ids (from ``offset`` up) of rows, equal exactly when the rows are equal."""
    if len(rows) == 0:
        return numpy.empty(0, dtype=numpy.int64)
    _, inverse = numpy.unique(rows, axis=0, return_inverse=True)
    return offset + inverse.ravel().astype(numpy.int64)


def _pairs_from_ids(id1, id2):
    """All (i, j) with id1[i] == id2[j], without forming the n1 x n2 comparison."""
    o1, o2 = numpy.argsort(id1, kind="stable"), numpy.argsort(id2, kind="stable")
    u1, start1, count1 = numpy.unique(id1[o1], return_index=True, return_counts=True)
    u2, start2, count2 = numpy.unique(id2[o2], return_index=True, return_counts=True)
    _, k1, k2 = numpy.intersect1d(u1, u2, assume_unique=True, return_indices=True)
    c1, c2, s1, s2 = count1[k1], count2[k2], start1[k1], start2[k2]
    sizes = c1 * c2
    group = numpy.repeat(numpy.arange(len(sizes)), sizes)
    within = numpy.arange(sizes.sum()) - numpy.repeat(numpy.cumsum(sizes) - sizes, sizes)
    rows = o1[s1[group] + within // c2[group]]
    cols = o2[s2[group] + within % c2[group]]
    return rows, cols


def identical_pairs(a, b):
    """Index arrays (rows, cols) of entries whose two input rows are equal, including the
    whole diagonal of a self-kernel (b None). Memory is O(n) beyond the pairs found: rows
    are hashed, and only rows whose hash repeats are compared exactly."""
    if b is None:
        h = _row_hashes(a)
        _, inverse, counts = numpy.unique(h, return_inverse=True, return_counts=True)
        candidate = counts[inverse.ravel()] > 1
        if not candidate.any():
            n = numpy.arange(len(a))
            return n, n
        ids = numpy.arange(len(a), dtype=numpy.int64)
        ids[candidate] = _exact_ids(a[candidate], len(a))
        return _pairs_from_ids(ids, ids)
    ha, hb = _row_hashes(a), _row_hashes(b)
    ca, cb = numpy.isin(ha, hb), numpy.isin(hb, ha)
    if not ca.any():
        return numpy.empty(0, dtype=numpy.intp), numpy.empty(0, dtype=numpy.intp)
    n1, n2 = len(a), len(b)
    shared = _exact_ids(numpy.concatenate([a[ca], b[cb]]), n1 + n2)
    id1 = numpy.arange(n1, dtype=numpy.int64)
    id2 = numpy.arange(n1, n1 + n2, dtype=numpy.int64)
    id1[ca], id2[cb] = shared[: ca.sum()], shared[ca.sum():]
    return _pairs_from_ids(id1, id2)


# -------------------------------------------------------------- the kernel matrices --

def evaluate_kernels(pair, diagonal, x1, x2=None):
    """(NNGP, NTK) matrices (n1, n2), float64, of the layer recursions ``pair(q1_0, q2_0,
    K_0, d)`` and ``diagonal(q_0, d)`` (a standalone module's): all entries in one pass,
    then the entries of identical input rows from the diagonal recursion, exact where
    arccos(1 - rounding) is not."""
    a, b = check_inputs(x1, x2)
    d = a.shape[1]
    q1 = squared_norms(a)
    q2 = q1 if b is None else squared_norms(b)
    k = (a @ (a if b is None else b).T) / d
    values = pair(q1[:, None], q2[None, :], k, d)
    out = [numpy.array(numpy.broadcast_to(m, k.shape), dtype=numpy.float64) for m in values]
    rows, cols = identical_pairs(a, b)
    if rows.size:
        exact = diagonal(q1, d)
        for i in range(2):
            out[i][rows, cols] = numpy.broadcast_to(exact[i], q1.shape)[rows]
    return out[0], out[1]


# ------------------------------------------------------------------- images --

def _axes_text(count):
    return f"{count} spatial axis" if count == 1 else f"{count} spatial axes"


def _layout_text(count):
    """The channels-last shape of inputs with ``count`` spatial axes."""
    names = {1: "(n, L, C)", 2: "(n, H, W, C)", 3: "(n, D, H, W, C)"}
    return names.get(count, "(n, " + ", ".join(f"S{i + 1}" for i in range(count)) + ", C)")


def check_rank(shape, name, axes):
    """InputProblem unless an array of ``shape`` has the rank a network takes: (n, d) for
    ``axes`` 0 (fully connected), channels-last (n, *S, C) with ``axes`` spatial axes, or
    with at least one for None (only Flatten or global pools). The first entry of ``shape``
    counts the examples; it may be the letter "n" when there are none yet (a shape to come).
    The one check of the rank of inputs: the kernels, finite networks and estimators."""
    ndim = len(shape)
    text = "(" + ", ".join(map(str, shape)) + ("," if ndim == 1 else "") + ")"
    if axes == 0 and ndim > 2:
        raise InputProblem(f"{name} has shape {text}, but this network is fully connected "
                           "(no Conv, pooling or Flatten layer): it takes 2-D arrays (n "
                           "samples, d features)", "flatten each image with x.reshape(len(x), "
                           "-1), or give the network a Conv layer or Flatten", shape=True)
    if axes == 0 and ndim != 2:
        raise InputProblem(f"{name} must be 2-D (n samples, d features), got shape {text}",
                           "reshape a single sample with x.reshape(1, -1), "
                           "a single feature with x.reshape(-1, 1)", shape=True)
    if axes != 0 and (ndim < 3 if axes is None else ndim != axes + 2):
        layout = "(n, *spatial, C)" if axes is None else _layout_text(axes)
        what = "a convolutional network" if axes is None else (
            f"this network, whose filters have {_axes_text(axes)},")
        want = "at least 3" if axes is None else str(axes + 2)
        raise InputProblem(
            f"{name} has shape {text} ({ndim}-D) but {what} takes {want}-D channels-last "
            f"images {layout}",
            "a flat (n, d) array of images is reshaped with x.reshape(n, H, W, C)"
            if ndim == 2 else f"pass images of shape {layout}", shape=True)


def as_images(x, name, axes):
    """x as a finite float64 channels-last array (n, *S, C) with ``axes`` spatial axes (None:
    any number, at least one), every size at least 1."""
    arr = as_real(x, name, "a numeric array of channels-last images")
    check_rank(arr.shape, name, axes)
    if 0 in arr.shape:
        raise InputProblem(f"{name} is empty (shape {arr.shape}); it needs at least one "
                           "image, position and channel", shape=True)
    check_finite(arr, name)
    return arr


def check_images(a, b):
    """InputProblem unless the images a and b have the same spatial shape and channels."""
    if a.shape[-1] != b.shape[-1]:
        raise InputProblem(f"x1 has {a.shape[-1]} channels but x2 has {b.shape[-1]}; images "
                           "of both must have the same channels (the last axis)", shape=True)
    if a.shape[1:] != b.shape[1:]:
        raise InputProblem(
            f"x1 holds images of {a.shape[1:-1]} positions but x2 of {b.shape[1:-1]}; both "
            "must have the same spatial shape", shape=True)


def _flat(x):
    """(n, P, C): the images with their positions in one axis."""
    return x.reshape(x.shape[0], -1, x.shape[-1])


def position_variances(x):
    """x.x / C at each position: shape (*S, n, 1)."""
    values = numpy.einsum("npc,npc->pn", _flat(x), _flat(x)) / x.shape[-1]
    return values.reshape(x.shape[1:-1] + (x.shape[0], 1))


def self_covariances(x):
    """x[p].x[p'] / C of each image with itself at every pair of positions: (*S, *S, n, 1)."""
    flat = _flat(x)
    gram = numpy.matmul(flat, flat.transpose(0, 2, 1)) / x.shape[-1]  # (n, P, P)
    spatial = x.shape[1:-1]
    return numpy.ascontiguousarray(gram.transpose(1, 2, 0)).reshape(
        spatial + spatial + (x.shape[0], 1))


def _channel_products(u, v):
    """u @ v / C over the C channels (u's last axis, v's second last), broadcast over
    leading axes: one BLAS product, or for one channel the elementwise product (BLAS at an
    inner size of 1 costs about 3x, and the division by 1 a pass for nothing)."""
    if u.shape[-1] == 1:
        return numpy.multiply(u, v, order="C")
    gram = numpy.matmul(u, v)
    gram /= u.shape[-1]
    return gram


def same_position_gram(a, b):
    """a[p].b[p] / C between every pair of images at each position: (*S, n, m), one BLAS
    product per position."""
    gram = _channel_products(_flat(a).transpose(1, 0, 2), _flat(b).transpose(1, 2, 0))
    return gram.reshape(a.shape[1:-1] + (len(a), len(b)))


def position_pair_gram(a, b):
    """a[p].b[p'] / C between every pair of images at every pair of positions:
    (*S, *S, n, m), from one BLAS product."""
    positions, channels = _flat(a).shape[1:]
    if len(a) == 1:  # a strip of one image: b's images inside its positions, no transpose
        inner = numpy.ascontiguousarray(_flat(b).transpose(1, 0, 2)).reshape(-1, channels)
        gram = _channel_products(a.reshape(-1, channels), inner.T)
        return gram.reshape(a.shape[1:-1] * 2 + (1, len(b)))
    gram = _channel_products(a.reshape(-1, channels), b.reshape(-1, channels).T)
    gram = gram.reshape(len(a), positions, len(b), positions).transpose(1, 3, 0, 2)
    spatial = a.shape[1:-1]
    return numpy.ascontiguousarray(gram).reshape(spatial + spatial + (len(a), len(b)))


def image_statistics(x, pairs):
    """The statistics of images x alone: their variances at each position and, for
    position pairs, their covariances with themselves across positions."""
    if pairs:
        return position_variances(x), self_covariances(x)
    return (position_variances(x),)


def image_gram(a, b, pairs):
    """The statistic of pairs of images: at the same positions, or at every pair."""
    return position_pair_gram(a, b) if pairs else same_position_gram(a, b)


def as_other_input(value):
    """A value of x alone (..., n, 1) as the same value of x' alone (..., 1, n)."""
    return numpy.swapaxes(value, -1, -2) if numpy.ndim(value) >= 2 else value


# The driver keeps each block's kernel arrays near this many values (a few MB each).
_BLOCK_VALUES = 1 << 22


def evaluate_image_kernels(side, pair, diagonal, pairs, axes, x1, x2=None):
    """(NNGP, NTK) matrices (n1, n2), float64, of a convolutional network's recursions (a
    standalone module's): ``side`` (the values of each input alone, from its statistics),
    ``pair`` (the kernels of a block of pairs from their statistic and both sides'
    values) and ``diagonal`` (an input with itself, exact). Rows go in blocks, so the
    kernel arrays of a block stay small; entries of identical images are the diagonal's."""
    a = as_images(x1, "x1", axes)
    b = None if x2 is None else as_images(x2, "x2", axes)
    if b is not None:
        check_images(a, b)
    other = a if b is None else b
    channels = a.shape[-1]
    mine = side(*image_statistics(a, pairs), channels)
    theirs = mine if b is None else side(*image_statistics(other, pairs), channels)
    theirs = [as_other_input(v) for v in theirs]
    positions = int(numpy.prod(a.shape[1:-1]))
    per_pair = positions * positions if pairs else positions
    rows = max(1, _BLOCK_VALUES // max(1, per_pair * len(other)))
    out = [numpy.empty((len(a), len(other))) for _ in range(2)]
    for r in range(0, len(a), rows):
        block = [v[..., r:r + rows, :] if numpy.ndim(v) >= 2 else v for v in mine]
        values = pair(image_gram(a[r:r + rows], other, pairs), channels, *block, *theirs)
        for i in range(2):
            out[i][r:r + rows] = numpy.broadcast_to(values[i], out[i][r:r + rows].shape)
    found = identical_pairs(a.reshape(len(a), -1),
                            None if b is None else b.reshape(len(b), -1))
    if found[0].size:
        exact = diagonal(*image_statistics(a, pairs), channels)
        for i in range(2):
            out[i][found] = numpy.broadcast_to(exact[i], (len(a), 1))[found[0], 0]
    return out[0], out[1]
