"""The TOML parser for bot files.

`tomli` is the parser the standard library vendors as `tomllib`, but its wheels are
compiled with mypyc and parse bot files about 3x faster — a third of the load time of a
large catalog — so it is a dependency on every Python version.
"""

from __future__ import annotations

from tomli import TOMLDecodeError, loads

__all__ = ["TOMLDecodeError", "loads"]
