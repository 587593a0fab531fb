#!/bin/bash
# Stands in for the mysql:8.4 image's entrypoint with this machine's MariaDB: what the image
# documents (hub.docker.com/_/mysql, "Environment Variables", "Initializing a fresh
# instance") and does (docker-library/mysql 8.4/docker-entrypoint.sh: docker_setup_db,
# docker_process_init_files) on an empty /var/lib/mysql:
#   create root@'%' with MYSQL_ROOT_PASSWORD, the database MYSQL_DATABASE, the user
#   MYSQL_USER/MYSQL_PASSWORD with all rights on it, then run /docker-entrypoint-initdb.d/*
#   in order (*.sh run if executable, else sourced; *.sql piped to the client) against a
#   server on the socket only, stop it, and start the server for the network.
set -euo pipefail
DATADIR=/var/lib/mysql
SOCKET=/run/mysqld/mysqld.sock
SERVER=(mariadbd --no-defaults --user=mysql --datadir="$DATADIR" --socket="$SOCKET"
        --pid-file=/run/mysqld/mysqld.pid --skip-name-resolve)
install -d -o mysql -g mysql /run/mysqld

if [ ! -d "$DATADIR/mysql" ]; then
  mariadb-install-db --no-defaults --user=mysql --datadir="$DATADIR" \
    --auth-root-authentication-method=normal --skip-test-db >/dev/null
  "${SERVER[@]}" --skip-networking &
  pid=$!
  for _ in $(seq 1 60); do
    mysqladmin --socket="$SOCKET" -uroot ping >/dev/null 2>&1 && break
    sleep 0.5
  done
  mysql --protocol=socket --socket="$SOCKET" -uroot <<SQL
ALTER USER 'root'@'localhost' IDENTIFIED BY '${MYSQL_ROOT_PASSWORD}';
CREATE USER 'root'@'%' IDENTIFIED BY '${MYSQL_ROOT_PASSWORD}';
GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;
CREATE DATABASE IF NOT EXISTS \`${MYSQL_DATABASE}\`;
CREATE USER '${MYSQL_USER}'@'%' IDENTIFIED BY '${MYSQL_PASSWORD}';
GRANT ALL ON \`${MYSQL_DATABASE}\`.* TO '${MYSQL_USER}'@'%';
SQL
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh) if [ -x "$f" ]; then "$f"; else . "$f"; fi ;;
      *.sql) MYSQL_PWD="$MYSQL_ROOT_PASSWORD" mysql --protocol=socket --socket="$SOCKET" -uroot < "$f" ;;
    esac
  done
  mysqladmin --socket="$SOCKET" -uroot -p"$MYSQL_ROOT_PASSWORD" shutdown
  wait "$pid"
fi
exec "${SERVER[@]}" --bind-address=0.0.0.0 --port=3306
