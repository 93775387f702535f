"""Static HTML pages: a shared nav, tables, and Vega-Lite charts embedded with the Vega, Vega-Lite
and vega-embed JavaScript inline (from vl-convert), so a page opens from disk with no network."""

from __future__ import annotations

import functools
import html
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import altair as alt
import pandas as pd

from reuse.io import atomic_path

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;line-height:1.45}
nav{background:#1f2d3d;padding:.5em 1em;position:sticky;top:0;z-index:10}
nav a{color:#dce6f0;margin-right:1.1em;text-decoration:none;font-size:.92em}
nav a.here{color:#fff;font-weight:600;border-bottom:2px solid #8fc1e3}
main{max-width:1150px;margin:0 auto;padding:1em 1.5em 3em}
h1{font-size:1.5em;margin-top:.4em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
h3{font-size:1.05em;margin-top:1.4em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f5f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.missing td,tr.failed td,tr.incomplete td{background:#fde8e6}tr.partial td{background:#fff6dd}
.better{color:#1a7f37;font-weight:600}.worse{color:#c0392b;font-weight:600}
.note{color:#555;font-size:.9em}.chart{margin:.8em 0 1.4em}.badge{display:inline-block;padding:0 .45em;
border-radius:.6em;font-size:.8em;background:#eef}.badge.missing,.badge.failed{background:#f9d6d2}
.scroll{overflow-x:auto;max-width:100%}
details summary{cursor:pointer;color:#1f4e79}
"""


@functools.lru_cache(maxsize=1)
def vega_bundle() -> str:
    """vega, vega-lite and vega-embed as one inline script (defines ``vegaEmbed``), from vl-convert.

    Bundling takes a few seconds, so the result is kept in ``$XDG_CACHE_HOME/reuse`` (default
    ``~/.cache/reuse``) under the vl-convert and Vega-Lite versions; an unwritable cache is skipped."""
    import os

    import vl_convert as vlc
    from altair.utils._importers import vl_version_for_vl_convert

    vl = vl_version_for_vl_convert()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reuse" / \
        f"vega-embed-bundle-vlc{vlc.__version__}-{vl}.js"
    try:
        text = cache.read_text(encoding="utf-8")
        if text.rstrip().endswith("// end of bundle"):
            return text
    except OSError:
        pass
    text = vlc.javascript_bundle(vl_version=vl) + "\n// end of bundle\n"
    try:
        with atomic_path(cache, suffix=".js") as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError:
        pass
    return text


class Page:
    """One report page: add headings, paragraphs, tables and charts, then :meth:`write`."""

    def __init__(self, filename: str, title: str):
        self.filename, self.title = filename, title
        self.parts: list[str] = []
        self.specs: dict[str, dict] = {}
        self.data: dict[str, Any] = {}

    def h(self, text: str, level: int = 2, id: str | None = None) -> "Page":
        ident = f' id="{html.escape(id)}"' if id else ""
        self.parts.append(f"<h{level}{ident}>{html.escape(text)}</h{level}>")
        return self

    def p(self, text: str, cls: str = "", raw: bool = False) -> "Page":
        body = text if raw else html.escape(text)
        self.parts.append(f'<p{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}>{body}</p>')
        return self

    def raw(self, markup: str) -> "Page":
        self.parts.append(markup)
        return self

    def chart(self, chart: alt.TopLevelMixin, name: str, caption: str = "") -> "Page":
        ident = f"chart-{len(self.specs)}-{_slug(name)}"
        self.specs[ident] = chart.to_dict(validate=False)  # the browser test renders every chart
        cap = f'<p class="note">{html.escape(caption)}</p>' if caption else ""
        self.parts.append(f'<div class="chart" id="{ident}" data-name="{html.escape(name)}"></div>{cap}')
        return self

    def table(self, df: pd.DataFrame, columns: dict[str, str] | None = None, row_class: str | None = None,
              formats: dict[str, Any] | None = None, max_rows: int | None = None) -> "Page":
        self.parts.append(table_html(df, columns, row_class, formats, max_rows))
        return self

    def json_block(self, ident: str, obj: Any) -> "Page":
        """Machine-readable data in the page (``<script type="application/json" id=...>``)."""
        self.data[ident] = obj
        return self

    def render(self, nav: Sequence[tuple[str, str]]) -> str:
        links = "".join(f'<a href="{html.escape(href)}"{" class=" + chr(34) + "here" + chr(34) if href == self.filename else ""}>'
                        f"{html.escape(text)}</a>" for href, text in nav)
        blocks = "".join(
            f'<script type="application/json" id="{html.escape(k)}">{_json(v)}</script>' for k, v in self.data.items())
        embed = ""
        if self.specs:
            embed = (f"<script>\n{vega_bundle()}\n</script>\n<script>\nconst SPECS = {_json(self.specs)};\n"
                     "for (const [id, spec] of Object.entries(SPECS)) {\n"
                     "  vegaEmbed('#' + id, spec, {renderer: 'svg', actions: false})"
                     ".catch(e => console.error('chart ' + id + ': ' + e));\n}\n</script>")
        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{html.escape(self.title)} · reuse report</title><style>{CSS}</style></head>\n"
                f"<body><nav>{links}</nav><main><h1>{html.escape(self.title)}</h1>\n"
                + "\n".join(self.parts) + f"\n</main>{blocks}\n{embed}\n</body></html>\n")

    def write(self, folder: Path, nav: Sequence[tuple[str, str]]) -> Path:
        path = Path(folder) / self.filename
        with atomic_path(path, suffix=".html") as tmp:
            tmp.write_text(self.render(nav), encoding="utf-8")
        return path


def _json(obj: Any) -> str:
    # "</" would end the script element early
    return json.dumps(obj, default=_default, allow_nan=False).replace("</", "<\\/")


def _default(o):
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in s).strip("-").lower()[:40]


def fmt(v: Any, how: Any = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return ""
    if callable(how):
        return how(v)
    if how == "pct":
        return f"{100 * float(v):.2f}%"
    if how == "g":
        return f"{float(v):.3g}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table_html(df: pd.DataFrame, columns: dict[str, str] | None = None, row_class: str | None = None,
               formats: dict[str, Any] | None = None, max_rows: int | None = None) -> str:
    if df is None or df.empty:
        return '<p class="note">(none)</p>'
    columns = columns or {c: c for c in df.columns}
    columns = {k: v for k, v in columns.items() if k in df.columns}
    formats = formats or {}
    head = "".join(f"<th>{html.escape(v)}</th>" for v in columns.values())
    body = []
    for i, r in enumerate(df.to_dict("records")):
        if max_rows is not None and i >= max_rows:
            body.append(f'<tr><td colspan="{len(columns)}" class="note">… {len(df) - max_rows} more rows in '
                        f"summary.csv</td></tr>")
            break
        cls = f' class="{html.escape(str(r.get(row_class, "")))}"' if row_class else ""
        cells = []
        for c in columns:
            v = r.get(c)
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            text = html.escape(fmt(v, formats.get(c)))
            if c == "verdict" and v in ("better", "worse"):
                text = f'<span class="{v}">{text}</span>'
            cells.append(f'<td{" class=" + chr(34) + "num" + chr(34) if num else ""}>{text}</td>')
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def links(items: Iterable[tuple[str, str]]) -> str:
    return ", ".join(f'<a href="{html.escape(h)}">{html.escape(t)}</a>' for h, t in items)
