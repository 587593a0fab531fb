-- MLflow keeps its registry in the same MySQL server, in a database of its own.
CREATE DATABASE IF NOT EXISTS mlflow;
GRANT ALL PRIVILEGES ON mlflow.* TO 'face'@'%';
