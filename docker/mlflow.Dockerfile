# The MLflow tracking server with the MySQL driver its backend-store URI names
# (mysql+pymysql), installed at build time: the server starts without network access.
FROM ghcr.io/mlflow/mlflow:v3.17.2
# cryptography: PyMySQL needs it for MySQL 8's default caching_sha2_password over plain TCP;
# boto3: the artifact store is S3/MinIO (--artifacts-destination s3://..., deploy/k8s), and
# MLflow imports boto3 for s3:// URIs but does not depend on it
RUN pip install --no-cache-dir pymysql==1.1.2 cryptography==50.0.2 boto3==1.44.5
