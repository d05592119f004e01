"""A grammar-aware fuzzer for architecture strings, and a harness that runs each input in a
child process with a time and memory limit.

Inputs come from five generators: random valid architectures (every layer of the registry,
random parameters, sums, repeats, parentheses), the same with extreme numbers, token-level
mutations of valid strings, large and nasty `Fn` expressions, and random bytes. Every input
must give a kernel of finite numbers or one of ntkdsl's own errors, within the time and
memory limit — anything else (a foreign exception, inf/NaN, a hang, a memory blow-up) is a
finding.

    python tests/fuzzing.py --count 2000 --seed 3      # prints a summary of the findings
"""
from __future__ import annotations

import argparse
import json
import os
import random
import select
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass

ACTIVATIONS = {  # name -> parameter generators (positional or keyword text)
    "Relu": [], "Abs": [], "Sign": [], "Tanh": [], "Sigmoid": [], "Softplus": [], "Silu": [],
    "Swish": [], "Mish": [], "Identity": [], "LayerNorm": [],
    "LeakyRelu": ["alpha"], "ABRelu": ["a", "b"], "Erf": ["a", "b", "c"], "Sin": ["a", "b", "c"],
    "Cos": ["a", "b", "c"], "Exp": ["a", "b"], "Gaussian": ["a", "b"], "Elu": ["alpha"],
    "Gelu": ["approximate"], "Monomial": ["degree"], "RectifiedMonomial": ["degree"],
    "Polynomial": ["coef"], "Fn": ["expr"],
}
FUNCTIONS = ["exp", "log", "sqrt", "abs", "sin", "cos", "sinh", "cosh", "tanh", "erf", "erfc",
             "atan", "sigmoid", "softplus", "relu", "step", "sign"]
EXTREME = ["0", "0.0", "-0.0", "1e308", "1e-308", "1e-320", "5e-324", "1.7976931348623157e308",
           "1e309", "-1e308", "1e30", "1e-30", "65536", "4294967296", "9" * 400, "1" + "0" * 5000,
           "0." + "0" * 400 + "1", "-1", "-2.5", "1e-12", "123456789.123456789", "2", "50",
           "1000", "1e6", "100000000", "-0", "3.0", "True", "None", "'ntk'", "[]", "()"]


def _number(rng: random.Random, extreme: bool) -> str:
    if extreme and rng.random() < 0.5:
        return rng.choice(EXTREME)
    return rng.choice([f"{rng.uniform(0, 3):.3g}", f"{rng.uniform(-3, 3):.3g}", str(rng.randint(0, 4)),
                       f"{10 ** rng.uniform(-3, 3):.4g}"])


def _argument(name: str, rng: random.Random, extreme: bool) -> str:
    if name == "degree":
        value = rng.choice(["0", "1", "2", "3", "4", "5"]) if not extreme else _number(rng, True)
    elif name == "coef":
        n = rng.choice([1, 2, 3, 5, 20, 200]) if extreme else rng.randint(1, 4)
        value = "[" + ", ".join(_number(rng, extreme) for _ in range(n)) + "]"
    elif name == "approximate":
        value = rng.choice(["True", "False"])
    elif name == "expr":
        value = '"' + expression(rng, depth=rng.randint(1, 4)) + '"'
    else:
        value = _number(rng, extreme)
    return value if rng.random() < 0.5 else f"{name}={value}"


def _dense(rng: random.Random, extreme: bool) -> str:
    args = [str(rng.choice([1, 8, 64, 512])) if not extreme else rng.choice(["1", "8", _number(rng, True)])]
    if rng.random() < 0.7:
        args.append(f"W_std={_number(rng, extreme)}")
    if rng.random() < 0.6:
        args.append(f"b_std={_number(rng, extreme)}")
    if rng.random() < 0.2:
        args.append("parameterization='standard'")
    return f"Dense({', '.join(args)})"


def _activation(rng: random.Random, extreme: bool) -> str:
    name = rng.choice(list(ACTIVATIONS))
    params = ACTIVATIONS[name]
    if not params:
        return name
    chosen = params[: rng.randint(0, len(params))] if name not in ("Fn", "Monomial",
                                                                   "RectifiedMonomial",
                                                                   "Polynomial") else params
    args = [_argument(p, rng, extreme) for p in chosen]
    return f"{name}({', '.join(args)})" if args else name


def architecture(rng: random.Random, depth: int = 0, extreme: bool = False) -> str:
    """A random architecture, valid most of the time (Dense before each activation)."""
    parts = []
    for _ in range(rng.randint(1, 3)):
        parts.append(_dense(rng, extreme))
        roll = rng.random()
        if roll < 0.7:
            parts.append(_activation(rng, extreme))
        elif roll < 0.8 and depth < 2:
            body = architecture(rng, depth + 1, extreme)
            parts.append(f"({body})")
        elif roll < 0.9 and depth < 2:
            branch = architecture(rng, depth + 1, extreme)
            parts.append(f"({branch} > Dense(8) + Identity)")
        if rng.random() < 0.15:
            count = rng.choice([2, 3]) if not extreme else rng.choice(["2", "50", "1000", "100000000"])
            parts[-1] = f"({parts[-1]}) * {count}"
    parts.append(_dense(rng, extreme))
    return " > ".join(parts)


def expression(rng: random.Random, depth: int) -> str:
    if depth <= 0 or rng.random() < 0.25:
        return rng.choice(["x", "x", "pi", "e", _number(rng, False)])
    roll = rng.random()
    if roll < 0.4:
        return f"{rng.choice(FUNCTIONS)}({expression(rng, depth - 1)})"
    if roll < 0.5:
        return f"{rng.choice(['max', 'min'])}({expression(rng, depth - 1)}, {expression(rng, depth - 1)})"
    op = rng.choice(["+", "-", "*", "/", "**", "^"])
    right = expression(rng, depth - 1) if op not in ("**", "^") else rng.choice(
        ["2", "3", "0.5", "16", "x", "-1", "1e6", "100"])
    return f"({expression(rng, depth - 1)}) {op} ({right})"


def nasty_expression(rng: random.Random) -> str:
    """Large, deep or numerically hard `Fn` bodies."""
    n = rng.choice([10, 100, 1000, 5000])
    kind = rng.randrange(8)
    if kind == 0:
        return "sin(" * n + "x" + ")" * n
    if kind == 1:
        return " + ".join(["x"] * n)
    if kind == 2:
        return "(" * n + "x" + ")" * n
    if kind == 3:
        return f"x**{rng.choice([16, 40, 100, 1000, 10 ** 6])}"
    if kind == 4:
        return rng.choice(["exp(x**2)", "exp(exp(x))", "1/x", "log(x)", "sqrt(x)", "x**-1",
                           "abs(sin(x))**0.5", "exp(100*x)", "exp(1000*x)", "log(abs(x))",
                           "sqrt(abs(x))", "x**0.5", "step(x)*x**3", "sign(x)*exp(x)", "1/(1+x**2)",
                           "tanh(1e6*x)", "exp(-x**2)*1e300", "max(x, 0)**0.3", "0*x", "0",
                           "e**x**2", "x^x", "pi**x", "sinh(x)**8", "cosh(50*x)"])
    if kind == 5:
        return "*".join(["(x+1)"] * rng.choice([5, 20, 60]))
    if kind == 6:
        return expression(rng, depth=rng.randint(6, 12))
    return "+".join(f"{rng.choice(FUNCTIONS)}({rng.uniform(-5, 5):.3g}*x)" for _ in range(n // 10 + 1))


def mutate(text: str, rng: random.Random) -> str:
    """Token-level damage: delete, duplicate, swap or insert a token or a character."""
    tokens = _tokens(text)
    for _ in range(rng.randint(1, 3)):
        if not tokens:
            break
        i = rng.randrange(len(tokens))
        roll = rng.random()
        if roll < 0.3:
            del tokens[i]
        elif roll < 0.5:
            tokens.insert(i, tokens[i])
        elif roll < 0.7:
            j = rng.randrange(len(tokens))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        else:
            tokens.insert(i, rng.choice(["(", ")", ",", ">", "+", "*", "=", "'", '"', "[", "]",
                                         "Dense", "Relu", "Fn", "x", "-", "1e999", "\n", "#", "\\",
                                         "\x00", "é", "*0", "*-1", "* 2.5"]))
    return "".join(tokens)


def _tokens(text: str) -> list[str]:
    out, word = [], ""
    for ch in text:
        if ch.isalnum() or ch in "._":
            word += ch
            continue
        if word:
            out.append(word)
            word = ""
        out.append(ch)
    if word:
        out.append(word)
    return out


def random_text(rng: random.Random) -> str:
    n = rng.choice([0, 1, 5, 50, 500])
    if rng.random() < 0.5:
        return bytes(rng.randrange(256) for _ in range(n)).decode("latin-1")
    return "".join(rng.choice("Dense(Relu)>+*, 0123456789.eE-=[]'\"xFn") for _ in range(n))


def inputs(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    makers = [
        lambda: architecture(rng),
        lambda: architecture(rng, extreme=True),
        lambda: mutate(architecture(rng), rng),
        lambda: f'Dense(8) > Fn("{nasty_expression(rng)}") > Dense(1)',
        lambda: random_text(rng),
    ]
    weights = [0.35, 0.25, 0.2, 0.12, 0.08]
    return [rng.choices(makers, weights)[0]() for _ in range(count)]


# ------------------------------------------------------------------------------ the harness

WORKER = r"""
import json, resource, sys, traceback
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import numpy as np
import ntkdsl
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 3))
x[2] = 0.0          # a zero row: zero variances
x[3] = x[0]         # an identical pair: the exact diagonal route
x[1] *= 30.0        # a large variance
sys.stdout.write("ready\n"); sys.stdout.flush()
for line in sys.stdin:
    arch = json.loads(line)
    try:
        net = ntkdsl.compile(arch)
        nngp, ntk = net.kernels(x)
        cross = net.ntk(x[:2], x[1:])
        ok = all(np.isfinite(a).all() for a in (nngp, ntk, cross))
        result = {"outcome": "ok" if ok else "nonfinite"}
    except ntkdsl.NTKDSLError as err:
        result = {"outcome": "error", "kind": type(err).__name__}
    except MemoryError:
        result = {"outcome": "memory"}
    except BaseException as err:
        tb = traceback.extract_tb(err.__traceback__)[-1]
        result = {"outcome": "foreign", "kind": type(err).__name__,
                  "where": f"{tb.filename.rsplit('/', 1)[-1]}:{tb.lineno}", "message": str(err)[:200]}
    sys.stdout.write(json.dumps(result) + "\n"); sys.stdout.flush()
"""

GOOD = {"ok", "error"}


@dataclass
class Finding:
    arch: str
    outcome: str
    detail: dict
    seconds: float


class Worker:
    """A child interpreter that evaluates one architecture per line under a memory limit."""

    def __init__(self, memory_bytes: int):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, str(memory_bytes)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env)
        assert self.proc.stdout.readline().strip() == "ready"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def run(archs: list[str], timeout: float = 3.0, memory_bytes: int = 2 << 30,
        workers: int = 2) -> tuple[Counter, list[Finding]]:
    """Every input through child processes; (outcome counts, findings)."""
    counts: Counter = Counter()
    findings: list[Finding] = []
    pool = [Worker(memory_bytes) for _ in range(workers)]
    pending = list(enumerate(archs))
    busy: dict[int, tuple[int, float]] = {}
    try:
        while pending or busy:
            for w, worker in enumerate(pool):
                if w not in busy and pending:
                    i, arch = pending.pop()
                    worker.proc.stdin.write(json.dumps(arch) + "\n")
                    worker.proc.stdin.flush()
                    busy[w] = (i, time.monotonic())
            streams = {pool[w].proc.stdout.fileno(): w for w in busy}
            deadline = min(start for _, start in busy.values()) + timeout
            ready, _, _ = select.select(list(streams), [], [], max(0.0, deadline - time.monotonic()))
            now = time.monotonic()
            done = [streams[fd] for fd in ready]
            for w in done:
                i, start = busy.pop(w)
                line = pool[w].proc.stdout.readline()
                result = json.loads(line) if line else {"outcome": "crash"}
                _record(archs[i], result, now - start, counts, findings)
                if not line:
                    pool[w].close()
                    pool[w] = Worker(memory_bytes)
            for w, (i, start) in list(busy.items()):
                if now - start >= timeout and w not in done:
                    busy.pop(w)
                    _record(archs[i], {"outcome": "timeout"}, now - start, counts, findings)
                    pool[w].close()
                    pool[w] = Worker(memory_bytes)
    finally:
        for worker in pool:
            worker.close()
    return counts, findings


def _record(arch, result, seconds, counts, findings) -> None:
    counts[result["outcome"]] += 1
    if result["outcome"] not in GOOD:
        findings.append(Finding(arch, result["outcome"], result, seconds))


def summary(findings: list[Finding]) -> str:
    classes: dict[tuple, list[Finding]] = {}
    for f in findings:
        key = (f.outcome, f.detail.get("kind"), f.detail.get("where"))
        classes.setdefault(key, []).append(f)
    lines = []
    for key, group in sorted(classes.items(), key=lambda kv: -len(kv[1])):
        example = min(group, key=lambda f: len(f.arch))
        lines.append(f"{len(group):4d}  {key[0]} {key[1] or ''} {key[2] or ''}  "
                     f"{example.detail.get('message', '')[:100]!r}\n      e.g. {example.arch[:200]!r}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3.0)
    options = parser.parse_args()
    started = time.monotonic()
    counts, findings = run(inputs(options.count, options.seed), timeout=options.timeout)
    print(dict(counts), f"{time.monotonic() - started:.0f} s")
    print(summary(findings))
