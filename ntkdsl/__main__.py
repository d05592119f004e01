"""``python -m ntkdsl``: the same command line as the installed ``ntkdsl`` script."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
