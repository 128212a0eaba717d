"""HTML building blocks of the reports: escaping, embedded figures, tables, the page template.

Pages come from ``noddi_bids/data/templates/report.html`` (:class:`string.Template`) with the
style sheet ``report.css`` inlined, so a report is one file that needs nothing else to display.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from string import Template

from noddi_bids import __version__
from noddi_bids.atomic import atomic_target

#: Media types of the embedded figures.
PNG, SVG = "image/png", "image/svg+xml"


def escape(value: object) -> str:
    """HTML-escape the text of ``value`` (quotes included)."""
    return html.escape(str(value), quote=True)


def data_uri(data: bytes | str, media_type: str) -> str:
    """Encode an image as a ``data:`` URI (base64), e.g. for ``<img src=...>``."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return f"data:{media_type};base64,{base64.b64encode(raw).decode('ascii')}"


def figure_html(data: bytes | str, media_type: str, caption: str, alt: str) -> str:
    """Build a ``<figure>`` embedding the image as a ``data:`` URI, with a plain-text caption."""
    return (
        f'<figure><img src="{data_uri(data, media_type)}" alt="{escape(alt)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def table_html(
    header: Sequence[str], rows: Iterable[Sequence[object]], numeric: Sequence[int] = ()
) -> str:
    """Build a ``<table>`` of plain-text cells; columns listed in ``numeric`` align right."""
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="number">{escape(cell)}</td>'
            if i in numeric
            else f"<td>{escape(cell)}</td>"
            for i, cell in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def definition_list(items: Iterable[tuple[str, str]], raw: bool = False) -> str:
    """Build a ``<dl class="provenance">``; values are escaped unless ``raw`` (already HTML)."""
    entries = "".join(
        f"<dt>{escape(key)}</dt><dd>{value if raw else escape(value)}</dd>" for key, value in items
    )
    return f'<dl class="provenance">{entries}</dl>'


def section(anchor: str, title: str, content: str, level: int = 2) -> str:
    """Build a ``<section>`` with an id (for the navigation bar) and a heading."""
    return f'<section id="{escape(anchor)}"><h{level}>{escape(title)}</h{level}>{content}</section>'


def notice(text: str) -> str:
    """Build a highlighted paragraph (missing inputs, skipped figures)."""
    return f'<p class="notice">{escape(text)}</p>'


def render_page(title: str, subtitle: str, nav: Sequence[tuple[str, str]], body: str) -> str:
    """Fill the page template.

    Parameters
    ----------
    title, subtitle : str
        Plain text of the page header.
    nav : sequence of (str, str)
        ``(href, label)`` pairs of the navigation bar.
    body : str
        HTML of the main content.

    Returns
    -------
    str
        The complete HTML document.
    """
    templates = resources.files("noddi_bids") / "data" / "templates"
    page = Template(templates.joinpath("report.html").read_text(encoding="utf-8"))
    links = "\n".join(
        f'<li><a href="{escape(href)}">{escape(label)}</a></li>' for href, label in nav
    )
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return page.substitute(
        title=escape(title),
        subtitle=escape(subtitle),
        nav=links,
        body=body,
        css=templates.joinpath("report.css").read_text(encoding="utf-8"),
        version=escape(__version__),
        generated=generated,
    )


def write_html(text: str, path: Path) -> Path:
    """Write an HTML document atomically (temporary name, then :func:`os.replace`)."""
    with atomic_target(Path(path)) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)
