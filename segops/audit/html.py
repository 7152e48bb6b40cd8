"""The audit page: ``index.html`` (every table, escaped, and the pictures) and ``summary.json`` (the
numbers), both written atomically."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from segops.audit.tables import Picture, Section
from segops.outputs.atomic import atomic_write_text

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1240px; padding: 0 1em; color: #222 }
table { border-collapse: collapse; margin: .4em 0 1.6em } th, td { border: 1px solid #ccc; padding: 3px 8px;
text-align: left; vertical-align: top; font-size: 13px } th { background: #f2f2f2 }
.note { color: #555; font-size: 13px }
figure { display: inline-block; margin: 0 1em 1em 0; vertical-align: top } figcaption { font-size: 12px; color: #555 }
img { max-width: 560px; border: 1px solid #ddd } code { font-size: 12px }
</style></head>
<body>
<h1>{{ title }}</h1>
<p class="note">{{ subtitle }}<br>written {{ created }}{% if tracking_uri %}
from <code>{{ tracking_uri }}</code>{% endif %};
the numbers are in <a href="summary.json">summary.json</a>.</p>
{% for s in sections %}
{% if loop.index0 == lead %}{{ pictures(plots) }}{% endif %}
<h2>{{ s.title }}</h2>
{% if s.note %}<p class="note">{{ s.note }}</p>{% endif %}
{% if s.rows %}<table><thead><tr>{% for c in s.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead><tbody>
{% for row in s.rows %}<tr>{% for v in row %}<td>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>{% endif %}
{% endfor %}
{% if lead >= sections|length %}{{ pictures(plots) }}{% endif %}
{{ pictures(others) }}
</body></html>
"""
_PICTURES = """{% macro pictures(groups) %}{% for group, pics in groups %}
<h2>{{ group }}</h2>
{% for p in pics %}<figure><a href="{{ p.path }}"><img src="{{ p.path }}" alt="{{ p.caption }}"></a>
<figcaption>{{ p.caption }}</figcaption></figure>{% endfor %}
{% endfor %}{% endmacro %}
"""


def render_html(
    title: str, subtitle: str, sections: list[Section], pictures: list[Picture], summary: dict[str, Any], lead: int = 2
) -> str:
    """The report page; every value is HTML-escaped (jinja2 autoescape). The "Plots" group follows the
    first ``lead`` sections; other picture groups (overlays) come last."""
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    groups: dict[str, list[Picture]] = {}
    for picture in pictures:
        groups.setdefault(picture.group, []).append(picture)
    plots = [(g, p) for g, p in groups.items() if g == "Plots"]
    others = [(g, p) for g, p in groups.items() if g != "Plots"]
    return env.from_string(_PICTURES + _PAGE).render(
        title=title,
        subtitle=subtitle,
        sections=sections,
        plots=plots,
        others=others,
        lead=lead,
        created=summary.get("created", ""),
        tracking_uri=summary.get("tracking_uri", ""),
    )


def write_page(
    folder: Path, title: str, subtitle: str, sections: list[Section], pictures: list[Picture], summary: dict[str, Any]
) -> Path:
    """Write ``summary.json`` and ``index.html`` (atomically, the page last); returns the page's path."""
    summary = json_safe(summary | {"files": sorted(["index.html", "summary.json", *(p.path for p in pictures)])})
    atomic_write_text(folder / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    return atomic_write_text(folder / "index.html", render_html(title, subtitle, sections, pictures, summary))


def json_safe(value: Any) -> Any:
    """NaN → None, numpy scalars → Python, recursively (``summary.json`` is strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    return value
