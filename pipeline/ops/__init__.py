"""Operations: the command line, the demo, `make up`, the local Celery cluster, the Airflow environment."""
