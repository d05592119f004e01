"""Convolutional kernel speed against neural-tangents, in one run (issue 14).

Cases (the issue's targets), on the first N images of scikit-learn's bundled digits as 8x8x1
images, self-kernel NTK (float64):

    gap      (Conv(32, (3, 3), padding='SAME', W_std=1.4, b_std=0.1) > Relu) * 3 >
             GlobalAvgPool > Dense(1), N=256: at least 10x faster than neural-tangents
             (issue: 89 s there); every pair of positions (4,096 per pair of images)
    flatten  the same with Flatten instead of the pooling, N=1024: at least 5x (issue: 9.9 s);
             the same positions only (64 per pair)
    digits   the gap network on all 1,797 digits: under 3 minutes (no yardstick: the
             neural-tangents figure would take over an hour)

neural-tangents runs as a subprocess of the Python in NT_PYTHON (default /work/venv-nt, a
separate virtual environment: ``python -m venv /work/venv-nt && /work/venv-nt/bin/pip
install neural-tangents jax[cpu]``), with x64 enabled, its ``kernel_fn(x, None, 'ntk')`` as
documented (not jitted: that is how the issue measured it; --jit adds a jitted run,
compilation included); both sides see the same images and their NTKs are compared. Without
that environment the issue's figures are printed as the yardstick. Wall and CPU seconds are
printed (the machine is shared: CPU seconds show the work when other processes hold cores),
and the load average before and after.

    python benchmarks/conv_speed.py                      # gap and flatten, with neural-tangents
    python benchmarks/conv_speed.py --cases digits       # the full digits self-kernel
    python benchmarks/conv_speed.py --cases gap --n 128  # smaller
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONV = "Conv(32, (3, 3), padding='SAME', W_std=1.4, b_std=0.1) > Relu"
CASES = {
    "gap": (f"({CONV}) * 3 > GlobalAvgPool > Dense(1)", 256, 89.0, 10.0),
    "flatten": (f"({CONV}) * 3 > Flatten > Dense(1)", 1024, 9.9, 5.0),
    "digits": (f"({CONV}) * 3 > GlobalAvgPool > Dense(1)", 1797, None, None),
}
NT_PYTHON = os.environ.get("NT_PYTHON", "/work/venv-nt/bin/python")

# Run by NT_PYTHON: the same network in neural-tangents' stax, timed, its NTK saved.
NT_SCRIPT = r'''
import json, sys, time
import numpy as np
import jax
jax.config.update("jax_enable_x64", True)
from neural_tangents import stax
images, readout, out, jit = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "jit"
layers = []
for _ in range(3):
    layers += [stax.Conv(32, (3, 3), padding="SAME", W_std=1.4, b_std=0.1), stax.Relu()]
layers += [stax.GlobalAvgPool() if readout == "gap" else stax.Flatten(), stax.Dense(1)]
kernel_fn = stax.serial(*layers)[2]
if jit:
    kernel_fn = jax.jit(kernel_fn, static_argnames="get")
x = np.load(images)
t, c = time.perf_counter(), time.process_time()
ntk = np.asarray(kernel_fn(x, None, get="ntk"))
wall, cpu = time.perf_counter() - t, time.process_time() - c
np.save(out, ntk)
print(json.dumps({"wall": wall, "cpu": cpu, "version": __import__("neural_tangents").__version__}))
'''


def digits(n: int) -> np.ndarray:
    from sklearn.datasets import load_digits
    images = load_digits().images[:n].astype(np.float64) / 16.0
    return images[..., None]  # (n, 8, 8, 1), channels last


def ntkdsl_run(arch: str, x: np.ndarray, threads: int | None) -> tuple[float, float, np.ndarray]:
    import ntkdsl
    net = ntkdsl.compile(arch)
    net.ntk(x[:8], threads=threads)  # warm: compiled, thread pools started
    t, c = time.perf_counter(), time.process_time()
    ntk = net.ntk(x, threads=threads)
    return time.perf_counter() - t, time.process_time() - c, ntk


def nt_run(x: np.ndarray, readout: str, jit: bool) -> dict | None:
    """neural-tangents' time and NTK, or None without it; {"failed": ...} when it failed
    (it holds every pair's arrays at once: it can run out of memory)."""
    if not Path(NT_PYTHON).exists():
        return None
    with tempfile.TemporaryDirectory() as folder:
        images, out = Path(folder) / "x.npy", Path(folder) / "ntk.npy"
        np.save(images, x)
        done = subprocess.run([NT_PYTHON, "-c", NT_SCRIPT, str(images), readout, str(out),
                               "jit" if jit else "eager"], capture_output=True, text=True,
                              check=False, env={**os.environ, "JAX_PLATFORMS": "cpu"})
        if done.returncode != 0:
            lines = [line for line in done.stderr.split("\n") if line.strip()
                     and "I0000" not in line and "WARNING: All log" not in line]
            return {"failed": f"exit status {done.returncode}"
                              + (" (killed: out of memory?)" if done.returncode < 0 else "")
                              + ("\n" + "\n".join(lines[-10:]) if lines else "")}
        result = json.loads(done.stdout.strip().split("\n")[-1])
        result["ntk"] = np.load(out)
        return result


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="gap,flatten",
                        help="comma-separated: gap, flatten, digits (default gap,flatten)")
    parser.add_argument("--n", type=int, help="images (default: the case's)")
    parser.add_argument("--threads", type=int, help="ntkdsl's threads (default: all cores)")
    parser.add_argument("--jit", action="store_true", help="also time neural-tangents jitted")
    args = parser.parse_args()
    print(f"cores {os.cpu_count()}, {load()}")
    for name in args.cases.split(","):
        arch, n, issue_seconds, target = CASES[name]
        n = args.n or n
        x = digits(n)
        readout = "gap" if "GlobalAvgPool" in arch else "flatten"
        print(f"\n{name}: {arch}\n  {n} digits as 8x8x1 images, self-kernel NTK, float64")
        wall, cpu, ntk = ntkdsl_run(arch, x, args.threads)
        print(f"  ntkdsl            {wall:8.2f} s wall {cpu:8.2f} s CPU")
        if name == "digits":
            print(f"  target: under 180 s; {'met' if wall < 180 else 'NOT met'} ({load()})")
            continue
        runs = [("neural-tangents", False)] + ([("neural-tangents jit", True)] if args.jit else [])
        for label, jit in runs:
            nt = nt_run(x, readout, jit)
            if nt is not None and "failed" in nt:
                print(f"  {label} failed: {nt['failed']}")
                nt = None
                if jit:
                    continue
            if nt is None:
                if not jit and issue_seconds is not None:
                    print(f"  (no neural-tangents run: the issue's figure, {issue_seconds} s "
                          f"for {CASES[name][1]} images, is the yardstick)")
                    print(f"  speed-up against it: {issue_seconds / wall:.1f}x "
                          f"(target {target:.0f}x)")
                continue
            diff = np.abs(nt["ntk"] - ntk).max() / np.abs(ntk).max()
            print(f"  {label:17} {nt['wall']:8.2f} s wall {nt['cpu']:8.2f} s CPU "
                  f"(neural-tangents {nt['version']}; NTKs agree to {diff:.1e} x max)")
            print(f"  speed-up: {nt['wall'] / wall:.1f}x wall, {nt['cpu'] / cpu:.1f}x CPU "
                  f"(target {target:.0f}x)")
        print(f"  ({load()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
