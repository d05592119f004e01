"""The Lark grammars of ntkdsl: the single source of its syntax (loaded as package data)."""
