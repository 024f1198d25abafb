"""The docs extension turns reST math and roles into Markdown the site renders."""

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "rst_roles", Path(__file__).parents[2] / "docs" / "_ext" / "rst_roles.py"
)
rst_roles = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rst_roles)


def test_inline_math_and_roles():
    text = "Keep :math:`\\beta_i` blocks; see :func:`~bayes_nest.subnet.use` and :class:`Axis`."
    assert (
        rst_roles.convert(text) == "Keep $\\beta_i$ blocks; see `bayes_nest.subnet.use` and `Axis`."
    )


def test_math_block_becomes_display_math():
    text = "Before.\n\n.. math::\n\n    y = x + 1,\n    z = 2\n\nAfter."
    assert rst_roles.convert(text) == "Before.\n\n$$\ny = x + 1,\nz = 2\n$$\n\nAfter."


def test_math_block_on_directive_line_and_indented():
    text = "  .. math:: a = b\n     + c\n  Next."
    assert rst_roles.convert(text) == "  $$\n  a = b\n  + c\n  $$\n\n  Next."
