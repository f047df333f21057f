# Sourced by the project's scripts: puts PostgreSQL's server programs on PATH.
if ! command -v initdb >/dev/null 2>&1; then
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && PATH="$d:$PATH"
  done
  export PATH
fi

# Runs a PostgreSQL server program as its owner: `postgres` when we are root (the server
# refuses root), else ourselves.
as_owner() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
