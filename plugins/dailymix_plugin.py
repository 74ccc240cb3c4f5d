"""Airflow plugin: the "Daily Mix" entry of the Airflow UI.

Wiring only. The page (a user's mixes, the loop's health, the skew gate) is `pipeline.serve.pages`, a FastAPI
app over the data root that reads the stores through the same functions as the API. Airflow mounts it at
/dailymix and shows it in its navigation as an embedded view; every request goes through Airflow's own
authentication and needs read access to DAGs (the page shows what the DAGs produced).
"""

from __future__ import annotations

from typing import ClassVar

from airflow.api_fastapi.core_api.security import requires_access_dag
from airflow.plugins_manager import AirflowPlugin

from pipeline.core.config import load_settings
from pipeline.serve.pages import create_pages_app

URL_PREFIX = "/dailymix"

app = create_pages_app(load_settings, dependencies=[requires_access_dag("GET")])


class DailyMixPlugin(AirflowPlugin):
    name = "dailymix"
    fastapi_apps: ClassVar[list[dict]] = [{"app": app, "url_prefix": URL_PREFIX, "name": "Daily Mix"}]
    # An embedded view in the navigation: the UI shows `href` in an iframe at /plugin/daily-mix.
    external_views: ClassVar[list[dict]] = [
        {"name": "Daily Mix", "href": "dailymix/", "url_route": "daily-mix", "destination": "nav",
         "nav_top_level": True},
    ]
