"""A small, safe Markdown-to-HTML converter for the Markdown the report itself writes.

Supported: ``#``-``####`` headings, paragraphs, ``-`` bullet lists, pipe tables, ``>`` quotes,
``**bold**``, ```code``` and backslash escapes. Every piece of text is HTML-escaped before any
markup is added, so raw HTML in the source (an input containing ``<script>``) always comes out as
text: there is no raw-HTML pass-through, no links and no images. :func:`md_escape` makes data text
safe to put *into* that Markdown (table cells, quotes) without it turning into markup.

Out of scope: the rest of CommonMark (nested lists, numbered lists, links, emphasis with ``_``).
"""

from __future__ import annotations

import html
import re

__all__ = ["markdown_to_html", "md_escape", "shift_headings"]

_ESCAPABLE = r"\\`*|\[\]<>#"
_INLINE = re.compile(rf"\\([{_ESCAPABLE}])|`([^`]+)`|\*\*(.+?)\*\*")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_RULE_ROW = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


def md_escape(text: object, *, limit: int | None = None) -> str:
    """Data text as one Markdown-inert line: whitespace collapsed, truncated to ``limit`` characters."""
    flat = " ".join(str(text).split())
    if limit is not None and len(flat) > limit:
        flat = flat[: max(limit - 1, 1)].rstrip() + "…"
    # '<' (tags), backslash, '`', '*', '|' (table cells) and a ']' that would close a link; '#' and '>' only
    # matter at a line start, where data never is
    return re.sub(r"([\\`*|<]|\](?=[(\[:]))", r"\\\1", flat)


def shift_headings(markdown: str, by: int) -> str:
    """Demote (``by`` > 0) every heading, capped at level 6: to embed one document in another."""
    return re.sub(r"^(#{1,6})(?=\s)", lambda m: "#" * min(6, len(m.group(1)) + by), markdown, flags=re.M)


def _inline(text: str) -> str:
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        if m.group(1) is not None:
            out.append(html.escape(m.group(1)))
        elif m.group(2) is not None:
            out.append(f"<code>{html.escape(_unescape(m.group(2)))}</code>")
        else:
            out.append(f"<strong>{_inline(m.group(3))}</strong>")
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _unescape(text: str) -> str:
    return re.sub(rf"\\([{_ESCAPABLE}])", r"\1", text)


def _cells(row: str) -> list[str]:
    row = row.strip()
    row = row[1:] if row.startswith("|") else row
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return [c.strip() for c in _CELL_SPLIT.split(row)]


def _table(lines: list[str]) -> str:
    head, body = _cells(lines[0]), [_cells(r) for r in lines[2:]]
    header = "".join(f"<th>{_inline(c)}</th>" for c in head)
    out = ['<div class="scroll"><table>', f"<thead><tr>{header}</tr></thead>", "<tbody>"]
    out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in body]
    return "\n".join(out + ["</tbody>", "</table></div>"])


def _blocks(lines: list[str]) -> list[tuple[str, list[str]]]:
    """Group lines into (kind, lines) blocks: heading, table, list, quote, paragraph."""
    blocks: list[tuple[str, list[str]]] = []
    for line in lines:
        s = line.strip()
        if not s:
            blocks.append(("blank", []))
            continue
        kind = ("heading" if _HEADING.match(s) else "table" if s.startswith("|") else
                "list" if s.startswith(("- ", "* ")) else "quote" if s.startswith(">") else "para")
        if line.startswith("  ") and blocks and blocks[-1][0] == "list":
            blocks[-1][1][-1] += " " + s  # a continuation line of a list item
        elif kind != "heading" and blocks and blocks[-1][0] == kind:
            blocks[-1][1].append(s)
        else:
            blocks.append((kind, [s]))
    return [b for b in blocks if b[0] != "blank"]


def _block_html(kind: str, lines: list[str]) -> str:
    if kind == "heading":
        m = _HEADING.match(lines[0])
        assert m is not None
        level = len(m.group(1))
        return f"<h{level}>{_inline(m.group(2))}</h{level}>"
    if kind == "table" and len(lines) >= 2 and _RULE_ROW.match(lines[1]):
        return _table(lines)
    if kind == "list":
        return "<ul>\n" + "\n".join(f"<li>{_inline(s[2:])}</li>" for s in lines) + "\n</ul>"
    if kind == "quote":
        return "<blockquote>" + "<br>".join(_inline(s[1:].strip()) for s in lines) + "</blockquote>"
    return "<p>" + " ".join(_inline(s) for s in lines) + "</p>"


def markdown_to_html(markdown: str) -> str:
    """HTML for the supported Markdown subset; all text escaped (see the module docstring)."""
    return "\n".join(_block_html(kind, lines) for kind, lines in _blocks(markdown.splitlines()))
