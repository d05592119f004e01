"""Packaging: the license file matches the metadata, the package is typed (PEP 561) and a
type checker sees the public API's types through a plain `import ntkdsl`."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = (ROOT / "pyproject.toml").read_text()

USER_CODE = '''
import numpy as np
import ntkdsl
from ntkdsl import NTKRegressor, FiniteNetwork, empirical_ntk, gradient_descent_mse_ensemble
from ntkdsl.verify import verify

net = ntkdsl.compile("Dense(512) > Relu > Dense(1)")
x = np.ones((2, 3))
reveal_type(net)
reveal_type(net.ntk(x))
reveal_type(NTKRegressor("Dense(8) > Relu > Dense(1)").fit(x, x[:, 0]))
reveal_type(gradient_descent_mse_ensemble)
reveal_type(FiniteNetwork("Dense(8) > Relu > Dense(1)", 3).init(0))
reveal_type(empirical_ntk("Dense(8) > Relu > Dense(1)", x))
reveal_type(verify("Dense(8) > Relu > Dense(1)").report())
'''


def test_license_file_matches_the_metadata():
    assert re.search(r'license = \{text = "Apache-2.0"\}', PYPROJECT)
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert '"License :: OSI Approved :: Apache Software License"' in PYPROJECT


def test_the_package_is_typed_and_ships_its_marker():
    assert (ROOT / "ntkdsl" / "py.typed").exists()
    assert re.search(r'"ntkdsl" = \["py\.typed"\]', PYPROJECT)
    assert '"Typing :: Typed"' in PYPROJECT


def test_every_subpackage_is_packaged():
    """A wheel holds the packages pyproject.toml lists: every directory of ntkdsl with an
    __init__.py (ntkdsl.evaluation, ntkdsl.commands, ...) must be among them."""
    listed = set(re.search(r"^packages = \[(.*)\]$", PYPROJECT, re.M).group(1).replace('"', "").split(", "))
    found = {".".join(init.parent.relative_to(ROOT).parts)
             for init in (ROOT / "ntkdsl").rglob("__init__.py")
             if "grammars" not in init.parts and "__pycache__" not in init.parts}
    assert "ntkdsl.evaluation" in found and found <= listed, sorted(found - listed)


def test_mypy_sees_the_public_types(tmp_path):
    # The package as an installed wheel lays it out: mypy accepts a package found on the path
    # only with its py.typed marker, and follows no editable-install import hook.
    site = tmp_path / "site"
    shutil.copytree(ROOT / "ntkdsl", site / "ntkdsl",
                    ignore=shutil.ignore_patterns("__pycache__", "grammars"))
    script = tmp_path / "user.py"
    script.write_text(USER_CODE)
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir",
                           os.devnull, "--ignore-missing-imports", str(script)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0 and "Success" in out, out + proc.stderr
    revealed = re.findall(r'Revealed type is "(.*)"', out)
    assert len(revealed) == USER_CODE.count("reveal_type"), out
    assert "Any" not in revealed, out
    assert revealed[0] == "ntkdsl.network.Network"
    assert revealed[1].startswith("numpy.ndarray")
    assert revealed[2] == "ntkdsl.estimators.NTKRegressor"
    assert revealed[3].startswith("def (k_train_train: ") and "Any" not in revealed[3].split("->")[1]
    assert revealed[-1] == "str"
