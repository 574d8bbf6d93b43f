#!/usr/bin/env bash
# Builds the two images of the compose setup from local artifacts only (no registry):
#
#   perdure-node:local      FROM scratch: the release `perdure-node` binary, the shared
#                           libraries `ldd` lists for it (with the dynamic loader), /tmp, a
#                           data directory and a non-root user.
#   perdure-postgres:local  FROM scratch: this machine's PostgreSQL 15 (postgres, initdb,
#                           pg_ctl, pg_isready, psql), their libraries and extension modules,
#                           /usr/share/postgresql/15, the time zone database, a static busybox
#                           as /bin/sh and docker/postgres/entrypoint.sh.
#
# Usage: docker/build-images.sh [--skip-cargo] [--node-only | --postgres-only]
# Environment: PERDURE_NODE_IMAGE, PERDURE_POSTGRES_IMAGE (image names),
#              PG_VERSION (default 15), BUSYBOX (default /bin/busybox),
#              CARGO_TARGET_DIR (default <repo>/target), PERDURE_NODE_BIN (stage this
#              binary instead of building perdure-node: your own node binary),
#              PERDURE_DOCKER_STAGE (staging folder, default <repo>/target/docker).
# Idempotent: every run restages the build contexts under target/docker/ from scratch and
# re-tags the images.
set -euo pipefail

die() { echo "build-images: error: $*" >&2; exit 1; }
log() { echo "build-images: $*" >&2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODE_IMAGE="${PERDURE_NODE_IMAGE:-perdure-node:local}"
PG_IMAGE="${PERDURE_POSTGRES_IMAGE:-perdure-postgres:local}"
PG_VERSION="${PG_VERSION:-15}"
PG_BIN="/usr/lib/postgresql/${PG_VERSION}/bin"
PG_LIB="/usr/lib/postgresql/${PG_VERSION}/lib"
PG_SHARE="/usr/share/postgresql/${PG_VERSION}"
BUSYBOX="${BUSYBOX:-/bin/busybox}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
STAGE="${PERDURE_DOCKER_STAGE:-$ROOT/target/docker}"
# Fixed ids inside the images (the data volumes are owned by them).
NODE_UID=10001
PG_UID=999

skip_cargo=0 build_node=1 build_pg=1
for arg in "$@"; do
  case "$arg" in
    --skip-cargo) skip_cargo=1 ;;
    --node-only) build_pg=0 ;;
    --postgres-only) build_node=0 ;;
    -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$arg' (try --help)" ;;
  esac
done

for tool in docker ldd ldconfig; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is not installed"
done
docker info >/dev/null 2>&1 || die "cannot talk to the Docker engine (is it running, may this user use it?)"

# copy_file SRC ROOTFS: copies SRC (symlinks followed) to the same path under ROOTFS.
copy_file() {
  local src="$1" rootfs="$2"
  [ -e "$src" ] || die "missing file $src"
  mkdir -p "$rootfs$(dirname "$src")"
  cp -L --preserve=mode "$src" "$rootfs$src"
}

# stage_libs ROOTFS ELF...: copies every shared library `ldd` lists for the ELF files (and the
# dynamic loader) to the same paths under ROOTFS. Fails if a library is not found.
stage_libs() {
  local rootfs="$1"; shift
  local elf out line lib
  for elf in "$@"; do
    out="$(ldd "$elf" 2>&1)" || die "ldd $elf failed: $out"
    if grep -q "not found" <<<"$out"; then
      die "ldd $elf: missing libraries:"$'\n'"$(grep 'not found' <<<"$out")"
    fi
    while IFS= read -r line; do
      lib=""
      case "$line" in
        *"=> /"*) lib="${line#*=> }"; lib="${lib%% (*}" ;;
        *"statically linked"*|*"linux-vdso"*) continue ;;
        */*) lib="${line#"${line%%/*}"}"; lib="${lib%% (*}" ;; # the loader: "/lib64/ld-... (0x..)"
      esac
      [ -n "$lib" ] || continue
      [ -e "$rootfs$lib" ] || copy_file "$lib" "$rootfs"
    done <<<"$out"
  done
}

# finish_rootfs ROOTFS: /tmp, an ld.so cache for the staged libraries, nsswitch.conf.
finish_rootfs() {
  local rootfs="$1"
  mkdir -p "$rootfs/tmp" "$rootfs/etc"
  chmod 1777 "$rootfs/tmp"
  # Name lookup: glibc >= 2.34 has the files and dns NSS modules built in; Docker mounts
  # /etc/hosts and /etc/resolv.conf into the container.
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
  find "$rootfs" -name '*.so*' -type f -printf '%h\n' | sed "s|^$rootfs||" | sort -u \
    >"$rootfs/etc/ld.so.conf"
  ldconfig -r "$rootfs" || die "ldconfig -r $rootfs failed"
}

build_node_image() {
  local bin="${PERDURE_NODE_BIN:-$TARGET_DIR/release/perdure-node}"
  if [ "$skip_cargo" = 0 ] && [ -z "${PERDURE_NODE_BIN:-}" ]; then
    command -v cargo >/dev/null 2>&1 || die "'cargo' is not installed"
    log "cargo build --release -p perdure-node"
    (cd "$ROOT" && cargo build --release -p perdure-node) || die "cargo build failed"
  fi
  [ -x "$bin" ] || die "$bin not found or not executable (PERDURE_NODE_BIN, or run without --skip-cargo)"
  local ctx="$STAGE/node" rootfs="$STAGE/node/rootfs"
  rm -rf "$ctx"; mkdir -p "$rootfs/usr/local/bin" "$ctx/data"
  cp "$bin" "$rootfs/usr/local/bin/perdure-node"
  # Debug information is of no use in the image and is most of a debug build's size (the
  # container tests stage the debug binary): a smaller build context builds faster.
  if command -v strip >/dev/null 2>&1; then
    strip --strip-debug "$rootfs/usr/local/bin/perdure-node" || die "strip failed"
  fi
  stage_libs "$rootfs" "$bin"
  mkdir -p "$rootfs/etc"
  printf 'root:x:0:0:root:/:/nonexistent\nperdure:x:%d:%d:Perdure node:/var/lib/perdure:/nonexistent\n' \
    "$NODE_UID" "$NODE_UID" >"$rootfs/etc/passwd"
  printf 'root:x:0:\nperdure:x:%d:\n' "$NODE_UID" >"$rootfs/etc/group"
  finish_rootfs "$rootfs"
  cp "$ROOT/docker/node/Dockerfile" "$ctx/Dockerfile"
  log "docker build -t $NODE_IMAGE ($(du -sh "$rootfs" | cut -f1) staged)"
  docker build -q -t "$NODE_IMAGE" --build-arg "UID=$NODE_UID" "$ctx" >/dev/null \
    || die "docker build of $NODE_IMAGE failed"
  log "built $NODE_IMAGE"
}

build_postgres_image() {
  [ -x "$PG_BIN/postgres" ] || die "PostgreSQL $PG_VERSION not found at $PG_BIN (apt-get install postgresql-$PG_VERSION)"
  [ -d "$PG_SHARE" ] || die "$PG_SHARE not found"
  [ -x "$BUSYBOX" ] || die "$BUSYBOX not found (apt-get install busybox-static)"
  if ldd "$BUSYBOX" >/dev/null 2>&1; then
    die "$BUSYBOX is dynamically linked; install busybox-static"
  fi
  local ctx="$STAGE/postgres" rootfs="$STAGE/postgres/rootfs"
  rm -rf "$ctx"; mkdir -p "$rootfs/bin" "$rootfs/etc" "$ctx/data"
  local bins=() b m
  for b in postgres initdb pg_ctl pg_isready psql; do
    copy_file "$PG_BIN/$b" "$rootfs"
    bins+=("$PG_BIN/$b")
  done
  # Extension and encoding modules (initdb loads plpgsql, dict_snowball, the conversions);
  # not the LLVM JIT (jit is off in the image).
  local mods=()
  for m in "$PG_LIB"/*.so; do
    case "$(basename "$m")" in llvmjit*.so) continue ;; esac
    copy_file "$m" "$rootfs"
    mods+=("$m")
  done
  stage_libs "$rootfs" "${bins[@]}" "${mods[@]}"
  mkdir -p "$rootfs/usr/share"
  cp -a "$PG_SHARE" "$rootfs/usr/share/postgresql-tmp"
  mkdir -p "$rootfs/usr/share/postgresql"
  mv "$rootfs/usr/share/postgresql-tmp" "$rootfs$PG_SHARE"
  # Debian's PostgreSQL uses the system time zone database.
  cp -a /usr/share/zoneinfo "$rootfs/usr/share/zoneinfo"
  cp "$BUSYBOX" "$rootfs/bin/busybox"
  for b in sh cat chmod echo id ls mkdir mktemp printf rm sleep; do ln -s busybox "$rootfs/bin/$b"; done
  printf 'root:x:0:0:root:/root:/bin/sh\npostgres:x:%d:%d:PostgreSQL:/var/lib/postgresql:/bin/sh\n' \
    "$PG_UID" "$PG_UID" >"$rootfs/etc/passwd"
  printf 'root:x:0:\npostgres:x:%d:\n' "$PG_UID" >"$rootfs/etc/group"
  mkdir -p "$rootfs/usr/local/bin"
  cp "$ROOT/docker/postgres/entrypoint.sh" "$rootfs/usr/local/bin/docker-entrypoint.sh"
  chmod 755 "$rootfs/usr/local/bin/docker-entrypoint.sh"
  finish_rootfs "$rootfs"
  cp "$ROOT/docker/postgres/Dockerfile" "$ctx/Dockerfile"
  log "docker build -t $PG_IMAGE ($(du -sh "$rootfs" | cut -f1) staged)"
  docker build -q -t "$PG_IMAGE" --build-arg "UID=$PG_UID" --build-arg "PG_VERSION=$PG_VERSION" "$ctx" >/dev/null \
    || die "docker build of $PG_IMAGE failed"
  log "built $PG_IMAGE"
}

if [ "$build_node" = 1 ]; then build_node_image; fi
if [ "$build_pg" = 1 ]; then build_postgres_image; fi
log "done: $(docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^(${NODE_IMAGE}|${PG_IMAGE}) " | tr '\n' ' ')"
