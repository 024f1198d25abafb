"""Deprecated location, kept for one release: safe outputs and sub-network export now live in
`bayes_nest.app.outputs`.

Each name here is the very object of its new module; import it from there (or from the
package root, ``import bayes_nest as bn``).
"""

from __future__ import annotations

from .app.outputs import check_output, export_paths, export_subnet, write_atomic

__all__ = [
    "check_output",
    "export_paths",
    "export_subnet",
    "write_atomic",
]
