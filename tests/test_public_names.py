"""Every name the README and the examples use works after a plain `import ntkdsl`."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "examples").glob("*.py"))]


def documented_names() -> tuple[set[str], set[tuple[str, str]]]:
    """Dotted names `ntkdsl.a.b` and `from ntkdsl.a import b` pairs used in the documents."""
    dotted: set[str] = set()
    imports: set[tuple[str, str]] = set()
    for path in DOCUMENTS:
        text = path.read_text()
        # A trailing "(" or nothing: ntkdsl.compile(...), ntkdsl.verify.verify; "ntkdsl.finite"
        # in prose is a module; file names such as ntkdsl/activations.py use "/" and are not matched.
        dotted |= {m.rstrip(".") for m in re.findall(r"\bntkdsl(?:\.[A-Za-z_]\w*)+", text)}
        for module, names in re.findall(r"from (ntkdsl[\w.]*) import ([\w, ]+)", text):
            imports |= {(module, n.strip()) for n in names.split(",") if n.strip()}
    return dotted, imports


def test_documented_names_resolve_in_a_fresh_process():
    dotted, imports = documented_names()
    assert "ntkdsl.verify.verify" in dotted and "ntkdsl.finite.FiniteNetwork" in dotted
    # The chains are resolved by attribute access only, after nothing but `import ntkdsl`.
    script = """
import importlib, json, sys
import ntkdsl
dotted, imports = json.loads(sys.argv[1])
missing = []
for name in dotted:
    obj = ntkdsl
    for part in name.split(".")[1:]:
        if not hasattr(obj, part):
            missing.append(name)
            break
        obj = getattr(obj, part)
for module, name in imports:
    if not hasattr(importlib.import_module(module), name):
        missing.append(f"from {module} import {name}")
print(json.dumps(missing))
"""
    payload = json.dumps([sorted(dotted), sorted(imports)])
    proc = subprocess.run([sys.executable, "-c", script, payload], capture_output=True,
                          text=True, check=True, cwd=ROOT)
    assert json.loads(proc.stdout) == []


def test_dir_lists_the_lazily_loaded_names():
    proc = subprocess.run(
        [sys.executable, "-c", "import ntkdsl, json, sys; print(json.dumps(dir(ntkdsl)));"
         "print(json.dumps(sorted(m for m in sys.modules if m.startswith('ntkdsl.'))))"],
        capture_output=True, text=True, check=True, cwd=ROOT)
    names_line, loaded_line = proc.stdout.splitlines()
    names, loaded = set(json.loads(names_line)), set(json.loads(loaded_line))
    lazy = {"NTKRegressor", "NTKClassifier", "ArchTemplate", "FiniteNetwork", "empirical_ntk",
            "monte_carlo_nngp", "gp_inference", "gradient_descent_mse_ensemble",
            "SingularKernelWarning", "verify", "finite", "estimators", "predict"}
    assert lazy <= names
    # ... and `import ntkdsl` still does not load them (the CLI starts fast).
    assert not {"ntkdsl.estimators", "ntkdsl.finite", "ntkdsl.verify"} & loaded
    import ntkdsl
    assert set(ntkdsl.__all__) <= names
