"""Regression on many points (issue 16): the Nyström solver's accuracy against the exact one,
exact vs Nyström vs CG side by side, and the headline N = 1,000,000 fit.

    python benchmarks/large_n.py exact               # N = 20,000: the exact eigensystems, cached
    python benchmarks/large_n.py accuracy            # then Nyström against them, every t
    python benchmarks/large_n.py speed               # N = 20,000: Nyström vs CG (--solvers exact,...)
    python benchmarks/large_n.py headline            # N = 1,000,000, d = 20, m = 2,000
    python benchmarks/large_n.py headline --n 200000 # a smaller N (say so when extrapolating)

exact: for each accuracy task (a teacher–student task, targets of a random finite ReLU network
of width 512, ntkdsl.finite; scikit-learn's Friedman #1 generator), N = 20,000 training and
2,000 test points, one eigendecomposition of the 20,000 x 20,000 NTK (LAPACK dsyevd in place,
~10 GB at the peak) in a fresh process (its time and peak RSS printed): λ, VᵀY and K*V are
saved to --cache, which gives the exact solver's predictions at every t and every diag_reg.

accuracy: test RMSE of the Nyström ensemble (m landmarks, uniform and ridge-leverage) against
the exact ensemble's, at every time of the schedule and at t = ∞ for a grid of diag_reg (the
same absolute ridge for both); the two-class task of the same inputs (the sign of the target)
beside it; the spectrum of K and its effective dimension, which say why t = ∞ is the hard
case; the late times against more landmarks (--sweep); and classification accuracy on the
bundled digits (N = 1,347 training images, m = 500, exact eigendecomposition).

speed and headline: each solver runs in a fresh child process, so its peak resident set size
(getrusage ru_maxrss) is its own. The headline child also measures the machine's GEMM rate
(a 2,000 x 2,000 float64 matrix product, best of 3) just before fitting, and prints the fit's
time against the floating-point work it must do at that rate: N·m² for C = ΦᵀΦ (dsyrk) plus
N·m² for the triangular solve Φ = K(X, Z) L⁻ᵀ plus 2·N·m·d for the Gram products of the
kernel rows (the elementwise layers of the kernel come on top). Every figure is printed
beside the load average (uptime): the machine is shared.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
ARCH = "(Dense(512) > Relu) * 3 > Dense(1)"  # depth-3 ReLU NTK (W_std = 1, no bias)
TEACHER = "(Dense(512, W_std=1.4) > Relu) * 3 > Dense(1, W_std=1.4)"


def load() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ----------------------------------------------------------------------------- data

def teacher_student(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs on the sphere of radius √d and the outputs of one random finite network."""
    from ntkdsl.finite import FiniteNetwork

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    x *= np.sqrt(d) / np.linalg.norm(x, axis=1, keepdims=True)
    teacher = FiniteNetwork(TEACHER, d, width=512)
    params = teacher.init(seed + 1, 1)
    y = np.concatenate([teacher.apply(params, x[s:s + 8192])[0, :, 0]
                        for s in range(0, n, 8192)])
    return x, (y - y.mean()) / y.std()


def friedman(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=n, n_features=20, noise=0.5, random_state=seed)
    x = (x - 0.5) * np.sqrt(12.0)  # uniform on [0, 1] -> zero mean, unit variance
    return x, (y - y.mean()) / y.std()


TASKS = {"teacher-student (d=20)": lambda n: teacher_student(n, 20),
         "Friedman #1 (d=20)": friedman}
N_TEST = 2000


def split(name: str, n: int):
    """(x_train, y_train, x_test, y_test) of a task: N training and N_TEST test points."""
    x, y = TASKS[name](n + N_TEST)
    return x[:n], y[:n], x[n:], y[n:]


def class_targets(y: np.ndarray) -> np.ndarray:
    """A two-class task from the same inputs: the sign of the regression target, one-hot
    centred (±0.5), so its accuracy is the argmax."""
    return np.eye(2)[(y > 0).astype(int)] - 0.5


# ----------------------------------------------------------------------------- exact reference

def cache_file(options, name: str) -> Path:
    slug = name.split(" ")[0].lower()
    return Path(options.cache) / f"exact_{slug}_n{options.n}.npz"


def exact(options) -> None:
    """Exact eigensystems of the accuracy tasks, each in a fresh process (its own time and
    peak RSS), saved to --cache for `accuracy --reference exact`."""
    print(f"exact: {ARCH} NTK, N = {options.n}, {N_TEST} test points, eigendecomposition "
          f"(dsyevd) of each task's training kernel, cached in {options.cache}   [{load()}]")
    for name in TASKS:
        r = run_child({"solver": "eigensystem", "task": name, "n": options.n,
                       "cache": str(cache_file(options, name))})
        if "error" in r:
            print(f"  {name}: failed: {r['error']}")
            continue
        print(f"  {name}: kernels {r['kernels']:.0f} s, eigh {r['eigh']:.0f} s, total "
              f"{r['total']:.0f} s, peak RSS {r['peak_rss']:.2f} GB   "
              f"[{r['load_before']} .. {r['load_after']}]")


def eigensystem_child(spec: dict) -> dict:
    import scipy.linalg

    import ntkdsl

    x_train, y_train, x_test, _ = split(spec["task"], spec["n"])
    targets = np.column_stack([y_train, class_targets(y_train)])
    net = ntkdsl.compile(ARCH)
    result = {"load_before": load()}
    start = time.perf_counter()
    kernel = net.ntk(x_train)
    cross = net.ntk(x_test, x_train)
    result["kernels"] = time.perf_counter() - start
    # K is symmetric, so its transpose is the Fortran-ordered matrix LAPACK wants: with
    # overwrite_a, dsyevd turns it into the eigenvectors in place (no 3.2 GB copy; its
    # workspace is 2 N² more: ~10 GB at the peak at N = 20,000). dsyevd, not dsyevr: 5x
    # faster on this machine at N = 3,000. Every time t and every diag_reg follow from
    # λ, Vᵀ Y and K* V (K + r I has the same V, eigenvalues λ + r).
    evals, evecs = scipy.linalg.eigh(kernel.T, overwrite_a=True, check_finite=False,
                                     driver="evd")
    result["eigh"] = time.perf_counter() - start - result["kernels"]
    result["fit"] = result["kernels"] + result["eigh"]
    np.savez(spec["cache"], eigenvalues=evals, projected=evecs.T @ targets,
             cross=cross @ evecs)
    result["total"] = time.perf_counter() - start
    result["predict"] = result["total"] - result["fit"]  # VᵀY, K*V: then any t is O(N)
    result["peak_rss"] = peak_rss_gb()
    result["load_after"] = load()
    return result


def rmse(a, b) -> np.ndarray:
    return np.sqrt(np.mean((a - b) ** 2, axis=-1))


# ----------------------------------------------------------------------------- accuracy

def accuracy(options) -> None:
    """Nyström (uniform and ridge-leverage landmarks) against the exact eigensystems of
    `exact`, at every time of the schedule and at t = ∞ for every diag_reg of the grid."""
    import ntkdsl
    from ntkdsl.nystrom import nystrom_ensemble

    net = ntkdsl.compile(ARCH)
    print(f"accuracy: {ARCH} NTK, N = {options.n}, {N_TEST} test points, m = {options.m}; "
          f"times {', '.join(f'{t:g}' for t in options.times)} at diag_reg = "
          f"{options.diag_reg:g}, t = inf at diag_reg {', '.join(f'{r:g}' for r in options.grid)}"
          f" (the same absolute ridge for both solvers: diag_reg x K's mean diagonal)   [{load()}]")
    for name in (t for t in options.tasks if t in TASKS):
        reference = np.load(cache_file(options, name))
        x_train, y_train, x_test, y_test = split(name, options.n)
        # One fit for the regression target and the two-class one-hot together: 3 columns,
        # learning_rate 3, so s = t/N for every column, the same s as the exact flows below.
        targets = np.column_stack([y_train, class_targets(y_train)])
        start = time.perf_counter()
        uniform = nystrom_ensemble(net, x_train, targets, options.m, learning_rate=3.0)
        fit_time = time.perf_counter() - start
        leverage = nystrom_ensemble(net, x_train, targets, options.m, landmarks="leverage",
                                    learning_rate=3.0)
        print(f"\n  {name}: Nyström fit {fit_time:.0f} s (uniform landmarks)   [{load()}]")
        spectrum(reference["eigenvalues"], uniform, leverage, net, x_train, options)
        exact_flow = ExactFlow(reference)
        print(f"  {'diag_reg':>8} {'time':>8} {'RMSE exact':>11} {'Nyström':>8} "
              f"{'diff':>7} {'leverage':>9} {'diff':>7} {'RMS gap':>8} {'directions learned':>19}"
              f" {'2-class accuracy exact / Nyström':>33} {'diff':>8}")
        for diag_reg, times in schedule(options):
            ridge = diag_reg * exact_flow.mean_diagonal
            exact = exact_flow.means(times, ridge)
            ny, lev = (e.with_diag_reg(ridge, absolute_scale=True).predict(x_test, times).mean
                       for e in (uniform, leverage))
            learned = exact_flow.directions(times, ridge)
            learned_ny = directions(uniform.raw_eigenvalues, times / options.n, ridge)
            for i, t in enumerate(times):
                re, ra, rb = (rmse(o[i][:, 0], y_test) for o in (exact, ny, lev))
                ce, ca = (np.mean(np.argmax(o[i][:, 1:], 1) == (y_test > 0)) for o in (exact, ny))
                print(f"  {diag_reg:>8g} {t:>8g} {re:>11.4f} {ra:>8.4f} "
                      f"{100 * (ra - re) / re:>+6.2f}% {rb:>9.4f} {100 * (rb - re) / re:>+6.2f}% "
                      f"{rmse(ny[i][:, 0], exact[i][:, 0]):>8.1e} "
                      f"{learned[i]:>9.0f} / {learned_ny[i]:>6.0f}"
                      f" {100 * ce:>23.2f} / {100 * ca:>6.2f}% {100 * (ca - ce):>+6.2f} pt")
        landmark_sweep(net, exact_flow, (x_train, y_train, x_test, y_test), options)
    if "digits" in options.tasks:
        digits(options)


def landmark_sweep(net, exact_flow, data, options) -> None:
    """The late times and t = ∞ against m: how many landmarks the gap needs."""
    from ntkdsl.nystrom import nystrom_ensemble

    x_train, y_train, x_test, y_test = data
    times = options.times[options.times >= 1000]
    times = np.append(times, np.inf)
    ridge = options.diag_reg * exact_flow.mean_diagonal
    exact = [rmse(e[:, 0], y_test) for e in exact_flow.means(times, ridge)]
    for m in options.sweep:
        start = time.perf_counter()
        approx = nystrom_ensemble(net, x_train, y_train, m, diag_reg=ridge,
                                  diag_reg_absolute_scale=True).predict(x_test, times).mean
        gaps = ", ".join(f"t = {t:g}: {100 * (rmse(a, y_test) - e) / e:+.2f}%"
                         for t, a, e in zip(times, approx, exact))
        print(f"  m = {m} ({100 * m / len(x_train):.0f}% of N), diag_reg {options.diag_reg:g}:"
              f" RMSE gap {gaps}   [fit + predict {time.perf_counter() - start:.0f} s, {load()}]")


def schedule(options):
    """(diag_reg, times): the finite times at --diag-reg, then t = ∞ at each of --grid."""
    yield options.diag_reg, options.times
    for diag_reg in options.grid:
        yield diag_reg, np.array([np.inf])


class ExactFlow:
    """The exact solver's predictions from a cached eigensystem (λ, VᵀY, K*V), s = t/N."""

    def __init__(self, reference):
        from ntkdsl.predict import _floor_eigenvalues

        self.floor = _floor_eigenvalues
        self.eigenvalues = reference["eigenvalues"]
        self.projected, self.cross = reference["projected"], reference["cross"]
        self.mean_diagonal = self.eigenvalues.sum() / len(self.eigenvalues)

    def means(self, times, ridge) -> np.ndarray:
        mu = self.floor(self.eigenvalues + ridge)
        gains = -np.expm1(-np.outer(times / len(mu), mu)) / mu  # t = ∞: 1/μ
        return np.einsum("nj,tj,jk->tnk", self.cross, gains, self.projected, optimize=True)

    def directions(self, times, ridge) -> np.ndarray:
        return directions(np.maximum(self.eigenvalues, 0.0), times / len(self.eigenvalues),
                          ridge)


def directions(eigenvalues, scaled_times, ridge) -> np.ndarray:
    """How many eigen-directions of the kernel the flow has learned by each s: Σ (1 − e^{−sμ})
    λ/μ with μ = λ + ridge (at s = ∞ the effective dimension Σ λ/(λ + ridge))."""
    mu = eigenvalues + ridge
    return np.array([np.sum(eigenvalues / mu * -np.expm1(-s * mu)) for s in scaled_times])


def spectrum(eigenvalues, uniform, leverage, net, x_train, options) -> None:
    """Why t = ∞ is the hard case: where K's spectrum is, against what m landmarks hold."""
    m, n = options.m, len(eigenvalues)
    lam = np.sort(eigenvalues)[::-1] / (eigenvalues.sum() / n)  # in units of the mean diagonal
    tail = lam[m:].sum() / lam.sum()
    missing = [1 - e.raw_eigenvalues.sum() / eigenvalues.sum() for e in (uniform, leverage)]
    print(f"  spectrum of K (x its mean diagonal): λ1 = {lam[0]:.3g}, λ{m} = {lam[m - 1]:.3g}, "
          f"λ{n} = {lam[-1]:.3g}; beyond the top {m}: {100 * tail:.1f}% of the trace; "
          f"trace(K - K̃)/trace(K): uniform {100 * missing[0]:.1f}%, leverage "
          f"{100 * missing[1]:.1f}%")
    print(f"    ridge-leverage scores of the rows (the pass leverage sampling draws from): "
          f"{leverage_spread(net, x_train, m)}")
    for diag_reg in (r for r in options.grid if r > 0):
        print(f"    diag_reg {diag_reg:g}: effective dimension Σ λ/(λ + diag_reg) = "
              f"{np.sum(lam / (lam + diag_reg)):.0f} (of m = {m})")


def leverage_spread(net, x_train, m: int) -> str:
    """How far from uniform ridge-leverage sampling is: the spread of the scores it draws
    rows by (select_landmarks' own pass, with its seed-0 pilot sample)."""
    from ntkdsl.nystrom import _KernelRows, _leverage_scores

    n = len(x_train)
    pilot = np.sort(np.random.default_rng(0).choice(n, m, replace=False))
    scores = _leverage_scores(x_train, pilot, _KernelRows(net), "ntk", False)
    mean = scores.mean()
    return (f"std/mean {scores.std() / mean:.3f}, min/mean {scores.min() / mean:.2f}, "
            f"max/mean {scores.max() / mean:.2f}")


def digits(options) -> None:
    import scipy.linalg
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    import ntkdsl
    from ntkdsl.nystrom import nystrom_ensemble

    data = load_digits()
    x = (data.data - data.data.mean(0)) / (data.data.std(0) + 1e-12)
    x_train, x_test, y_train, y_test = train_test_split(x, data.target, test_size=0.25,
                                                        random_state=0, stratify=data.target)
    targets = np.eye(10)[y_train] - 0.1
    net = ntkdsl.compile(ARCH)
    m = 500
    evals, evecs = scipy.linalg.eigh(net.ntk(x_train))
    exact_flow = ExactFlow({"eigenvalues": evals, "projected": evecs.T @ targets,
                            "cross": net.ntk(x_test, x_train) @ evecs})
    # 10 columns: learning_rate 10 makes s = t/N, as ExactFlow's
    approx = nystrom_ensemble(net, x_train, targets, m, learning_rate=10.0)
    print(f"\n  digits (bundled, {len(x_train)} train / {len(x_test)} test, 64 features), "
          f"exact eigendecomposition vs Nyström m = {m} (s = t/N)   [{load()}]")
    print(f"  {'diag_reg':>8} {'time':>8} {'accuracy exact':>15} {'Nyström':>8} {'diff':>9}")
    for diag_reg, times in schedule(options):
        ridge = diag_reg * exact_flow.mean_diagonal
        exact = exact_flow.means(times, ridge)
        ny = approx.with_diag_reg(ridge, absolute_scale=True).predict(x_test, times).mean
        for t, e, a in zip(times, exact, ny):
            ae, aa = (np.mean(np.argmax(o, 1) == y_test) for o in (e, a))
            print(f"  {diag_reg:>8g} {t:>8g} {100 * ae:>14.2f}% {100 * aa:>7.2f}% "
                  f"{100 * (aa - ae):>+6.2f} pt")


# ----------------------------------------------------------------------------- child runs

CHILD_SOLVERS = ("exact", "nystrom", "cg")


def child(spec: dict) -> dict:
    """One solver's fit and predictions in this (fresh) process: times and peak RSS."""
    if spec["solver"] == "eigensystem":
        return eigensystem_child(spec)
    import ntkdsl
    from ntkdsl.krylov import cg_ensemble
    from ntkdsl.nystrom import nystrom_ensemble

    n, d, m, solver = spec["n"], spec["d"], spec["m"], spec["solver"]
    times = None if spec["times"] is None else np.array(spec["times"])  # None: t = inf
    x, y = teacher_student(n + spec["test"], d)
    x_train, y_train, x_test = x[:n], y[:n], x[n:]
    net = ntkdsl.compile(ARCH)
    net.ntk(x_test[:10], x_train[:10])  # compiled and warmed before the clock
    result = {"load_before": load(), "rss_data": peak_rss_gb()}
    if solver == "nystrom":
        result["gemm_gflops"] = gemm_rate()
    start = time.perf_counter()
    if solver == "nystrom":
        model = nystrom_ensemble(net, x_train, y_train, m, diag_reg=spec["diag_reg"])
        result["fit"] = time.perf_counter() - start
        mean = model.predict(x_test, times).mean
    else:
        model = cg_ensemble(net.ntk(x_train), y_train, diag_reg=spec["diag_reg"],
                            max_products=10**6)
        result["fit"] = time.perf_counter() - start
        mean = model.predict(net.ntk(x_test, x_train), times).mean
    result["total"] = time.perf_counter() - start
    result["predict"] = result["total"] - result["fit"]
    result["peak_rss"] = peak_rss_gb()
    result["load_after"] = load()
    result["mean_abs"] = float(np.mean(np.abs(mean)))
    return result


def gemm_rate() -> float:
    """GFLOP/s of a 2,000 x 2,000 float64 product, best of 3 (this process, now)."""
    a = np.random.default_rng(0).standard_normal((2000, 2000))
    best = np.inf
    for _ in range(3):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * 2000**3 / best / 1e9


def run_child(spec: dict) -> dict:
    out = subprocess.run([sys.executable, str(HERE), "_child", json.dumps(spec)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def speed(options) -> None:
    print(f"speed: {ARCH} NTK, teacher-student d = 20, N = {options.n}, {N_TEST} test points, "
          f"times {', '.join(f'{t:g}' for t in options.times)}; exact: one eigendecomposition "
          "(then every t and diag_reg), cached as by `exact`")
    print(f"  {'solver':<22} {'fit s':>8} {'predict s':>10} {'peak RSS GB':>12}   load")
    for solver in options.solvers:
        n = options.exact_n if solver == "exact" else options.n
        spec = {"n": n, "d": 20, "m": options.m, "solver": solver, "test": N_TEST,
                "times": list(options.times), "diag_reg": options.diag_reg}
        if solver == "exact":
            name = next(iter(TASKS))
            spec.update(solver="eigensystem", task=name, cache=str(cache_file(options, name)))
        r = run_child(spec)
        label = solver + (f" m={options.m}" if solver == "nystrom" else "") + \
            (f" N={n}" if n != options.n else "")
        if "error" in r:
            print(f"  {label:<22} failed: {r['error']}")
            continue
        print(f"  {label:<22} {r['fit']:>8.1f} {r['predict']:>10.1f} {r['peak_rss']:>12.2f}   "
              f"{r['load_before']} .. {r['load_after']}")


def headline(options) -> None:
    spec = {"n": options.n, "d": 20, "m": options.m, "solver": "nystrom", "test": 10_000,
            "times": list(options.times), "diag_reg": options.diag_reg}
    print(f"headline: {ARCH} NTK, N = {options.n:,}, d = 20, m = {options.m}, fit + "
          f"predictions at {len(options.times)} times for 10,000 test points   [{load()}]")
    r = run_child(spec)
    if "error" in r:
        print(f"  failed: {r['error']}")
        return
    n, m, d = options.n, options.m, 20
    issue_flops = n * m * m + n * m * d  # the issue's count: C and the features' Gram part
    blas_flops = 2 * n * m * m + 2 * n * m * d  # what runs: dsyrk + trsm + the Gram GEMMs
    rate = r["gemm_gflops"] * 1e9
    print(f"  fit {r['fit']:.1f} s, predictions {r['predict']:.1f} s, total {r['total']:.1f} s;"
          f" peak RSS {r['peak_rss']:.2f} GB (of which the data {r['rss_data']:.2f} GB)")
    print(f"  GEMM rate {r['gemm_gflops']:.1f} GFLOP/s; the issue's count N·m² + N·m·d = "
          f"{issue_flops:.3g} flops = {issue_flops / rate:.1f} s at that rate -> fit is "
          f"{r['fit'] / (issue_flops / rate):.1f}x it; the BLAS work done (2·N·m² + 2·N·m·d ="
          f" {blas_flops:.3g}) = {blas_flops / rate:.1f} s -> {r['fit'] / (blas_flops / rate):.1f}x")
    print(f"  load {r['load_before']} before, {r['load_after']} after")
    if n != 1_000_000:
        scale = 1_000_000 / n
        print(f"  extrapolated linearly to N = 1,000,000 (the fit is O(N), predictions do not "
              f"grow): fit ~{r['fit'] * scale:.0f} s, total ~{r['fit'] * scale + r['predict']:.0f}"
              " s at this load; peak RSS grows only by the data (160 MB at N = 1e6, d = 20)")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "_child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=["accuracy", "speed", "headline", "exact"])
    parser.add_argument("--n", type=int, default=None,
                        help="training samples (default 20,000; headline 1,000,000)")
    parser.add_argument("--exact-n", type=int, default=None,
                        help="speed: N of the exact solver (default --n)")
    parser.add_argument("--m", type=int, default=2000, help="Nyström landmarks")
    parser.add_argument("--times", type=lambda s: [float(v) for v in s.split(",")],
                        default=None,
                        help="finite times (default 1,10,100; accuracy 1,10,...,100000, where "
                             "t = inf comes at every diag_reg of --grid); CG's Krylov steps "
                             "grow with t: at N = 20,000 t = 1,000 is hours")
    parser.add_argument("--solvers", type=lambda s: s.split(","), default=["nystrom", "cg"],
                        help=f"speed: of {', '.join(CHILD_SOLVERS)}; exact (the eigendecomposition "
                             "`exact` runs, cached for accuracy) is an hour at N = 20,000 here")
    parser.add_argument("--diag-reg", type=float, default=1e-4,
                        help="the ridge of the finite times (and of speed, headline)")
    parser.add_argument("--grid", type=lambda s: [float(v) for v in s.split(",")],
                        default=[0.0, 1e-4, 1e-2, 1.0, 10.0],
                        help="accuracy: the diag_regs of t = inf")
    parser.add_argument("--sweep", type=lambda s: [int(v) for v in s.split(",") if v],
                        default=[4000], help="accuracy: more landmark counts for the late times")
    parser.add_argument("--tasks", type=lambda s: [t for t in (*TASKS, "digits")
                                                   if t.startswith(tuple(s.split(",")))],
                        default=[*TASKS, "digits"],
                        help="accuracy: tasks by first word (teacher-student, Friedman, digits)")
    parser.add_argument("--max-products", type=int, default=20_000)
    parser.add_argument("--cache", default="/tmp/ntkdsl-large-n",
                        help="exact: where the eigensystems are saved (a few hundred MB each)")
    options = parser.parse_args()
    if options.n is None:
        options.n = 1_000_000 if options.part == "headline" else 20_000
    if options.exact_n is None:
        options.exact_n = options.n
    if options.times is None:
        options.times = [10.0**k for k in range(6 if options.part == "accuracy" else 3)]
    options.times = np.array(options.times)
    Path(options.cache).mkdir(parents=True, exist_ok=True)
    {"accuracy": accuracy, "speed": speed, "headline": headline,
     "exact": exact}[options.part](options)


if __name__ == "__main__":
    main()
