"""The Airflow plugin loads from `plugins/` through Airflow's own plugin manager and registers the Daily Mix page."""

from __future__ import annotations


def test_plugin_loads_without_errors_and_registers_the_page_and_nav_entry():
    from airflow import plugins_manager

    plugins, errors = plugins_manager._get_plugins()
    assert not errors, errors
    plugin = next((p for p in plugins if p.name == "dailymix"), None)
    assert plugin is not None, f"plugins loaded: {[p.name for p in plugins]}"
    apps, _ = plugins_manager.get_fastapi_plugins()
    assert [a["url_prefix"] for a in apps if a["name"] == "Daily Mix"] == ["/dailymix"]
    views, _ = plugins_manager._get_ui_plugins()
    view = next(v for v in views if v["name"] == "Daily Mix")
    # The UI embeds `href` (relative to Airflow's base URL) at /plugin/<url_route>; it must point into the app.
    assert view["href"].rstrip("/") == "dailymix" and view["url_route"] == "daily-mix" and view["destination"] == "nav"
