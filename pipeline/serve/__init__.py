"""Serving: the HTTP API (intake, online last-10, refresh) and the Daily Mix page of the Airflow UI."""
