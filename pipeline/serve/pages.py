"""The Daily Mix page of the Airflow UI: a user's mixes and the health of the loop, as server-rendered HTML.

View data comes from the same stores through the same functions the API and the CLI use
(`publish.user_mixes`, `monitor.metrics_history`); nothing here recomputes a mix or a metric.
Charts are inline SVG drawn here, so the page needs no JavaScript and no network. Airflow is
never imported: `plugins/dailymix_plugin.py` mounts `create_pages_app` and adds Airflow's
own access check as a dependency.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse
from jinja2 import Environment

from pipeline.core.config import Settings
from pipeline.core.io import read_json
from pipeline.core.paths import Layout

NIGHTLY_DAG = "dailymix_nightly"
HEALTH_DAYS = 60  # days of history charted
# Charts of the health section: title, y-axis format, and the metrics drawn (those present are drawn).
CHARTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Genre entropy (bits)", "{:.2f}", ("global_genre_entropy", "user_genre_entropy", "mean_mix_genre_entropy")),
    ("Discovery and exploration share", "{:.1%}", ("discovery_share", "explore_share")),
    ("Skip rate: exploit vs explore", "{:.1%}", ("skip_rate_exploit", "skip_rate_explore", "skip_rate")),
    ("Catalog coverage", "{:.1%}", ("coverage",)),
)
COUNT_METRICS = ("users", "mixes", "slots", "events")  # in the table, not charted
TRACKS_SHOWN = 5  # tracks of a mix shown open; the rest are one click away
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf")


@dataclass(frozen=True)
class Links:
    """Where the page links to. Empty `airflow` = the same origin as the page (it is served by Airflow)."""

    airflow: str = ""
    mlflow: str = "http://localhost:5000"
    data_docs: str = "data-docs/index.html"

    def airflow_run(self, run_id: str, dag_id: str = NIGHTLY_DAG) -> str:
        return f"{self.airflow.rstrip('/')}/dags/{dag_id}/runs/{quote(run_id, safe='')}"

    def model_version(self, model_name: str, version: str) -> str:
        return f"{self.mlflow.rstrip('/')}/#/models/{quote(model_name, safe='')}/versions/{quote(str(version))}"


# --- view data ------------------------------------------------------------------------------------------------


def published_dates(settings: Settings) -> list[str]:
    """Dates with a current publication, newest first."""
    from pipeline.publish.files import MANIFEST

    root = Layout(settings.home).published
    return sorted((p.parent.name.removeprefix("date=") for p in root.glob(f"date=*/{MANIFEST}")), reverse=True)


def mixes_view(settings: Settings, user_id: int, day: str | None, links: Links) -> dict[str, Any]:
    """A user's published mixes (the `mixes --json` contract) with track titles, artist names and lineage links."""
    from pipeline.publish.files import user_mixes

    payload = user_mixes(settings, user_id, day)
    names = _catalog_names(settings)
    for mix in payload["mixes"]:
        for track in mix["tracks"]:
            title, artist = names.get(track["track_id"], (f"track {track['track_id']}", f"artist {track['artist_id']}"))
            track.update(title=title, artist=artist)
        tracks = mix["tracks"]
        mix["discoveries"] = sum(t["discovery"] for t in tracks)
        mix["explored"] = sum(t["policy"] == "explore" for t in tracks)
        lineage = mix["lineage"]
        mix["links"] = {"model": links.model_version(settings.model_name, lineage["model_version"]),
                        "run": links.airflow_run(lineage["run_id"])}
    return payload


def _catalog_names(settings: Settings) -> dict[int, tuple[str, str]]:
    import pandas as pd

    from pipeline.core import schema as s
    path = Layout(settings.home).catalog
    if not path.exists():
        return {}
    catalog = pd.read_parquet(path, columns=[s.TRACK_ID, s.TITLE, s.ARTIST_NAME])
    return {int(t): (title, artist) for t, title, artist in catalog.itertuples(index=False)}


def alerts_by_day(settings: Settings) -> dict[str, list[dict[str, str]]]:
    """Every non-empty alert file (`monitoring/alerts/date=D/<source>.json`), by day."""
    out: dict[str, list[dict[str, str]]] = {}
    for path in sorted((Layout(settings.home).monitoring / "alerts").glob("date=*/*.json")):
        record = read_json(path)
        day = path.parent.name.removeprefix("date=")
        out.setdefault(day, []).extend({"source": record.get("source", path.stem), "message": str(message)}
                                       for message in record.get("alerts", []))
    return {day: alerts for day, alerts in out.items() if alerts}


def health_view(settings: Settings, until: str | None = None, days: int = HEALTH_DAYS) -> dict[str, Any]:
    """Charts of the monitoring time series up to `until` (all keys present are shown), with alerts marked."""
    from pipeline.monitor.health import metrics_history

    history = metrics_history(settings)
    if not history.empty and until:
        history = history.loc[history["date"] <= until]
    history = history.tail(days)
    alerts = {d: a for d, a in alerts_by_day(settings).items() if not until or d <= until}
    dates = history["date"].tolist() if not history.empty else []
    series = {key: [_number(v) for v in history[key]] for key in history.columns if key != "date"}
    numeric = {k: v for k, v in series.items() if any(x is not None for x in v)}
    charts = []
    charted = set(COUNT_METRICS)
    for title, fmt, keys in CHARTS:
        present = [k for k in keys if k in numeric]
        charted.update(keys)
        if present:
            charts.append({"title": title, "svg": line_chart(dates, {k: numeric[k] for k in present}, alerts, fmt)})
    for key in sorted(set(numeric) - charted):  # metrics added later still show up
        charts.append({"title": key, "svg": line_chart(dates, {key: numeric[key]}, alerts, "{:.3g}")})
    latest = {k: v[-1] for k, v in series.items()} if dates else {}
    return {"dates": dates, "charts": charts, "latest": latest,
            "alerts": sorted(((d, a) for d, a in alerts.items()), reverse=True)}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)


def skew_view(settings: Settings) -> dict[str, Any] | None:
    """The latest skew-gate result (`validation/results/date=D.json`) and whether its Data Docs exist."""
    results = sorted((Layout(settings.home).home / "validation" / "results").glob("date=*.json"))
    if not results:
        return None
    result = read_json(results[-1])
    return {**result, "data_docs_exist": data_docs_root(settings).joinpath("index.html").exists()}


def data_docs_root(settings: Settings) -> Path:
    return Layout(settings.home).home / "validation" / "gx" / "uncommitted" / "data_docs" / "local_site"


# --- charts -----------------------------------------------------------------------------------------------------


def line_chart(dates: Sequence[str], series: dict[str, Sequence[float | None]],
               alerts: dict[str, list[dict[str, str]]], fmt: str = "{:.2f}",
               width: int = 390, height: int = 180) -> str:
    """An SVG line chart over `dates` (one x step per day); gaps where a value is missing; alert days in red."""
    legend_rows = 1 + sum(len(name) for name in series) * 6 // max(1, width - 60)
    left, right, top, bottom = 52, 20, 10, 30 + 14 * legend_rows
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for vs in series.values() for v in vs if v is not None]
    if not dates or not values:
        return f'<svg class="chart" width="{width}" height="40" role="img"><text x="4" y="24">no data yet</text></svg>'
    low, high = min(values), max(values)
    pad = (high - low) * 0.1 or abs(high) * 0.1 or 0.05
    low, high = low - pad, high + pad

    def x(i: int) -> float:
        return left + (plot_w * i / (len(dates) - 1) if len(dates) > 1 else plot_w / 2)

    def y(v: float) -> float:
        return top + plot_h * (high - v) / (high - low)

    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img">',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>']
    for k in range(5):  # y grid and labels
        v = low + (high - low) * k / 4
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e6e6e6"/>'
                     f'<text x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="10">'
                     f'{_esc(fmt.format(v))}</text>')
    step = max(1, math.ceil(len(dates) / 6))
    for i, day in enumerate(dates):  # x labels
        if i % step == 0 or i == len(dates) - 1:
            parts.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 14}" text-anchor="middle" font-size="10">'
                         f'{_esc(day[5:])}</text>')
    for i, day in enumerate(dates):  # alert markers
        if day in alerts:
            text = "; ".join(f"[{a['source']}] {a['message']}" for a in alerts[day])
            parts.append(f'<g class="alert-marker"><title>{_esc(day)}: {_esc(text)}</title>'
                         f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{top}" y2="{top + plot_h}" stroke="#d62728" '
                         f'stroke-dasharray="4 3"/><path d="M{x(i) - 5:.1f},{top} h10 l-5,8 z" fill="#d62728"/></g>')
    for color, (name, vs) in zip(COLORS * 3, series.items(), strict=False):
        parts.append(_polyline(vs, x, y, color, name, dates, fmt))
    lx, ly = left, top + plot_h + 30
    for color, name in zip(COLORS * 3, series, strict=False):  # legend, wrapping to a new row when full
        item = 24 + 6 * len(name)
        if lx > left and lx + item > width:
            lx, ly = left, ly + 14
        parts.append(f'<rect x="{lx}" y="{ly - 8}" width="10" height="10" fill="{color}"/>'
                     f'<text x="{lx + 14}" y="{ly + 1}" font-size="10">{_esc(name)}</text>')
        lx += item
    parts.append("</svg>")
    return "".join(parts)


def _polyline(values: Sequence[float | None], x: Callable[[int], float], y: Callable[[float], float], color: str,
              name: str, dates: Sequence[str], fmt: str) -> str:
    out, run = [f'<g class="series" data-metric="{_esc(name)}">'], []
    for i, v in enumerate([*values, None]):
        if v is None:  # a gap ends the current segment
            if len(run) > 1:
                out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(run)}"/>')
            run = []
            continue
        run.append(f"{x(i):.1f},{y(v):.1f}")
        out.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{color}">'
                   f'<title>{_esc(dates[i])} {_esc(name)} = {_esc(fmt.format(v))}</title></circle>')
    out.append("</g>")
    return "".join(out)


def _esc(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


# --- the page ---------------------------------------------------------------------------------------------------

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Daily Mix</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 16px 24px; color: #222; }
h1 { font-size: 20px; margin: 0 0 8px; } h2 { font-size: 17px; margin: 24px 0 8px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 16px 0 4px; }
form { margin: 8px 0 12px; } input, select, button { font-size: 14px; padding: 3px 6px; }
table { border-collapse: collapse; margin: 4px 0 12px; } td, th { padding: 2px 8px; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f4f4f4; } .num { text-align: right; font-variant-numeric: tabular-nums; }
.tag { border-radius: 3px; padding: 0 5px; font-size: 12px; }
.discovery { background: #e3f2e1; } .familiar { background: #eee; } .explore { background: #fde8d0; }
.exploit { background: #e0ebf7; } .error { color: #b00020; } .ok { color: #2e7d32; font-weight: bold; }
.failed { color: #b00020; font-weight: bold; } .charts { display: flex; flex-wrap: wrap; gap: 8px 20px; }
.lineage { color: #555; font-size: 13px; } .alert { color: #b00020; }
.mixes { display: grid; grid-template-columns: repeat(auto-fill, minmax(600px, 1fr)); gap: 0 28px; }
.latest { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 2px 20px;
  font-size: 13px; } .latest b { float: right; font-weight: 600; font-variant-numeric: tabular-nums; }
summary { cursor: pointer; color: #1f5fa8; font-size: 13px; margin-bottom: 8px; }
table.tracks { font-size: 13px; width: 100%; } table.tracks td { white-space: nowrap; }
figure { margin: 0; } figcaption { font-weight: 600; }
</style></head><body>
<h1>Daily Mix</h1>
<form method="get" action="" id="lookup">
  <label>User id <input type="number" min="0" name="user" id="user" value="{{ user if user is not none else '' }}"
    required></label>
  <label>Date <select name="date" id="date">
    {% for d in dates %}<option value="{{ d }}"{% if d == day %} selected{% endif %}>{{ d }}</option>{% endfor %}
  </select></label>
  <button type="submit" id="show">Show mixes</button>
</form>
{% if not dates %}<p class="error">Nothing published yet under {{ home }}: run <code>make demo</code>
(or the <code>dailymix_nightly</code> DAG).</p>{% endif %}

{% if error %}<p class="error" id="mixes-error">{{ error }}</p>{% endif %}
{% if mixes %}
<section id="mixes">
<h2>User {{ mixes.user_id }} — {{ mixes.date }} — {{ mixes.mixes|length }} mix{{ '' if mixes.mixes|length == 1
  else 'es' }}</h2>
<div class="mixes">
{% for mix in mixes.mixes %}
<div class="mix" data-mix-id="{{ mix.mix_id }}">
<h3>{{ mix.title }} <small>({{ mix.tracks|length }} tracks, {{ mix.discoveries }} discoveries,
  {{ mix.explored }} explored)</small></h3>
<p class="lineage">model <a target="_top" href="{{ mix.links.model }}">{{ model_name }}
  v{{ mix.lineage.model_version }}</a> · index {{ mix.lineage.index_version }} · features
  {{ mix.lineage.feature_version }} · Airflow run <a target="_top" href="{{ mix.links.run }}">{{ mix.lineage.run_id
  }}</a></p>
{% macro track_rows(tracks) %}<table class="tracks"><tr><th>#</th><th>track</th><th>artist</th><th>genre</th>
  <th>mood</th><th></th><th>policy</th><th class="num">propensity</th></tr>
{% for t in tracks %}<tr class="track"><td class="num">{{ t.position + 1 }}</td><td>{{ t.title }}</td>
  <td>{{ t.artist }}</td><td>{{ t.genre }}</td><td>{{ t.mood }}</td>
  <td><span class="tag {{ 'discovery' if t.discovery else 'familiar' }}">{{ 'discovery' if t.discovery
    else 'familiar' }}</span></td>
  <td><span class="tag {{ t.policy }}">{{ t.policy }}</span></td><td class="num">{{ '%.3f'|format(t.propensity)
  }}</td></tr>
{% endfor %}</table>{% endmacro %}
{{ track_rows(mix.tracks[:shown]) }}
{% if mix.tracks|length > shown %}<details><summary>tracks {{ shown + 1 }}–{{ mix.tracks|length }}</summary>
{{ track_rows(mix.tracks[shown:]) }}</details>{% endif %}
</div>
{% endfor %}
</div>
</section>
{% endif %}

<section id="health">
<h2>Health of the loop{% if health.dates %} <small>({{ health.dates[0] }} … {{ health.dates[-1] }},
  {{ health.dates|length }} day{{ '' if health.dates|length == 1 else 's' }})</small>{% endif %}</h2>
{% if not health.dates %}<p>No monitoring rows yet: the <code>dailymix_monitor</code> DAG writes one per day.</p>
{% else %}
<div class="charts">{% for chart in health.charts %}<figure class="chart-box"><figcaption>{{ chart.title
  }}</figcaption>{{ chart.svg|safe }}</figure>{% endfor %}</div>
<h3>Latest values ({{ health.dates[-1] }})</h3>
<div class="latest">{% for k, v in health.latest.items() %}<div><span>{{ k }}</span> <b>{{ v if v is none or v is
  string else ('%.4g'|format(v)) }}</b></div>{% endfor %}</div>
{% endif %}
<h3>Alerts</h3>
{% if health.alerts %}<ul id="alerts">{% for d, alerts in health.alerts %}{% for a in alerts %}
<li class="alert">{{ d }} [{{ a.source }}] {{ a.message }}</li>{% endfor %}{% endfor %}</ul>
{% else %}<p id="alerts">No alerts.</p>{% endif %}
</section>

<section id="skew">
<h2>Skew gate</h2>
{% if skew %}<p>Latest: <b>{{ skew.date }}</b>, model v{{ skew.model_version }}:
  {% if skew.passed %}<span class="ok">passed</span>{% else %}<span class="failed">failed</span>{% endif %}
  {% if skew.data_docs_exist %}· <a href="{{ data_docs }}" target="_blank">Great Expectations Data Docs</a>{% endif
  %}</p>
{% if skew.problems %}<ul>{% for p in skew.problems %}<li class="alert">{{ p }}</li>{% endfor %}</ul>{% endif %}
{% else %}<p>No skew-gate result yet: the <code>dailymix_nightly</code> DAG's <code>skew_gate</code> task writes
  one per night.</p>{% endif %}
</section>
</body></html>
"""
_TEMPLATE = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True).from_string(PAGE)


def render_page(settings: Settings, links: Links, user: int | None = None, day: str | None = None) -> str:
    """The whole page: lookup form, the user's mixes (if a user is given), health, skew gate."""
    dates = published_dates(settings)
    day = day or (dates[0] if dates else None)
    mixes, error = None, None
    if user is not None:
        try:
            mixes = mixes_view(settings, user, day, links)
            if not mixes["mixes"]:
                mixes, error = None, f"No mixes published for user {user} on {day}."
        except LookupError as exc:
            error = str(exc)
    return _TEMPLATE.render(
        home=settings.home, dates=dates, day=day, user=user, mixes=mixes, error=error, model_name=settings.model_name,
        health=health_view(settings, until=day), skew=skew_view(settings), data_docs=links.data_docs,
        shown=TRACKS_SHOWN,
    )


def create_pages_app(settings: Callable[[], Settings], links: Callable[[Settings], Links] | None = None,
                     dependencies: Sequence[Any] = ()) -> FastAPI:
    """The page as a FastAPI app. `settings` is called per request (the data root may change under a long-lived
    server); `dependencies` guard every route (the Airflow plugin passes Airflow's own access check)."""
    app = FastAPI(title="Daily Mix pages", dependencies=[Depends(d) for d in dependencies], docs_url=None,
                  redoc_url=None, openapi_url=None)
    make_links = links or (lambda current: Links(mlflow=current.ui.mlflow_url, airflow=current.ui.airflow_url))

    @app.get("/", response_class=HTMLResponse)
    def page(user: int | None = Query(None, ge=0), date: str | None = Query(None, pattern=r"^\d{4}-\d{2}-\d{2}$")):
        current = settings()
        return HTMLResponse(render_page(current, make_links(current), user, date))

    @app.get("/data-docs/{path:path}")
    def data_docs(path: str) -> FileResponse:
        """The Great Expectations Data Docs of the data root (static files; nothing outside their folder)."""
        root = data_docs_root(settings()).resolve()
        target = (root / (path or "index.html")).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_relative_to(root) or not target.is_file():
            raise HTTPException(404, f"no Data Docs file {path!r}")
        return FileResponse(target)

    return app
