# A throwaway PostgreSQL server for the data-connector tests
# (host-api/tests/data.rs). Source it from the repo root (scripts/test.sh
# does), then:
#
#   ensure_postgres   # install if needed, start, seed; exports
#                     # RUNTIME_TEST_POSTGRES_URL, RUNTIME_REQUIRE_POSTGRES=1
#                     # and, when openssl made it a certificate,
#                     # RUNTIME_TEST_POSTGRES_TLS=1
#   stop_postgres     # stop the server ensure_postgres started
#
# The cluster lives in target/test-postgres (reused between runs), listens
# only on 127.0.0.1 (unix sockets inside that directory), and is owned by
# the `postgres` system user when running as root (initdb refuses root).
# Calling ensure_postgres twice reuses the running server.

# Where PostgreSQL's programs are: PATH first, then Debian's versioned
# directories (newest first); installs Debian's package when neither has
# them.
_pg_find_bin() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    # Through symlinks (/usr/local/bin/pg_ctl -> /usr/lib/postgresql/N/bin),
    # so psql and postgres are found beside it.
    dirname "$(readlink -f "$(command -v pg_ctl)")"
    return 0
  fi
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
    echo "$dir"
    return 0
  fi
  return 1
}

# Runs a command as the cluster's owner: `postgres` when we are root.
_pg_as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# A TCP port on 127.0.0.1 nobody listens on, from 55432 up.
_pg_free_port() {
  local port=55432
  while [ "$port" -lt 55532 ]; do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
    port=$((port + 1))
  done
  return 1
}

ensure_postgres() {
  local repo
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  PG_ROOT="$repo/target/test-postgres"
  local data="$PG_ROOT/data"

  if ! PG_BIN=$(_pg_find_bin); then
    echo "==> installing PostgreSQL (Debian package postgresql)"
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
      sudo apt-get update -qq
      sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    PG_BIN=$(_pg_find_bin) || {
      echo "error: PostgreSQL's initdb and pg_ctl are still missing after installing postgresql" >&2
      return 1
    }
  fi
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    echo "error: running as root needs the postgres system user (created by Debian's postgresql package)" >&2
    return 1
  fi

  mkdir -p "$PG_ROOT"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$PG_ROOT"
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    echo "==> creating a PostgreSQL cluster in $data"
    rm -rf "$data"
    _pg_as_owner "$PG_BIN/initdb" -D "$data" -U postgres --auth-local=trust \
      --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >"$PG_ROOT/initdb.log" 2>&1 || {
      cat "$PG_ROOT/initdb.log" >&2
      return 1
    }
  fi

  # TLS with a self-signed certificate, so the tests can check that the
  # connector negotiates TLS and refuses a certificate it cannot verify.
  if [ ! -f "$data/server.crt" ] && command -v openssl >/dev/null 2>&1; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=localhost" \
      -keyout "$data/server.key" -out "$data/server.crt" >/dev/null 2>&1 &&
      chmod 600 "$data/server.key"
    if [ "$(id -u)" = 0 ]; then
      chown postgres: "$data/server.key" "$data/server.crt" 2>/dev/null || true
    fi
  fi
  local ssl_opts=""
  if [ -f "$data/server.crt" ] && [ -f "$data/server.key" ]; then
    ssl_opts="-c ssl=on"
    export RUNTIME_TEST_POSTGRES_TLS=1
  fi

  local port=""
  if _pg_as_owner "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    port=$(cat "$PG_ROOT/port" 2>/dev/null || true)
  fi
  if [ -z "$port" ]; then
    port=$(_pg_free_port) || {
      echo "error: no free port on 127.0.0.1 between 55432 and 55531" >&2
      return 1
    }
    echo "$port" >"$PG_ROOT/port"
    echo "==> starting PostgreSQL on 127.0.0.1:$port"
    # Only loopback TCP; sockets in the cluster's own directory; no fsync
    # (test data is rebuilt from the seed every time).
    _pg_as_owner "$PG_BIN/pg_ctl" -D "$data" -l "$PG_ROOT/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$PG_ROOT -c fsync=off -c synchronous_commit=off -c full_page_writes=off $ssl_opts" \
      start >/dev/null || {
      tail -n 30 "$PG_ROOT/server.log" >&2
      return 1
    }
    PG_STARTED=1
  fi
  PG_PORT=$port
  local psql_bin="$PG_BIN/psql"
  [ -x "$psql_bin" ] || psql_bin=$(command -v psql) || {
    echo "error: psql not found (Debian package postgresql-client)" >&2
    return 1
  }

  # A fresh random password for the test role every time.
  local password
  password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
  local psql=(_pg_as_owner "$psql_bin" -X -q -v ON_ERROR_STOP=1 -h "$PG_ROOT" -p "$port" -U postgres)
  "${psql[@]}" -d postgres >/dev/null <<SQL || return 1
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'runtime') THEN
    CREATE ROLE runtime LOGIN;
  END IF;
END \$\$;
ALTER ROLE runtime PASSWORD '$password' CREATEDB;
SQL
  if ! "${psql[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'runtime_test'" | grep -q 1; then
    "${psql[@]}" -d postgres -c "CREATE DATABASE runtime_test OWNER runtime" >/dev/null || return 1
  fi

  export RUNTIME_TEST_POSTGRES_URL="postgres://runtime:$password@127.0.0.1:$port/runtime_test?sslmode=disable"
  export RUNTIME_REQUIRE_POSTGRES=1
  PGPASSWORD=$password "$psql_bin" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" \
    -U runtime -d runtime_test -f "$repo/tests/data/seed.sql" >/dev/null || return 1
  echo "==> PostgreSQL ready on 127.0.0.1:$port (database runtime_test, seeded)"
}

# Stops the server if ensure_postgres started it in this shell.
stop_postgres() {
  if [ "${PG_STARTED:-0}" = 1 ] && [ -n "${PG_ROOT:-}" ]; then
    _pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_ROOT/data" -m fast -w stop >/dev/null 2>&1 || true
    PG_STARTED=0
  fi
}
