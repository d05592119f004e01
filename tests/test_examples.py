"""Every script in examples/ runs to completion (they are what users copy from)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script, tmp_path):
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "MPLBACKEND": "Agg"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip(), "an example should show its results"
    assert not any(tmp_path.iterdir()), "examples write into a temporary or given directory"


def test_examples_write_into_the_directory_given(tmp_path):
    run = subprocess.run([sys.executable, str(EXAMPLES[0].with_name("standalone_module.py")),
                          str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "relu_kernel.py").read_text().startswith('"""')
