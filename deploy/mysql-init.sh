#!/bin/sh
# First start of the mysql service: the image's entrypoint runs every file of
# /docker-entrypoint-initdb.d after creating MYSQL_DATABASE and MYSQL_USER. MLflow keeps its
# registry in the same server, in a database of its own, owned by the same MYSQL_USER
# (a .sh file, not .sql: the image pipes .sql files through unexpanded, and the user name
# comes from the environment).
set -eu
mysql --protocol=socket -uroot -p"$MYSQL_ROOT_PASSWORD" <<SQL
CREATE DATABASE IF NOT EXISTS mlflow;
GRANT ALL PRIVILEGES ON mlflow.* TO '$MYSQL_USER'@'%';
SQL
