-- Runs once, when the postgres service starts on an empty data volume (/docker-entrypoint-initdb.d).
-- POSTGRES_DB creates the Prefect database; MLflow's backend store gets its own.
CREATE DATABASE mlflow;
