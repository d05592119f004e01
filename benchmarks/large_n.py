"""Regression on many points (issue 16): the Nyström solver's accuracy against the exact one,
exact vs Nyström vs CG side by side, and the headline N = 1,000,000 fit.

    python benchmarks/large_n.py accuracy            # N = 20,000, m = 2,000, every time of --times
    python benchmarks/large_n.py speed               # N = 20,000: exact vs Nyström vs CG
    python benchmarks/large_n.py headline            # N = 1,000,000, d = 20, m = 2,000
    python benchmarks/large_n.py headline --n 200000 # a smaller N (say so when extrapolating)

accuracy: test RMSE of the Nyström ensemble (m landmarks, uniform) against the exact ensemble's
at every time of the schedule, on a teacher–student task (targets of a random finite ReLU
network of width 512, ntkdsl.finite) and on scikit-learn's Friedman #1 generator (N = 20,000),
plus classification accuracy on the bundled digits (N = 1,347 training images as rows,
m = 500). At N = 20,000 the exact reference is the CG / expm_multiply solver
(ntkdsl.krylov, equal to the exact factorisation to 1e-8 in tests/test_cg.py): an
eigendecomposition of a 20,000 x 20,000 kernel is hours on this shared machine. Digits uses
the exact eigendecomposition itself.

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
    np.savez(spec["cache"], eigenvalues=evals, projected=evecs.T @ targets,
             cross=cross @ evecs)
    result["total"] = time.perf_counter() - start
    result["peak_rss"] = peak_rss_gb()
    result["load_after"] = load()
    return result


def rmse(a, b) -> np.ndarray:
    return np.sqrt(np.mean((a - b) ** 2, axis=-1))


# ----------------------------------------------------------------------------- accuracy

def accuracy(options) -> None:
    import ntkdsl
    from ntkdsl.krylov import cg_ensemble
    from ntkdsl.nystrom import nystrom_ensemble

    times = np.append(options.times, np.inf)
    net = ntkdsl.compile(ARCH)
    print(f"accuracy: {ARCH} NTK, N = {options.n}, m = {options.m}, diag_reg = "
          f"{options.diag_reg:g}, times {', '.join(f'{t:g}' for t in times)}   [{load()}]")
    for name, (x, y) in (("teacher-student (d=20)", teacher_student(options.n + 2000, 20)),
                         ("Friedman #1 (d=20)", friedman(options.n + 2000))):
        x_train, y_train, x_test, y_test = x[:options.n], y[:options.n], x[options.n:], y[options.n:]
        start = time.perf_counter()
        approx = nystrom_ensemble(net, x_train, y_train, options.m, diag_reg=options.diag_reg)
        ny = approx.predict(x_test, times).mean
        ny_time = time.perf_counter() - start
        leverage = nystrom_ensemble(net, x_train, y_train, options.m, landmarks="leverage",
                                    diag_reg=options.diag_reg).predict(x_test, times).mean
        start = time.perf_counter()
        krylov = cg_ensemble(net.ntk(x_train), y_train, diag_reg=options.diag_reg,
                             max_products=options.max_products)
        exact = krylov.predict(net.ntk(x_test, x_train), times).mean
        exact_time = time.perf_counter() - start
        print(f"\n  {name}: Nyström {ny_time:.0f} s, exact (CG / expm_multiply, "
              f"{krylov.operator.products} kernel products) {exact_time:.0f} s   [{load()}]")
        print(f"  {'time':>8} {'RMSE exact':>11} {'RMSE Nyström':>13} {'difference':>11} "
              f"{'RMS gap of the means':>21}   {'leverage landmarks: RMSE, difference':>37}")
        for t, e, a, b in zip(times, exact, ny, leverage):
            re, ra, rb = rmse(e, y_test), rmse(a, y_test), rmse(b, y_test)
            print(f"  {t:>8g} {re:>11.4f} {ra:>13.4f} {100 * (ra - re) / re:>10.2f}% "
                  f"{rmse(a, e):>21.2e}   {rb:>26.4f} {100 * (rb - re) / re:>9.2f}%")
    digits(times, options)


def digits(times, options) -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    import ntkdsl
    from ntkdsl.nystrom import nystrom_ensemble
    from ntkdsl.predict import gradient_descent_mse_ensemble

    data = load_digits()
    x = (data.data - data.data.mean(0)) / (data.data.std(0) + 1e-12)
    x_train, x_test, y_train, y_test = train_test_split(x, data.target, test_size=0.25,
                                                        random_state=0, stratify=data.target)
    targets = np.eye(10)[y_train] - 0.1
    net = ntkdsl.compile(ARCH)
    m = 500
    exact = gradient_descent_mse_ensemble(net.ntk(x_train), targets, diag_reg=options.diag_reg
                                          ).predict(net.ntk(x_test, x_train), times).mean
    approx = nystrom_ensemble(net, x_train, targets, m, diag_reg=options.diag_reg
                              ).predict(x_test, times).mean
    print(f"\n  digits (bundled, {len(x_train)} train / {len(x_test)} test, 64 features), "
          f"exact eigendecomposition vs Nyström m = {m}   [{load()}]")
    print(f"  {'time':>8} {'accuracy exact':>15} {'accuracy Nyström':>17} {'difference':>11}")
    for t, e, a in zip(times, exact, approx):
        ae, aa = (np.mean(np.argmax(o, 1) == y_test) for o in (e, a))
        print(f"  {t:>8g} {100 * ae:>14.2f}% {100 * aa:>16.2f}% {100 * (aa - ae):>+9.2f} pt")


# ----------------------------------------------------------------------------- child runs

CHILD_SOLVERS = ("exact", "nystrom", "cg")


def child(spec: dict) -> dict:
    """One solver's fit and predictions in this (fresh) process: times and peak RSS."""
    if spec["solver"] == "eigensystem":
        return eigensystem_child(spec)
    import ntkdsl
    from ntkdsl.krylov import cg_ensemble
    from ntkdsl.nystrom import nystrom_ensemble
    from ntkdsl.predict import gradient_descent_mse_ensemble

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
    elif solver == "cg":
        model = cg_ensemble(net.ntk(x_train), y_train, diag_reg=spec["diag_reg"],
                            max_products=10**6)
        result["fit"] = time.perf_counter() - start
        mean = model.predict(net.ntk(x_test, x_train), times).mean
    else:
        model = gradient_descent_mse_ensemble(net.ntk(x_train), y_train,
                                              diag_reg=spec["diag_reg"])
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
    print(f"speed: {ARCH} NTK, teacher-student d = 20, N = {options.n}, 1,000 test points, "
          f"times {', '.join(f'{t:g}' for t in options.times)} (exact: t = inf only, by "
          "Cholesky; an eigendecomposition would be hours)")
    print(f"  {'solver':<22} {'fit s':>8} {'predict s':>10} {'peak RSS GB':>12}   load")
    for solver in options.solvers:
        n = options.exact_n if solver == "exact" else options.n
        spec = {"n": n, "d": 20, "m": options.m, "solver": solver, "test": 1000,
                "times": None if solver == "exact" else list(options.times),
                "diag_reg": options.diag_reg}
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
                        default=[1.0, 10.0, 100.0],
                        help="finite times (t = inf is always added to accuracy); at N = 20,000 "
                             "the exact reference's Krylov steps grow with t: 1,000 is hours")
    parser.add_argument("--solvers", type=lambda s: s.split(","), default=list(CHILD_SOLVERS))
    parser.add_argument("--diag-reg", type=float, default=1e-4)
    parser.add_argument("--max-products", type=int, default=20_000)
    parser.add_argument("--cache", default="/tmp/ntkdsl-large-n",
                        help="exact: where the eigensystems are saved (a few hundred MB each)")
    options = parser.parse_args()
    if options.n is None:
        options.n = 1_000_000 if options.part == "headline" else 20_000
    if options.exact_n is None:
        options.exact_n = options.n
    options.times = np.array(options.times)
    Path(options.cache).mkdir(parents=True, exist_ok=True)
    {"accuracy": accuracy, "speed": speed, "headline": headline,
     "exact": exact}[options.part](options)


if __name__ == "__main__":
    main()
