"""A grammar-aware fuzzer for architecture strings, and a harness that runs each input in a
child process under a CPU-time and memory limit (see the README, "The fuzzer").

Inputs come from six generators (GENERATORS, with their weights): random valid architectures
(every layer of the registry with the arguments it takes, sums, repeats, parentheses,
compositions, tame Fn bodies), the same with extreme numbers, token-level mutations of valid
strings, large and nasty `Fn` expressions, deep nesting and long repeats around the limits,
and random bytes. Every input must give a kernel of finite numbers or one of ntkdsl's own
errors, within CPU_SECONDS of the child's CPU time and MEMORY_BYTES of address space —
anything else (a foreign exception, inf/NaN, a timeout, a hang past WALL_SECONDS, a memory
blow-up, a crashed child) is a finding.

    python tests/fuzzing.py --count 2000 --seed 3          # a summary of the findings
    python tests/fuzzing.py --replay 'Dense(8) > Elu * 2 > Dense(1)'   # one input, traceback
    python tests/fuzzing.py --count 2000 --seed 3 --index 17          # input 17 of that run
"""
from __future__ import annotations

import argparse
import json
import os
import random
import select
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# name -> its parameters, each (name, required, kind): a required parameter is always
# written, an optional one sometimes; positional while every earlier one is, keyword after.
ACTIVATIONS: dict[str, list[tuple[str, bool, str]]] = {
    "Relu": [], "Abs": [], "Sign": [], "Tanh": [], "Sigmoid": [], "Softplus": [], "Silu": [],
    "Swish": [], "Mish": [], "Identity": [], "LayerNorm": [],
    "LeakyRelu": [("alpha", True, "signed")], "ABRelu": [("a", True, "signed"), ("b", True, "signed")],
    "Erf": [("a", False, "signed"), ("b", False, "signed"), ("c", False, "signed")],
    "Sin": [("a", False, "signed"), ("b", False, "signed"), ("c", False, "signed")],
    "Cos": [("a", False, "signed"), ("b", False, "signed"), ("c", False, "signed")],
    "Exp": [("a", False, "signed"), ("b", False, "small")], "Gaussian": [("a", False, "signed"),
                                                                     ("b", False, "negative")],
    "Elu": [("alpha", False, "positive")], "Gelu": [("approximate", False, "bool")],
    "Monomial": [("degree", True, "degree")], "RectifiedMonomial": [("degree", True, "degree")],
    "Polynomial": [("coef", True, "coef")], "Fn": [("expr", True, "expr")],
}
FUNCTIONS = ["exp", "log", "sqrt", "abs", "sin", "cos", "sinh", "cosh", "tanh", "erf", "erfc",
             "atan", "sigmoid", "softplus", "relu", "step", "sign"]
TAME = ["sin", "cos", "tanh", "erf", "atan", "sigmoid", "softplus", "relu", "abs", "step", "sign"]
EXTREME = ["0", "0.0", "-0.0", "1e308", "1e-308", "1e-320", "5e-324", "1.7976931348623157e308",
           "1e309", "-1e308", "1e30", "1e-30", "1e50", "1e-50", "1e51", "65536", "4294967296",
           "9" * 400, "1" + "0" * 5000, "0." + "0" * 400 + "1", "-1", "-2.5", "1e-12",
           "123456789.123456789", "2", "50", "1000", "1e6", "100000000", "-0", "3.0", "True",
           "None", "'ntk'", "[]", "()"]
WIDTHS = [1, 8, 64, 512]


def _number(rng: random.Random, extreme: bool, kind: str = "std") -> str:
    """A number for a parameter of ``kind``: std (>= 0, mostly O(1)), signed, positive,
    negative, small (|b| <= 1.5); ``extreme`` mixes in the EXTREME literals."""
    if extreme and rng.random() < 0.5:
        return rng.choice(EXTREME)
    if kind == "signed":
        return f"{rng.uniform(-3, 3):.3g}"
    if kind == "negative":
        return f"{-rng.uniform(0.05, 3):.3g}"
    if kind == "small":
        return f"{rng.uniform(-1.5, 1.5):.3g}"
    if kind == "positive":
        return f"{rng.uniform(0.05, 3):.3g}"
    return rng.choice([f"{rng.uniform(0, 3):.3g}", str(rng.randint(0, 3)), f"{rng.uniform(0.5, 2):.3g}",
                       f"{10 ** rng.uniform(-3, 1.5):.4g}"])


def _value(kind: str, rng: random.Random, extreme: bool) -> str:
    if kind == "degree":
        return rng.choice(["0", "1", "2", "3", "4", "5"]) if not extreme else _number(rng, True)
    if kind == "coef":
        n = rng.choice([1, 2, 3, 5, 20, 21, 200]) if extreme else rng.randint(1, 5)
        return "[" + ", ".join(_number(rng, extreme, "signed") for _ in range(n)) + "]"
    if kind == "bool":
        return rng.choice(["True", "False"])
    if kind == "expr":
        return '"' + (expression(rng, depth=rng.randint(1, 4)) if extreme or rng.random() < 0.3
                      else tame_expression(rng, depth=rng.randint(1, 3))) + '"'
    return _number(rng, extreme, kind)


def _call(name: str, params: list[tuple[str, bool, str]], rng: random.Random, extreme: bool) -> str:
    args, positional = [], True
    for pname, required, kind in params:
        if not required and rng.random() < 0.5:
            positional = False  # skipped: everything after it must be a keyword
            continue
        positional = positional and rng.random() < 0.5
        value = _value(kind, rng, extreme)
        args.append(value if positional else f"{pname}={value}")
    return f"{name}({', '.join(args)})" if args else name


def _dense(rng: random.Random, extreme: bool, width: int | None = None) -> str:
    if width is not None:
        args = [str(width)]
    else:
        args = [str(rng.choice(WIDTHS)) if not extreme else rng.choice(["1", "8", _number(rng, True)])]
    if rng.random() < 0.7:
        args.append(f"W_std={_number(rng, extreme)}")
    if rng.random() < 0.6:
        args.append(f"b_std={_number(rng, extreme)}")
    if rng.random() < 0.2:
        args.append("parameterization='standard'")
    return f"Dense({', '.join(args)})"


def _activation(rng: random.Random, extreme: bool) -> str:
    name = rng.choice(list(ACTIVATIONS))
    return _call(name, ACTIVATIONS[name], rng, extreme)


def architecture(rng: random.Random, depth: int = 0, extreme: bool = False) -> str:
    """A random architecture, valid unless ``extreme`` (a Dense before each activation, the
    arguments each layer takes, branches of equal width)."""
    parts = []
    for _ in range(rng.randint(1, 3)):
        width = rng.choice(WIDTHS)
        parts.append(_dense(rng, extreme, None if extreme else width))
        roll = rng.random()
        if roll < 0.7:
            parts.append(_activation(rng, extreme))
            if rng.random() < 0.1:  # two activations in a row: their composition
                parts.append(_activation(rng, extreme))
        elif roll < 0.8 and depth < 2:
            parts.append(f"({architecture(rng, depth + 1, extreme)})")
        elif roll < 0.9 and depth < 2:
            branch = architecture(rng, depth + 1, extreme)
            parts.append(f"({branch} > Dense({width}) + Identity)")
        if rng.random() < 0.15:
            count = rng.choice([2, 3]) if not extreme else rng.choice(["2", "50", "1000", "100000000"])
            parts[-1] = f"({parts[-1]}) * {count}"
    parts.append(_dense(rng, extreme))
    return " > ".join(parts)


def structural(rng: random.Random) -> str:
    """Deep nesting and long repeats, around the limits of ntkdsl.limits."""
    kind = rng.randrange(4)
    if kind == 0:
        n = rng.choice([10, 50, 99, 100, 101, 1000])
        return "(" * n + "Dense(8) > Relu" + ")" * n + " > Dense(1)"
    if kind == 1:
        n = rng.choice([100, 500, 1000, 1248, 1249, 1250, 2500, 2501, 10 ** 8])
        return f"(Dense(8, b_std=0.1) > {rng.choice(['Relu', 'Erf', 'Sin', 'LayerNorm'])}) * {n} > Dense(1)"
    if kind == 2:
        inner, outer = rng.choice([(10, 10), (50, 50), (70, 70), (100, 100)])
        return f"((Dense(8) > Relu) * {inner}) * {outer} > Dense(1)"
    n = rng.choice([3, 10, 15, 16, 17, 100])
    return f"Dense(8) > {rng.choice(['Relu', 'Tanh', 'Sign', 'Erf', 'Sin'])} * {n} > Dense(1)"


def tame_expression(rng: random.Random, depth: int) -> str:
    """A random Fn body that is a valid activation most of the time."""
    if depth <= 0 or rng.random() < 0.3:
        return rng.choice(["x", "x", "x", f"{rng.uniform(-2, 2):.3g}"])
    roll = rng.random()
    if roll < 0.45:
        return f"{rng.choice(TAME)}({tame_expression(rng, depth - 1)})"
    op = rng.choice(["+", "-", "*", "**"])
    right = tame_expression(rng, depth - 1) if op != "**" else rng.choice(["2", "3"])
    return f"({tame_expression(rng, depth - 1)}) {op} ({right})"


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


GENERATORS = {  # name -> (weight, maker)
    "valid": (0.4, architecture),
    "extreme": (0.17, lambda rng: architecture(rng, extreme=True)),
    "mutated": (0.17, lambda rng: mutate(architecture(rng), rng)),
    "nasty_fn": (0.12, lambda rng: f'Dense(8) > Fn("{nasty_expression(rng)}") > Dense(1)'),
    "structural": (0.06, structural),
    "bytes": (0.08, random_text),
}


def inputs(count: int, seed: int) -> list[str]:
    """``count`` inputs from the generators, drawn by weight; the same list for the same
    (count, seed), and the first n of a longer list are the list for n."""
    rng = random.Random(seed)
    makers = [maker for _, maker in GENERATORS.values()]
    weights = [weight for weight, _ in GENERATORS.values()]
    return [rng.choices(makers, weights)[0](rng) for _ in range(count)]


# ------------------------------------------------------------------------------ the harness

ROOT = Path(__file__).resolve().parent.parent
CPU_SECONDS = 3.0          # CPU time of the child for one input
WALL_SECONDS = 30.0        # wall-clock kill: generous, so a loaded machine gives no false hangs
MEMORY_BYTES = 2 << 30     # address space of the child (RLIMIT_AS)

WORKER = r"""
import json, resource, signal, sys, time, traceback
memory, cpu_limit = int(sys.argv[1]), float(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))


class CPULimit(BaseException):
    pass


def over_limit(signum, frame):
    raise CPULimit()


def cpu_now():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


signal.signal(signal.SIGPROF, over_limit)
import numpy as np
import ntkdsl
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 3))
x[2] = 0.0          # a zero row: zero variances
x[3] = x[0]         # an identical pair: the exact diagonal route
x[1] *= 30.0        # a large variance


def evaluate(arch):
    net = ntkdsl.compile(arch)
    nngp, ntk = net.kernels(x)
    cross = net.ntk(x[:2], x[1:])
    return all(np.isfinite(a).all() for a in (nngp, ntk, cross))


def where(err):
    frames = traceback.extract_tb(err.__traceback__)
    own = [f for f in frames if "/ntkdsl/" in f.filename] or frames
    return f"{own[-1].filename.rsplit('/', 1)[-1]}:{own[-1].lineno}" if own else "?"


# Warm-up (imports, grammars, printers) is not any input's time.
for arch in ("Dense(8) > Relu > Dense(1)", "Dense(8) > Tanh > Dense(1)",
             'Dense(8) > Fn("x*erf(x)") > Dense(1)'):
    evaluate(arch)
sys.stdout.write("ready\n"); sys.stdout.flush()
soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
for line in sys.stdin:
    arch = json.loads(line)
    start = cpu_now()
    # The timer raises CPULimit in Python code; RLIMIT_CPU kills the child if it is stuck in C.
    resource.setrlimit(resource.RLIMIT_CPU, (int(start + cpu_limit) + 5, hard))
    signal.setitimer(signal.ITIMER_PROF, cpu_limit)
    try:
        ok = evaluate(arch)
        result = {"outcome": "ok" if ok else "nonfinite"}
    except ntkdsl.NTKDSLError as err:
        result = {"outcome": "error", "kind": type(err).__name__}
    except CPULimit as err:
        result = {"outcome": "timeout", "where": where(err),
                  "traceback": "".join(traceback.format_tb(err.__traceback__)[-8:])}
    except MemoryError as err:
        result = {"outcome": "memory", "where": where(err)}
    except BaseException as err:
        result = {"outcome": "foreign", "kind": type(err).__name__, "where": where(err),
                  "message": str(err)[:300], "traceback": traceback.format_exc()[-3000:]}
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
    result["cpu"] = round(cpu_now() - start, 3)
    if result["cpu"] > cpu_limit and result["outcome"] in ("ok", "error"):
        result = {"outcome": "timeout", "where": "finished over the limit", "cpu": result["cpu"]}
    sys.stdout.write(json.dumps(result) + "\n"); sys.stdout.flush()
"""

GOOD = {"ok", "error"}


@dataclass
class Finding:
    index: int
    arch: str
    outcome: str
    detail: dict
    seconds: float


class Worker:
    """A child interpreter that evaluates one architecture per line under the limits."""

    def __init__(self, cpu_seconds: float, memory_bytes: int):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115  (lives as long as the child)
        self.proc = subprocess.Popen([sys.executable, "-X", "faulthandler", "-c", WORKER,
                                      str(memory_bytes), str(cpu_seconds)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     text=True, env=env, cwd=ROOT)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the fuzz worker did not start: {self.stderr_tail()}")

    def send(self, arch: str) -> None:
        self.proc.stdin.write(json.dumps(arch) + "\n")
        self.proc.stdin.flush()

    def stderr_tail(self) -> str:
        self.stderr.seek(0, os.SEEK_END)
        self.stderr.seek(max(0, self.stderr.tell() - 2000))
        return self.stderr.read().decode("utf-8", "replace")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.stderr.close()


def _death(worker: Worker) -> dict:
    """The outcome of a child that died on an input: the CPU backstop, or a crash."""
    worker.proc.wait()
    code = worker.proc.returncode
    if code == -signal.SIGXCPU:
        return {"outcome": "timeout", "where": "killed by RLIMIT_CPU (stuck outside Python)"}
    return {"outcome": "crash", "kind": f"exit status {code}", "message": worker.stderr_tail()[-300:]}


def run(archs: list[str], cpu_seconds: float = CPU_SECONDS, wall_seconds: float = WALL_SECONDS,
        memory_bytes: int = MEMORY_BYTES, workers: int = 2) -> tuple[Counter, list[Finding]]:
    """Every input through child processes; (outcome counts, findings). A worker is
    replaced after any outcome that may leave it in a bad state."""
    counts: Counter = Counter()
    findings: list[Finding] = []
    pool = [Worker(cpu_seconds, memory_bytes) for _ in range(min(workers, len(archs)) or 1)]
    pending = list(reversed(range(len(archs))))
    busy: dict[int, tuple[int, float]] = {}
    try:
        while pending or busy:
            for w, worker in enumerate(pool):
                if w not in busy and pending:
                    i = pending.pop()
                    worker.send(archs[i])
                    busy[w] = (i, time.monotonic())
            streams = {pool[w].proc.stdout.fileno(): w for w in busy}
            deadline = min(start for _, start in busy.values()) + wall_seconds
            ready, _, _ = select.select(list(streams), [], [], max(0.0, deadline - time.monotonic()))
            now = time.monotonic()
            for w in [streams[fd] for fd in ready]:
                i, start = busy.pop(w)
                line = pool[w].proc.stdout.readline()
                result = json.loads(line) if line else _death(pool[w])
                _record(i, archs[i], result, now - start, counts, findings)
                if result["outcome"] not in GOOD:
                    pool[w].close()
                    pool[w] = Worker(cpu_seconds, memory_bytes)
            for w, (i, start) in list(busy.items()):
                if now - start >= wall_seconds:
                    busy.pop(w)
                    _record(i, archs[i], {"outcome": "hang", "where": f"no answer in {wall_seconds:g} s"},
                            now - start, counts, findings)
                    pool[w].close()
                    pool[w] = Worker(cpu_seconds, memory_bytes)
    finally:
        for worker in pool:
            worker.close()
    return counts, findings


def _record(index, arch, result, seconds, counts, findings) -> None:
    counts[result["outcome"]] += 1
    if result["outcome"] not in GOOD:
        findings.append(Finding(index, arch, result["outcome"], result, seconds))


def replay_command(finding: Finding, seed: int | None = None, count: int | None = None) -> str:
    """A shell command that runs this input again (by its text, or by its place in the
    inputs of a seed when the text cannot be a command-line argument)."""
    if seed is not None and ("\x00" in finding.arch or not finding.arch.isprintable()):
        return f"python tests/fuzzing.py --seed {seed} --count {count} --index {finding.index}"
    return f"python tests/fuzzing.py --replay {shlex.quote(finding.arch)}"


def report(findings: list[Finding], seed: int | None = None, count: int | None = None) -> str:
    """Every finding with its outcome, where it happened, and how to replay it."""
    lines = []
    for f in findings:
        detail = ", ".join(f"{k}={v!r}" for k, v in f.detail.items() if k not in ("outcome", "traceback"))
        lines.append(f"[{f.index}] {f.outcome}: {detail}\n    input: {f.arch[:500]!r}\n"
                     f"    replay: {replay_command(f, seed, count)[:600]}")
    return "\n".join(lines)


def summary(findings: list[Finding]) -> str:
    """Findings grouped by (outcome, exception, place), largest class first."""
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


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--index", type=int, help="run only this input of the seed's list")
    parser.add_argument("--replay", metavar="ARCH", help="run this one input and show its traceback")
    parser.add_argument("--cpu", type=float, default=CPU_SECONDS, help="CPU seconds per input")
    parser.add_argument("--wall", type=float, default=WALL_SECONDS, help="wall-clock kill, seconds")
    parser.add_argument("--workers", type=int, default=2)
    options = parser.parse_args()
    if options.replay is not None or options.index is not None:
        arch = (options.replay if options.replay is not None
                else inputs(options.count, options.seed)[options.index])
        counts, findings = run([arch], options.cpu, options.wall, workers=1)
        print(f"input: {arch!r}\noutcome: {next(iter(counts))}")
        for f in findings:
            print(json.dumps({k: v for k, v in f.detail.items() if k != "traceback"}))
            print(f.detail.get("traceback", ""))
        raise SystemExit(1 if findings else 0)
    started = time.monotonic()
    counts, findings = run(inputs(options.count, options.seed), options.cpu, options.wall,
                           workers=options.workers)
    print(dict(counts), f"{time.monotonic() - started:.0f} s")
    print(summary(findings))


if __name__ == "__main__":
    _main()
