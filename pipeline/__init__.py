"""Daily Mix: the domain library. Never imports Airflow; every DAG task calls into here."""

__version__ = "0.1.0"
