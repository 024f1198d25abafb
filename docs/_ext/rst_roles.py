"""Griffe extension: render the reST markup of the package's docstrings in the docs site.

Docstrings follow Pyro's house style (``:math:`...```, ``.. math::`` blocks, ``:func:`` and
``:class:`` roles). mkdocstrings renders Markdown, so this extension rewrites that markup into
what the site understands: ``$...$`` / ``$$...$$`` for MathJax (via ``pymdownx.arithmatex``) and
inline code for cross-reference roles. Docstrings in the source stay as they are.
"""

from __future__ import annotations

import re
import textwrap

import griffe

_INLINE_MATH = re.compile(r":math:`([^`]+)`")
_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|obj|exc|const|ref):`~?([^`]+)`")


def _math_blocks(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if not stripped.startswith(".. math::"):
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(stripped)]
        body = [stripped[len(".. math::") :].strip()]
        i += 1
        # The block continues over blank lines and lines indented deeper than the directive.
        while i < len(lines):
            nxt = lines[i]
            if nxt.strip() and (len(nxt) - len(nxt.lstrip())) <= len(indent):
                break
            body.append(nxt)
            i += 1
        while body and not body[-1].strip():
            body.pop()
        content = textwrap.dedent("\n".join(b for b in body if b.strip() or b == ""))
        content = "\n".join(part for part in content.split("\n") if part.strip())
        out.extend(
            [indent + "$$", *(indent + c.strip() for c in content.split("\n")), indent + "$$", ""]
        )
    return "\n".join(out)


def convert(text: str) -> str:
    """Rewrite reST math and cross-reference roles into Markdown the site renders."""
    text = _math_blocks(text)
    text = _INLINE_MATH.sub(lambda m: f"${m.group(1)}$", text)
    return _ROLE.sub(lambda m: f"`{m.group(1)}`", text)


class RstRoles(griffe.Extension):
    """Apply :func:`convert` to every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:  # noqa: D102
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
