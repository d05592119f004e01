"""Ship a kernel without ntkdsl: generate a standalone module, import it, check it.

    python examples/standalone_module.py [OUTPUT_DIR]

Writes relu_kernel.py (numpy only) into OUTPUT_DIR (default: a new temporary directory), loads it in a
fresh interpreter where ntkdsl, sympy and lark are unavailable, and compares its NTK with
ntkdsl's. The same file comes from the command line:

    ntkdsl codegen "Dense(512, W_std=1.5, b_std=0.1) > Relu > Dense(1, W_std=1.5, b_std=0.1)" \\
        -o relu_kernel.py
"""
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import ntkdsl

ARCH = "Dense(512, W_std=1.5, b_std=0.1) > Relu > Dense(1, W_std=1.5, b_std=0.1)"

# In the child interpreter, importing ntkdsl, sympy or lark fails: the module must not need them.
CHILD = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ntkdsl", "sympy", "lark"):
            raise ImportError(name)
sys.meta_path.insert(0, Block())
sys.path.insert(0, ".")
import numpy, relu_kernel
x = numpy.random.default_rng(0).normal(size=(4, 8))
numpy.save("relu_kernel_ntk.npy", relu_kernel.ntk(x))
print(relu_kernel.__doc__.splitlines()[2].strip())
"""


def main() -> None:
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="ntkdsl-"))
    path = out_dir / "relu_kernel.py"
    path.write_text(ntkdsl.codegen(ARCH), encoding="utf-8")
    print(f"wrote {path} ({len(path.read_text().splitlines())} lines)")
    subprocess.run([sys.executable, "-I", "-c", CHILD], check=True, cwd=out_dir)
    standalone = np.load(out_dir / "relu_kernel_ntk.npy")
    x = np.random.default_rng(0).normal(size=(4, 8))
    library = ntkdsl.compile(ARCH).ntk(x)
    error = np.abs(standalone - library).max() / np.abs(library).max()
    print(f"NTK from the standalone module vs ntkdsl: max relative difference {error:.1e}")
    print("\nThe derivation in the module's docstring (also: ntkdsl derive ARCH):")
    print(ntkdsl.compile(ARCH).formula("ntk"))


if __name__ == "__main__":
    main()
