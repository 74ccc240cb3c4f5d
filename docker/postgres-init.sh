#!/bin/bash
# One database per concern (Airflow metadata, MLflow tracking, published mixes), each with its own owner.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" <<-SQL
	CREATE USER airflow PASSWORD '${AIRFLOW_DB_PASSWORD}';
	CREATE DATABASE airflow OWNER airflow;
	CREATE USER mlflow PASSWORD '${MLFLOW_DB_PASSWORD}';
	CREATE DATABASE mlflow OWNER mlflow;
	CREATE USER dailymix PASSWORD '${DAILYMIX_DB_PASSWORD}';
	CREATE DATABASE dailymix OWNER dailymix;
SQL
