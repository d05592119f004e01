"""ntkdsl's version, in a module of its own so that any module (the command line's --version,
the header of standalone modules) can read it without importing the package namespace."""
__version__ = "0.1.0"
