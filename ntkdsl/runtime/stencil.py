"""Window sums over the spatial axes of kernel arrays: the structured linear ops of
convolutional networks (convolution, pooling, flattening, global pooling) and the views
and diagonals the position-pair layout needs.

Part of ntkdsl's runtime: NumPy only, nothing from ntkdsl. The library calls these very
functions and standalone modules embed this text verbatim, so both compute the same
numbers. Every function takes whole arrays: window sums are shifted slices added into
the output (a 3x3 convolution of a covariance is a few shifted adds per axis), never a
Python loop over entries.

A kernel array holds one value per pair of inputs (x_i, x'_j) of a block of ``a`` inputs
x and ``b`` inputs x' (a or b is 1 for values of x alone or x' alone), with the spatial
axes first, so that every shifted slice is a long contiguous run:

* same positions: shape ``(*S, a, b)``, entry ``[p, i, j]`` is the covariance at position
  p of x_i and the same position p of x'_j;
* position pairs: shape ``(*S, *S, a, b)``, entry ``[p, p', i, j]`` the covariance at
  position p of x_i and p' of x'_j.

The spatial shape S is read from the array: all axes but the last two (same positions),
or the first half of them (position pairs). Padding follows neural-tangents (and XLA):
'VALID' keeps the windows inside the input, 'SAME' pads with zeros (the covariance of a
padded position is 0) and puts the smaller half of the padding first, 'CIRCULAR' wraps
around, with the same amounts as 'SAME'.
"""
import numpy


def _st_extent(n, window, stride, padding):
    """(outputs, padding before the first input) of a window of ``window`` positions moved
    by ``stride`` over ``n`` positions."""
    if padding == "VALID":
        return (n - window) // stride + 1, 0
    out = -(-n // stride)
    return out, max((out - 1) * stride + window - n, 0) // 2


_ST_TAPS = {}


def _st_taps(n, window, stride, padding):
    """(outputs, taps): for each offset o of the window, (first output, end of outputs, input
    of the first output) of the outputs j whose input j * stride + o - low lies inside the
    array, or None where there is none; output j reads input j * stride + o - low. Zero
    padding contributes nothing. Remembered per size and window (a dict: every kernel array
    of a network has a few of them)."""
    key = (n, window, stride, padding)
    found = _ST_TAPS.get(key)
    if found is None:
        out, low = _st_extent(n, window, stride, padding)
        taps = []
        for offset in range(window):
            shift = offset - low
            first = max(0, -(shift // stride))  # the least j with j * stride + shift >= 0
            last = min(out - 1, (n - 1 - shift) // stride)
            taps.append((first, last + 1, first * stride + shift) if last >= first else None)
        found = _ST_TAPS[key] = (out, tuple(taps))
    return found


def _st_wrapped(x, axis, window, stride):
    """x padded around ``axis`` by wrapping ('CIRCULAR'), as much as 'SAME' pads: a
    'VALID' window over the result is the circular one."""
    n = x.shape[axis]
    out, low = _st_extent(n, window, stride, "SAME")
    length = max((out - 1) * stride + window, n)
    return numpy.take(x, numpy.arange(-low, length - low) % n, axis=axis)


def _st_index(ndim, where):
    """An index tuple of ``ndim`` full slices but for ``where`` (axis -> slice)."""
    index = [slice(None)] * ndim
    for axis, part in where.items():
        index[axis] = part
    return tuple(index)


def _st_sum_windows(x, axes, window, stride, padding):
    """Window sums along ``axes`` moved together (one axis: a window per output position;
    two axes: the same offsets at both positions of a position pair, the diagonal stencil
    of a convolution's covariance)."""
    if stride == 1 and padding == "SAME" and x.flags.c_contiguous:
        return _st_sum_windows_flat(x, axes, window)
    if padding == "CIRCULAR":
        for axis in axes:
            x = _st_wrapped(x, axis, window, stride)
        padding = "VALID"
    plans = [_st_taps(x.shape[axis], window, stride, padding) for axis in axes]
    shape = list(x.shape)
    for axis, (out, _) in zip(axes, plans):
        shape[axis] = out
    result = None
    full = [slice(None)] * x.ndim
    # The offset whose outputs span every output position goes first, as a copy.
    order = sorted(range(window), key=lambda o: not all(
        taps[o] is not None and taps[o][0] == 0 and taps[o][1] == out for out, taps in plans))
    for offset in order:
        taps = [p[1][offset] for p in plans]
        if None in taps:
            continue
        target, source = list(full), list(full)
        for axis, (first, end, start) in zip(axes, taps):
            target[axis] = slice(first, end)
            source[axis] = slice(start, start + (end - first - 1) * stride + 1, stride)
        part = x[tuple(source)]
        if result is None:
            if part.shape == tuple(shape):
                result = numpy.array(part, dtype=x.dtype)
                continue
            result = numpy.zeros(shape, dtype=x.dtype)
        view = result[tuple(target)]
        numpy.add(view, part, out=view)
    return numpy.zeros(shape, dtype=x.dtype) if result is None else result


_ST_FLAT_PLANS = {}


def _st_flat_plan(shape, axes, window):
    """For each offset but the centre of a 'SAME' window of stride 1 moving ``axes`` of a
    C-contiguous array of ``shape``: (start, end, shift) of its run of outputs in the
    flattened array (input = output + shift) and the index tuples of the outputs in that
    run whose input wraps onto another entry (an axis moved past its end). Remembered per
    shape (a network's kernel arrays have a few)."""
    key = (shape, axes, window)
    found = _ST_FLAT_PLANS.get(key)
    if found is not None:
        return found
    steps = [1] * len(shape)
    for axis in range(len(shape) - 2, -1, -1):
        steps[axis] = steps[axis + 1] * shape[axis + 1]
    step = sum(steps[axis] for axis in axes)
    size = steps[0] * shape[0]
    low = (window - 1) // 2
    plan = []
    for offset in list(range(low)) + list(range(low + 1, window)):
        shift = offset - low
        if abs(shift) >= min(shape[axis] for axis in axes):
            continue  # every input is padding
        # Axis 0's wrapped outputs lie outside the run: the run starts or ends with them.
        edges = tuple(_st_index(len(shape), {axis: slice(shape[axis] - shift, shape[axis])
                                              if shift > 0 else slice(0, -shift)})
                      for axis in axes if axis != 0)
        if shift > 0:
            start = 0
            end = 1 + sum((shape[axis] - (1 + shift if axis in axes else 1)) * steps[axis]
                          for axis in range(len(shape)))
        else:
            start, end = -shift * step, size
        plan.append((start, end, shift * step, edges))
    found = _ST_FLAT_PLANS[key] = tuple(plan)
    return found


def _st_sum_windows_flat(x, axes, window):
    """``_st_sum_windows`` for 'SAME' windows of stride 1 on a C-contiguous x (outputs the
    shape of x): each offset moves every axis of ``axes`` by the same shift, which is one
    offset in the flattened array, so its sum is one contiguous add (a strided add of
    short runs costs about 4x). The flattened add also adds into outputs whose shifted
    input lies outside the array (zero padding: nothing to add) but wraps onto another
    entry; those outputs are saved before and put back after. The same sums, in the same
    order, as the general path. The first offset's add writes the new array itself
    (centre plus shifted input, no copy of x first), its wrapped outputs are x again."""
    flat_x = x.reshape(-1)
    plan = _st_flat_plan(x.shape, tuple(axes), window)
    if not plan:
        return numpy.array(x, dtype=x.dtype)
    result = numpy.empty(x.shape, dtype=x.dtype)
    flat = result.reshape(-1)
    start, end, shift, edges = plan[0]
    numpy.add(flat_x[start:end], flat_x[start + shift:end + shift], out=flat[start:end])
    if start:
        flat[:start] = flat_x[:start]
    if end < flat.size:
        flat[end:] = flat_x[end:]
    for index in edges:
        result[index] = x[index]
    for start, end, shift, edges in plan[1:]:
        saved = [result[index].copy() for index in edges]
        view = flat[start:end]
        numpy.add(view, flat_x[start + shift:end + shift], out=view)
        for index, values in zip(edges, saved):
            result[index] = values
    return result


def _st_axes(x, pairs):
    """The number of spatial axes of a kernel array."""
    return (x.ndim - 2) // 2 if pairs else x.ndim - 2


def _st_affine(x, size, scale, shift):
    """scale * x / size + shift, in x (a new array the caller made)."""
    factor = scale / size
    if factor != 1:
        numpy.multiply(x, factor, out=x)
    if shift != 0:
        numpy.add(x, shift, out=x)
    return x


def _st_conv(x, window, strides, padding, pairs, scale=1.0, shift=0.0):
    """The covariance after a convolution with filter ``window`` (one size per spatial
    axis): the mean over the filter's offsets, the same offset at both positions
    (neural-tangents' stax.Conv), times ``scale`` plus ``shift`` (the layer's weights and
    bias, applied in the same pass). A new array."""
    x = numpy.asarray(x)
    count = _st_axes(x, pairs)
    for axis in range(count):
        axes = (axis, count + axis) if pairs else (axis,)
        x = _st_sum_windows(x, axes, window[axis], strides[axis], padding)
    size = 1
    for w in window:
        size *= w
    return _st_affine(x if count else numpy.array(x), size, scale, shift)


def _st_pool(x, window, strides, padding, average, scale=1.0, shift=0.0):
    """The covariance after average (or sum) pooling with ``window``: position pairs only,
    each position of a pair pooled over its own window; times ``scale`` plus ``shift``. A
    new array."""
    x = numpy.asarray(x)
    count = _st_axes(x, True)
    for axis in range(2 * count):
        x = _st_sum_windows(x, (axis,), window[axis % count], strides[axis % count],
                            padding)
    size = 1
    for w in window:
        size *= w
    return _st_affine(x if count else numpy.array(x), size * size if average else 1, scale,
                      shift)


def _st_positions(x, pairs=False):
    """The number of spatial positions of a kernel array, a float."""
    count = _st_axes(x, pairs)
    size = 1
    for n in x.shape[:count]:
        size *= n
    return float(size)


def _st_flatten(x, pairs):
    """The covariance of the flattened features: the mean over positions of the
    same-position covariances (neural-tangents' stax.Flatten). Shape (a, b)."""
    x = numpy.asarray(x)
    count = _st_axes(x, pairs)
    size = int(_st_positions(x, pairs))
    if pairs:
        total = numpy.trace(x.reshape((size, size) + x.shape[2 * count:]), axis1=0, axis2=1)
    else:
        total = x.reshape((size,) + x.shape[count:]).sum(axis=0)
    return numpy.divide(total, size, out=numpy.array(total, dtype=x.dtype))


def _st_global_pool(x, average):
    """The covariance after global average (or sum) pooling: the mean (or sum) over every
    pair of positions. Shape (a, b)."""
    x = numpy.asarray(x)
    count = _st_axes(x, True)
    positions = int(_st_positions(x, True))
    rest = x.shape[2 * count:]
    # Over the second positions first, then the first: two sums of long rows (one sum over
    # all position pairs adds a short row at a time, ~6x slower). Not a BLAS product with
    # ones, though it is ~2x faster: its rounding differs from column to column, so two
    # identical images would get two values.
    inner = x.reshape((positions, -1)).sum(axis=0)
    total = numpy.array(inner.reshape((positions,) + rest).sum(axis=0), dtype=x.dtype)
    size = positions * positions
    return numpy.divide(total, size, out=total) if average else total


def _st_diagonal(x):
    """The same-position entries of a position-pair array: shape (*S, a, b), a new array."""
    x = numpy.asarray(x)
    count = _st_axes(x, True)
    spatial, rest = x.shape[:count], x.shape[2 * count:]
    size = int(_st_positions(x, True))
    diagonal = numpy.diagonal(x.reshape((size, size) + rest), axis1=0, axis2=1)
    return numpy.ascontiguousarray(numpy.moveaxis(diagonal, -1, 0)).reshape(spatial + rest)


def _st_at_first(v):
    """Same-position values (*S, a, b) as the first position of position pairs:
    (*S, 1, ..., 1, a, b), a view that broadcasts along the second position."""
    count = v.ndim - 2
    return v.reshape(v.shape[:count] + (1,) * count + v.shape[count:])


def _st_at_second(v):
    """Same-position values (*S, a, b) as the second position of position pairs:
    (1, ..., 1, *S, a, b)."""
    count = v.ndim - 2
    return v.reshape((1,) * count + v.shape)


def _st_with_diagonal(x, v):
    """A copy of the position-pair array x whose same-position entries are v (*S, a, b):
    where both positions are one, a variance is exact (correlation exactly 1)."""
    v = numpy.asarray(v)
    count = v.ndim - 2
    size = int(_st_positions(v))
    shape = v.shape[:count] * 2 + v.shape[count:]
    out = numpy.array(numpy.broadcast_to(x, shape), dtype=numpy.result_type(x, v))
    out.reshape((size * size,) + v.shape[count:])[:: size + 1] = v.reshape((size,) + v.shape[count:])
    return out


def _st_ones(x):
    """Ones of x's shape: a constant on the spatial grid (the variances after a Sign are
    exactly 1 at every position)."""
    return numpy.ones(numpy.shape(x))
