# Shared by the benchmark scripts of bench/ (sourced, not run). The caller defines `die`.

# build_release ROOT BIN: builds the release node and load generator unless SKIP_BUILD=1,
# and checks that both binaries are in BIN.
build_release() {
  if [ "${SKIP_BUILD:-0}" != 1 ]; then
    (cd "$1" && cargo build --release -p perdure-node -p perdure-bench)
  fi
  [ -x "$2/perdure-node" ] && [ -x "$2/perdure-bench" ] || die "no release binaries in $2"
}

# The local PostgreSQL's postmaster pid (Debian's cluster), in PM_PID.
find_postmaster() {
  PM_PID="$(head -1 /var/run/postgresql/*-main.pid 2>/dev/null || true)"
  [ -n "$PM_PID" ] || die "no PostgreSQL postmaster pid in /var/run/postgresql"
}

# pg_ticks: CPU ticks of the postmaster, its reaped children and its live children (a
# process that ends while /proc is read is skipped).
pg_ticks() {
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v pm="$PM_PID" '{
      # Fields after the command name, which is in parentheses (no spaces for postgres).
      if ($1 == pm) t += $14 + $15 + $16 + $17;
      else if ($4 == pm) t += $14 + $15;
    } END { print t + 0 }'
}

# free_port: a free loopback TCP port.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
