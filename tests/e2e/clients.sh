# shellcheck shell=bash
# Berth end-to-end client library.
#
# Source this file from a bash test script (it is `set -euo pipefail` friendly:
# every function returns non-zero on failure and never relies on unset vars):
#
#   source tests/e2e/clients.sh
#   e2e_setup 127.0.0.1:5000          # registry host:port under test
#   trap e2e_teardown EXIT
#   make_test_images                  # OCI layout + docker-archive tars, no network
#   start_dockerd                     # private dockerd + its own containerd
#   e2e_docker load -i "$E2E_IMG/small.docker.tar"
#   ...
#
# Everything (daemon state, sockets, image stores, config files) lives under
# $E2E_TMP, a short directory under /tmp (unix socket paths must stay below
# 108 bytes, so do not nest it deep).  Nothing in /etc, /var/lib/docker,
# /var/lib/containers or ~ is read or written.
#
# Needs (Debian 12 packages): docker.io (dockerd 20.10 + containerd 1.6 + ctr
# + runc), skopeo, buildah, podman, umoci, busybox-static, plus curl, tar,
# gzip, sha256sum, coreutils.  See tests/e2e/README.md for timings & gotchas.

# ---------------------------------------------------------------------------
# globals
# ---------------------------------------------------------------------------
E2E_TMP="${E2E_TMP:-}"
E2E_REG="${E2E_REG:-}"
E2E_IMG="${E2E_IMG:-}"
# Debian's docker.io client (20.10) matches the 20.10 daemon.  NOTE: this machine
# also has a docker 28 client in /usr/local/bin which comes first in PATH; it
# works too (it negotiates API 1.41) but its output differs slightly.
E2E_DOCKER_BIN="${E2E_DOCKER_BIN:-/usr/bin/docker}"
E2E_DOCKERD_PID="${E2E_DOCKERD_PID:-}"
E2E_CTR_NS="${E2E_CTR_NS:-berth}"
E2E_BERTH_PID="${E2E_BERTH_PID:-}"

_e2e_log() { printf '[e2e %s] %s\n' "$(date +%T)" "$*" >&2; }
_e2e_die() {
  _e2e_log "FATAL: $*"
  return 1
}

# e2e_free_port: print a TCP port on 127.0.0.1 nobody listens on (best effort).
e2e_free_port() {
  local p i
  for i in $(seq 1 50); do
    p=$((20000 + RANDOM % 30000))
    # bash /dev/tcp: connect succeeds => port in use.
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  _e2e_die "no free port found"
}

# e2e_wait_http URL [TIMEOUT_S]: wait until URL answers any HTTP status.
e2e_wait_http() {
  local url=$1 timeout=${2:-30} t0
  t0=$(date +%s)
  until curl -s -o /dev/null --max-time 2 "$url"; do
    (($(date +%s) - t0 < timeout)) || _e2e_die "timeout waiting for $url" || return 1
    sleep 0.1
  done
}

# ---------------------------------------------------------------------------
# setup / teardown
# ---------------------------------------------------------------------------

# e2e_setup [HOST:PORT]: create $E2E_TMP and all client config files.
# Exports the env vars the containers/* tools read so that plain `podman`,
# `buildah`, `skopeo` invocations below never touch the system config.
e2e_setup() {
  E2E_REG="${1:-${E2E_REG:-}}"
  [[ -n "$E2E_REG" ]] || _e2e_die "e2e_setup: registry host:port required" || return 1
  # short path on purpose: $E2E_TMP/x/containerd.sock etc. must be < 108 bytes
  E2E_TMP=$(mktemp -d /tmp/be2e.XXXXXX)
  E2E_IMG="$E2E_TMP/img"
  mkdir -p "$E2E_TMP"/{log,img,cs/root,cs/run,cs/tmp,dk,tmp,docker-config}
  export E2E_TMP E2E_REG E2E_IMG

  # Accept anything: images we push/pull are unsigned.  Passed explicitly with
  # --signature-policy (podman/buildah) and --policy (skopeo): these versions
  # (podman 4.3, buildah 1.28, skopeo 1.9) have NO CONTAINERS_POLICY env var.
  cat >"$E2E_TMP/policy.json" <<'EOF'
{"default":[{"type":"insecureAcceptAnything"}],"transports":{"docker-daemon":{"":[{"type":"insecureAcceptAnything"}]}}}
EOF

  # registries.conf v2: mark the registry plain-HTTP ("insecure = true" makes
  # containers/image try https first, then fall back to http). No search
  # registries, so short names never resolve to docker.io.
  cat >"$E2E_TMP/registries.conf" <<EOF
unqualified-search-registries = []
short-name-mode = "disabled"
[[registry]]
location = "$E2E_REG"
insecure = true
EOF

  # private storage.conf: vfs (no overlay/fuse needed, works everywhere,
  # copies whole layers: slow for big images but fine for tests).
  cat >"$E2E_TMP/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$E2E_TMP/cs/root"
runroot = "$E2E_TMP/cs/run"
EOF

  # containers.conf for podman: no systemd here -> cgroupfs + file events
  # (default journald/systemd backends print errors or fail without systemd).
  cat >"$E2E_TMP/containers.conf" <<EOF
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$E2E_TMP/log/podman-events.log"
tmp_dir = "$E2E_TMP/cs/tmp"
[containers]
netns = "none"
EOF

  # empty auth file: never read /run/containers/0/auth.json or ~/.docker
  echo '{}' >"$E2E_TMP/auth.json"
  echo '{}' >"$E2E_TMP/docker-config/config.json"

  export CONTAINERS_REGISTRIES_CONF="$E2E_TMP/registries.conf"
  export CONTAINERS_STORAGE_CONF="$E2E_TMP/storage.conf"
  export CONTAINERS_CONF="$E2E_TMP/containers.conf"
  export REGISTRY_AUTH_FILE="$E2E_TMP/auth.json"
  # skopeo/buildah stage big blobs in $TMPDIR (default /var/tmp)
  export TMPDIR="$E2E_TMP/tmp"
  _e2e_log "setup: E2E_TMP=$E2E_TMP registry=$E2E_REG"
}

# e2e_teardown: stop everything this library started, remove $E2E_TMP.
e2e_teardown() {
  local rc=$?
  stop_dockerd 30 || true
  stop_berth || true
  if [[ -n "${E2E_TMP:-}" && -d "$E2E_TMP" && "${E2E_KEEP:-0}" != 1 ]]; then
    # vfs/containers storage may leave read-only dirs: make writable first
    chmod -R u+w "$E2E_TMP" 2>/dev/null || true
    rm -rf "$E2E_TMP" || true
  fi
  return $rc
}

# ---------------------------------------------------------------------------
# test images, built offline (no daemon, no network)
# ---------------------------------------------------------------------------
# We write an OCI image layout by hand (tar + gzip + sha256sum + JSON).  This is
# faster and more deterministic than `buildah from scratch` + `buildah copy` +
# `buildah commit` (which works too, see README) and gives exact control over
# media types, platforms and digests.  skopeo converts it to other formats.

# _e2e_put_blob LAYOUT FILE: move FILE into LAYOUT/blobs/sha256/, print "DIGEST SIZE"
_e2e_put_blob() {
  local layout=$1 f=$2 hex size
  hex=$(sha256sum "$f" | cut -d' ' -f1)
  size=$(stat -c %s "$f")
  mkdir -p "$layout/blobs/sha256"
  mv -f "$f" "$layout/blobs/sha256/$hex"
  chmod 644 "$layout/blobs/sha256/$hex" # mktemp makes 0600
  echo "sha256:$hex $size"
}

# _e2e_layer LAYOUT SRCDIR: tar+gzip SRCDIR as a layer; print "DIGEST SIZE DIFFID"
_e2e_layer() {
  local layout=$1 src=$2 tmp diffid blob
  tmp=$(mktemp "$layout/.layer.XXXXXX")
  # deterministic tar: fixed owner/mtime/order so equal input => equal digest
  tar -C "$src" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
    --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -cf "$tmp.tar" .
  diffid="sha256:$(sha256sum "$tmp.tar" | cut -d' ' -f1)"
  # -n: no name/timestamp in gzip header; -1: random data does not compress anyway
  gzip -n -1 -c "$tmp.tar" >"$tmp"
  rm -f "$tmp.tar"
  blob=$(_e2e_put_blob "$layout" "$tmp")
  echo "$blob $diffid"
}

# _e2e_image LAYOUT ARCH LAYERSPEC...: write config+manifest for ARCH.
# LAYERSPEC = "DIGEST SIZE DIFFID". Prints "MANIFEST_DIGEST MANIFEST_SIZE".
_e2e_image() {
  local layout=$1 arch=$2
  shift 2
  local layers="" diffids="" sep="" d s id cfg cfgblob man
  for spec in "$@"; do
    read -r d s id <<<"$spec"
    layers+="$sep{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"$d\",\"size\":$s}"
    diffids+="$sep\"$id\""
    sep=","
  done
  cfg=$(mktemp "$layout/.cfg.XXXXXX")
  local variant=""
  [[ $arch == arm64 ]] && variant=',"variant":"v8"'
  printf '{"architecture":"%s"%s,"os":"linux","created":"1970-01-01T00:00:00Z","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"],"Labels":{"berth.e2e":"%s"}},"rootfs":{"type":"layers","diff_ids":[%s]}}' \
    "$arch" "$variant" "$(basename "$layout")-$RANDOM$RANDOM" "$diffids" >"$cfg"
  cfgblob=$(_e2e_put_blob "$layout" "$cfg")
  read -r d s <<<"$cfgblob"
  man=$(mktemp "$layout/.man.XXXXXX")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[%s]}' \
    "$d" "$s" "$layers" >"$man"
  _e2e_put_blob "$layout" "$man"
}

# _e2e_rnd_layer LAYOUT NAME MIB: layer holding /NAME.bin = MIB MiB of random
# bytes (incompressible, so the gzip blob is >= MIB MiB too). Prints layer spec.
_e2e_rnd_layer() {
  local d="$E2E_IMG/src/$2"
  mkdir -p "$d"
  head -c "$(($3 * 1024 * 1024))" /dev/urandom >"$d/$2.bin"
  _e2e_layer "$1" "$d"
}

# make_test_images [BIG_MIB]: build, under $E2E_IMG:
#   oci/            OCI layout (skopeo/umoci "oci:$E2E_IMG/oci:TAG") with tags
#     small   linux/amd64: busybox layer + 1 MiB random layer      (~2 MiB)
#     big     linux/amd64: busybox layer + BIG_MIB (default 50) MiB random
#             layer (shares the busybox layer with `small`, so pushing it to
#             another repo after `small` exercises cross-repo mount)
#     multi   OCI index: linux/amd64 + linux/arm64/v8, each busybox + 1 MiB
#             random layer (the arm64 one still carries the x86 busybox: we
#             only need distinct bytes, never run it)
#   small.docker.tar, big.docker.tar   docker-archive tars for `docker load`
#                                      (docker 20.10 cannot load OCI layouts)
# Also sets E2E_SMALL_DIGEST, E2E_BIG_DIGEST, E2E_MULTI_DIGEST,
# E2E_MULTI_AMD64_DIGEST, E2E_MULTI_ARM64_DIGEST (manifest digests).
# Takes ~3 s (50 MiB of /dev/urandom + gzip).  Random data => each call makes
# unique layers, except the shared busybox layer which is deterministic.
make_test_images() {
  local big_mib=${1:-50} L="$E2E_IMG/oci" root bb small big a64 x64 idx
  mkdir -p "$L" "$E2E_IMG/src"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$L/oci-layout"

  # busybox rootfs: /bin/busybox (static) + /bin/sh symlink
  root="$E2E_IMG/src/bb"
  mkdir -p "$root/bin" "$root/etc" "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  ln -sf busybox "$root/bin/sh"
  echo 'root:x:0:0:root:/:/bin/sh' >"$root/etc/passwd"
  bb=$(_e2e_layer "$L" "$root")

  small=$(_e2e_image "$L" amd64 "$bb" "$(_e2e_rnd_layer "$L" small 1)")
  big=$(_e2e_image "$L" amd64 "$bb" "$(_e2e_rnd_layer "$L" big "$big_mib")")
  x64=$(_e2e_image "$L" amd64 "$bb" "$(_e2e_rnd_layer "$L" multi-amd64 1)")
  a64=$(_e2e_image "$L" arm64 "$bb" "$(_e2e_rnd_layer "$L" multi-arm64 1)")
  rm -rf "$E2E_IMG/src"

  local d s xd xs ad as
  read -r xd xs <<<"$x64"
  read -r ad as <<<"$a64"
  idx=$(mktemp "$L/.idx.XXXXXX")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"platform":{"architecture":"amd64","os":"linux"}},{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}}]}' \
    "$xd" "$xs" "$ad" "$as" >"$idx"
  local multi
  multi=$(_e2e_put_blob "$L" "$idx")

  # layout index.json: one entry per tag (org.opencontainers.image.ref.name)
  local entries="" sep="" tag spec mt
  for tag in small big multi; do
    case $tag in
      small) spec=$small mt=application/vnd.oci.image.manifest.v1+json ;;
      big) spec=$big mt=application/vnd.oci.image.manifest.v1+json ;;
      multi) spec=$multi mt=application/vnd.oci.image.index.v1+json ;;
    esac
    read -r d s <<<"$spec"
    entries+="$sep{\"mediaType\":\"$mt\",\"digest\":\"$d\",\"size\":$s,\"annotations\":{\"org.opencontainers.image.ref.name\":\"$tag\"}}"
    sep=","
  done
  printf '{"schemaVersion":2,"manifests":[%s]}' "$entries" >"$L/index.json"

  E2E_SMALL_DIGEST=${small%% *}
  E2E_BIG_DIGEST=${big%% *}
  E2E_MULTI_DIGEST=${multi%% *}
  E2E_MULTI_AMD64_DIGEST=$xd
  E2E_MULTI_ARM64_DIGEST=$ad
  export E2E_SMALL_DIGEST E2E_BIG_DIGEST E2E_MULTI_DIGEST E2E_MULTI_AMD64_DIGEST E2E_MULTI_ARM64_DIGEST

  # docker-archive tars for `docker load` (skopeo converts OCI -> docker v2s2;
  # the repo:tag given after the path is what `docker load` names the image)
  for tag in small big; do
    e2e_skopeo copy --quiet "oci:$L:$tag" "docker-archive:$E2E_IMG/$tag.docker.tar:berth-e2e/$tag:latest"
  done
  _e2e_log "images: small=$E2E_SMALL_DIGEST big=$E2E_BIG_DIGEST multi=$E2E_MULTI_DIGEST"
}

# ---------------------------------------------------------------------------
# skopeo
# ---------------------------------------------------------------------------
# e2e_skopeo ARGS...: skopeo with private policy/registries.conf/auth/tmpdir.
# Global flags must come before the subcommand.  TLS is switched off per
# subcommand (--src-tls-verify/--dest-tls-verify/--tls-verify), see below.
e2e_skopeo() {
  skopeo --policy "$E2E_TMP/policy.json" \
    --registries-conf "$E2E_TMP/registries.conf" \
    "$@"
}

# ---------------------------------------------------------------------------
# dockerd (+ the containerd it spawns) and ctr
# ---------------------------------------------------------------------------
# Layout under $E2E_TMP/dk:  docker.sock  docker.pid  data/  x/ (exec-root)
#   containerd socket: $E2E_TMP/dk/x/containerd/containerd.sock  (dockerd
#   starts its own containerd when --containerd is not given; it stops it
#   again on SIGTERM).
E2E_DOCKER_SOCK=""
E2E_CONTAINERD_SOCK=""

# start_dockerd [TIMEOUT_S]: start a private dockerd, wait until the API answers.
# Ready in ~0.2-0.5 s on this machine (first start ~1 s).
start_dockerd() {
  local timeout=${1:-60} d="$E2E_TMP/dk" t0
  mkdir -p "$d"
  E2E_DOCKER_SOCK="$d/docker.sock"
  E2E_CONTAINERD_SOCK="$d/x/containerd/containerd.sock"
  # Own daemon.json so /etc/docker/daemon.json is never read; dockerd 20.10
  # otherwise also writes its libtrust key to /etc/docker/key.json, the
  # "deprecated-key-path" option moves it into the temp dir.
  printf '{"deprecated-key-path":"%s"}\n' "$d/key.json" >"$d/daemon.json"
  t0=$(date +%s.%N)
  # --storage-driver vfs : no overlayfs needed (overlay-on-overlay / fuse not
  #                        required); every layer is a full copy, fine for tests
  # --bridge=none        : no docker0 bridge (needs no netns/iptables privileges)
  # --iptables=false --ip6tables=false : never touch the host firewall
  # --exec-root          : default /var/run/docker; holds containerd socket too
  # --insecure-registry  : plain HTTP for this host:port (docker already treats
  #                        127.0.0.0/8 as insecure by default, but be explicit)
  # --config-file        : see above
  # --userland-proxy=false : no docker-proxy processes
  dockerd \
    -H "unix://$E2E_DOCKER_SOCK" \
    --config-file "$d/daemon.json" \
    --data-root "$d/data" \
    --exec-root "$d/x" \
    --pidfile "$d/docker.pid" \
    --storage-driver vfs \
    --bridge=none \
    --iptables=false --ip6tables=false \
    --userland-proxy=false \
    --insecure-registry "$E2E_REG" \
    >"$E2E_TMP/log/dockerd.log" 2>&1 &
  E2E_DOCKERD_PID=$!
  export E2E_DOCKERD_PID E2E_DOCKER_SOCK E2E_CONTAINERD_SOCK
  until e2e_docker version >/dev/null 2>&1; do
    if ! kill -0 "$E2E_DOCKERD_PID" 2>/dev/null; then
      tail -20 "$E2E_TMP/log/dockerd.log" >&2
      _e2e_die "dockerd exited during startup" || return 1
    fi
    if (($(date +%s) - ${t0%.*} >= timeout)); then
      tail -20 "$E2E_TMP/log/dockerd.log" >&2
      _e2e_die "dockerd not ready after ${timeout}s" || return 1
    fi
    sleep 0.1
  done
  _e2e_log "dockerd pid=$E2E_DOCKERD_PID ready in $(echo "$(date +%s.%N) - $t0" | bc | cut -c1-5)s"
}

# stop_dockerd [TIMEOUT_S]: SIGTERM dockerd by PID and wait; dockerd then
# stops its containerd child itself.  SIGKILL (both) only after the timeout.
# Clean stop takes ~0.1-1 s with no running containers.
stop_dockerd() {
  local timeout=${1:-30} pid=${E2E_DOCKERD_PID:-} cpid="" i
  [[ -n "$pid" ]] || return 0
  [[ -f "$E2E_TMP/dk/x/containerd/containerd.pid" ]] &&
    cpid=$(cat "$E2E_TMP/dk/x/containerd/containerd.pid" 2>/dev/null || true)
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for ((i = 0; i < timeout * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      _e2e_log "dockerd $pid ignored SIGTERM, killing"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true # reap (we are its parent)
  # containerd normally exits with dockerd; make sure (by its own pid file)
  if [[ -n "$cpid" ]]; then
    for ((i = 0; i < 50; i++)); do
      kill -0 "$cpid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$cpid" 2>/dev/null || true
  fi
  E2E_DOCKERD_PID=""
}

# e2e_docker ARGS...: docker CLI bound to our daemon, with an empty private
# client config dir (no ~/.docker credential helpers).
e2e_docker() {
  DOCKER_CONFIG="$E2E_TMP/docker-config" "$E2E_DOCKER_BIN" -H "unix://$E2E_DOCKER_SOCK" "$@"
}

# e2e_ctr ARGS...: containerd's ctr against dockerd's containerd, own namespace
# (docker itself uses namespace "moby"; ours keeps images separate).
e2e_ctr() {
  ctr --address "$E2E_CONTAINERD_SOCK" --namespace "$E2E_CTR_NS" "$@"
}

# ctr_pull REF [EXTRA...]: pull REF from the plain-HTTP registry into
# containerd's content store (namespace $E2E_CTR_NS).
#   --plain-http            : http:// instead of https:// (no TLS fallback in ctr)
#   --snapshotter native    : unpack with plain copies; the default overlayfs
#                             snapshotter is not guaranteed to work in a sandbox
#   EXTRA e.g. --all-platforms (fetch every child of an index, needed before
#   `ctr images push` of an index) or --platform linux/arm64
#   Add --http-dump to see every request/response (great for registry bugs).
ctr_pull() {
  local ref=$1
  shift
  e2e_ctr images pull --plain-http --snapshotter native "$@" "$ref"
}

# ctr_push DEST_REF SRC_REF [EXTRA...]: push local image SRC_REF to DEST_REF.
# ctr pushes everything reachable from SRC_REF's target, so an index needs all
# its children locally (pull with --all-platforms) unless --platform is given.
ctr_push() {
  local dest=$1 src=$2
  shift 2
  e2e_ctr images push --plain-http "$@" "$dest" "$src"
}

# ---------------------------------------------------------------------------
# Berth itself
# ---------------------------------------------------------------------------
# start_berth [PORT] [DATA_DIR]: start the registry from /work/main (or
# $BERTH_DIR), wait for GET /v2/.  Sets E2E_BERTH_PID, E2E_BERTH_PORT.
# Call BEFORE e2e_setup if you want e2e_setup to use its port:
#   p=$(e2e_free_port); e2e_setup 127.0.0.1:$p; start_berth $p
start_berth() {
  local port=${1:-${E2E_REG##*:}} data=${2:-$E2E_TMP/berth-data} dir=${BERTH_DIR:-/work/main}
  mkdir -p "$data"
  (cd "$dir" && exec deno task start --listen "127.0.0.1:$port" --data "$data") \
    >"$E2E_TMP/log/berth.log" 2>&1 &
  E2E_BERTH_PID=$!
  E2E_BERTH_PORT=$port
  export E2E_BERTH_PID E2E_BERTH_PORT
  if ! e2e_wait_http "http://127.0.0.1:$port/v2/" 60; then
    tail -30 "$E2E_TMP/log/berth.log" >&2
    return 1
  fi
  _e2e_log "berth pid=$E2E_BERTH_PID on 127.0.0.1:$port data=$data"
}

# stop_berth: SIGTERM by PID.  `deno task` runs deno as a child: $E2E_BERTH_PID
# is the `deno task` process; signal its children (found via /proc, by PID,
# never by name) first, then itself.
stop_berth() {
  local pid=${E2E_BERTH_PID:-} kids i
  [[ -n "$pid" ]] || return 0
  kids=$(cat /proc/"$pid"/task/*/children 2>/dev/null || true)
  # shellcheck disable=SC2086
  kill -TERM $kids "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  # shellcheck disable=SC2086
  kill -KILL $kids "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  E2E_BERTH_PID=""
}

# ---------------------------------------------------------------------------
# buildah / podman (containers/storage in $E2E_TMP/cs, driver vfs)
# ---------------------------------------------------------------------------
# Global flags (before the subcommand):
#   --root / --runroot : private image store + runtime state (also in
#                        storage.conf, but flags win over any other config)
#   --storage-driver vfs : no overlay/fuse-overlayfs; plain copies
# Per-command flags used below:
#   --tls-verify=false   : plain HTTP (registries.conf insecure=true also works)
#   --signature-policy F : private policy.json (hidden flag on podman pull/push;
#                          CONTAINERS_POLICY env does not exist in these versions)
e2e_buildah() {
  buildah --root "$E2E_TMP/cs/root" --runroot "$E2E_TMP/cs/run" --storage-driver vfs "$@"
}
# --cgroup-manager cgroupfs / --events-backend file : no systemd/journald here
# --tmpdir : libpod's tmp dir (default /run/libpod)
e2e_podman() {
  podman --root "$E2E_TMP/cs/root" --runroot "$E2E_TMP/cs/run" --storage-driver vfs \
    --cgroup-manager cgroupfs --events-backend file --tmpdir "$E2E_TMP/cs/tmp" "$@"
}

# ---------------------------------------------------------------------------
# Exact client invocations.  REF arguments are full references, e.g.
# "$E2E_REG/repo:tag" or "$E2E_REG/repo@sha256:...".  Outputs that tests may
# want to grep are also saved in $E2E_TMP/log/last.out.
# ---------------------------------------------------------------------------

# --- docker ------------------------------------------------------------------
# docker_load TAR: `docker load`, prints the loaded image name(s).
docker_load() { e2e_docker load -i "$1"; }

# docker_tag_push SRC DEST_REF: tag + push, output to stdout and last.out.
# A layer the daemon has already pushed/pulled to another repo of the same
# registry is sent as a cross-repo mount (POST .../blobs/uploads/?mount=D&from=R)
# and printed as "<id>: Mounted from <repo>".
docker_tag_push() {
  e2e_docker tag "$1" "$2"
  e2e_docker push "$2" 2>&1 | tee "$E2E_TMP/log/last.out"
}

# docker_push_expect_mount REF FROM_REPO: push and fail unless the output says
# "Mounted from FROM_REPO" (FROM_REPO without the host, e.g. "e2e/a").
docker_push_expect_mount() {
  e2e_docker push "$1" 2>&1 | tee "$E2E_TMP/log/last.out"
  grep -q "Mounted from $2" "$E2E_TMP/log/last.out" ||
    _e2e_die "docker push $1: no 'Mounted from $2' in output"
}

# docker_pull_platform REF PLATFORM: e.g. linux/arm64 from a multi-arch index.
# (docker 20.10: --platform needs no experimental mode; a foreign-arch image is
# stored fine but cannot run.)
docker_pull_platform() { e2e_docker pull --platform "$2" "$1"; }

# docker_image_digest REF: the repo digest docker recorded (RepoDigests[0]).
docker_image_digest() {
  e2e_docker image inspect --format '{{index .RepoDigests 0}}' "$1" | sed 's/.*@//'
}

# --- skopeo ------------------------------------------------------------------
# skopeo_push LAYOUT_TAG DEST_REF [FORMAT]: copy oci:$E2E_IMG/oci:TAG to the
# registry.  FORMAT: oci (keep OCI media types) | v2s2 (convert to docker
# schema 2, changes the manifest digest).  Default: as-is.
#   --dest-tls-verify=false : plain http for the destination
skopeo_push() {
  local fmt=()
  [[ -n "${3:-}" ]] && fmt=(--format "$3")
  e2e_skopeo copy --dest-tls-verify=false "${fmt[@]}" "oci:$E2E_IMG/oci:$1" "docker://$2"
}

# skopeo_push_all LAYOUT_TAG DEST_REF: copy an index AND all its children
# (--all; without it skopeo copies only the manifest for the host platform).
skopeo_push_all() {
  e2e_skopeo copy --all --dest-tls-verify=false "oci:$E2E_IMG/oci:$1" "docker://$2"
}

# skopeo_pull SRC_REF DIR TAG [--all|--override-arch arm64 ...]: registry ->
# OCI layout DIR (created if needed) under TAG.
skopeo_pull() {
  local src=$1 dir=$2 tag=$3
  shift 3
  mkdir -p "$dir"
  e2e_skopeo copy --src-tls-verify=false "$@" "docker://$src" "oci:$dir:$tag"
}

# skopeo_copy SRC_REF DEST_REF [ARGS]: registry -> registry (e.g. other repo)
skopeo_copy() {
  local src=$1 dst=$2
  shift 2
  e2e_skopeo copy --src-tls-verify=false --dest-tls-verify=false "$@" "docker://$src" "docker://$dst"
}

# skopeo_list_tags REPO (host/name, no tag): JSON {"Repository","Tags":[...]}
skopeo_list_tags() { e2e_skopeo list-tags --tls-verify=false "docker://$1"; }

# skopeo_delete REF: DELETE /v2/<name>/manifests/<digest>.  NOTE: for a tag
# reference skopeo first resolves the tag to a digest and deletes the
# MANIFEST, which removes every tag pointing at it.
skopeo_delete() { e2e_skopeo delete --tls-verify=false "docker://$1"; }

# skopeo_inspect_raw REF: the manifest bytes exactly as served
skopeo_inspect_raw() { e2e_skopeo inspect --tls-verify=false --raw "docker://$1"; }

# skopeo_digest REF: digest of the manifest REF points at (top level, no
# platform resolution)
skopeo_digest() {
  e2e_skopeo inspect --tls-verify=false --raw "docker://$1" | sha256sum | sed 's/^/sha256:/;s/ .*//'
}

# --- buildah -----------------------------------------------------------------
# buildah_image NAME ARCH [RANDOM_MIB]: build localhost/NAME from scratch with
# busybox-static + a random-data layer.  Two commits => two layers (a single
# `buildah commit` squashes all changes of a working container into ONE layer).
# ARCH amd64|arm64 (config only; the binary stays x86-64).  No network used.
buildah_image() {
  local name=$1 arch=$2 mib=${3:-1} c ctx="$E2E_TMP/ctx-$1-$2" variant=()
  [[ $arch == arm64 ]] && variant=(--variant v8)
  mkdir -p "$ctx/bin"
  cp /bin/busybox "$ctx/bin/busybox"
  ln -sf busybox "$ctx/bin/sh"
  head -c "$((mib * 1024 * 1024))" /dev/urandom >"$ctx/random.bin"
  # --arch on `from scratch` sets the platform of the new working container
  c=$(e2e_buildah from --signature-policy "$E2E_TMP/policy.json" --arch "$arch" scratch)
  e2e_buildah copy "$c" "$ctx/bin" /bin >/dev/null
  e2e_buildah config --arch "$arch" "${variant[@]}" --os linux --cmd /bin/sh "$c"
  e2e_buildah commit --quiet --signature-policy "$E2E_TMP/policy.json" --format oci --rm "$c" "localhost/$name-base-$arch" >/dev/null
  c=$(e2e_buildah from --signature-policy "$E2E_TMP/policy.json" --arch "$arch" "localhost/$name-base-$arch")
  e2e_buildah copy "$c" "$ctx/random.bin" /random.bin >/dev/null
  e2e_buildah commit --quiet --signature-policy "$E2E_TMP/policy.json" --format oci --rm "$c" "localhost/$name" >/dev/null
  rm -rf "$ctx"
}

# buildah_manifest_push_all LIST DEST_REF IMAGE...: create a local manifest
# list LIST from local images and push it with all its images (--all).
# buildah keeps the list locally as a docker manifest list but pushes an OCI
# index when the members are OCI manifests.
buildah_manifest_push_all() {
  local list=$1 dest=$2 img
  shift 2
  e2e_buildah manifest create "localhost/$list" >/dev/null
  for img in "$@"; do e2e_buildah manifest add "localhost/$list" "$img" >/dev/null; done
  e2e_buildah manifest push --all --tls-verify=false \
    --signature-policy "$E2E_TMP/policy.json" "localhost/$list" "docker://$dest"
}

# --- podman ------------------------------------------------------------------
# podman_push LOCAL DEST_REF [FORMAT oci|v2s2]
podman_push() {
  local fmt=()
  [[ -n "${3:-}" ]] && fmt=(--format "$3")
  e2e_podman push --tls-verify=false --signature-policy "$E2E_TMP/policy.json" "${fmt[@]}" "$1" "docker://$2"
}
# podman_pull REF [--arch arm64 ...]: by tag or by digest (REF@sha256:...)
podman_pull() {
  local ref=$1
  shift
  e2e_podman pull --tls-verify=false --signature-policy "$E2E_TMP/policy.json" "$@" "$ref"
}

# --- OCI 1.1 referrers ---------------------------------------------------------
# e2e_referrers REPO DIGEST [ARTIFACT_TYPE]: GET /v2/<repo>/referrers/<digest>
# REPO without host.  Prints the index JSON; fails on non-200.
e2e_referrers() {
  local q=""
  [[ -n "${3:-}" ]] && q="?artifactType=$3"
  curl -fsS -H 'Accept: application/vnd.oci.image.index.v1+json' \
    "http://$E2E_REG/v2/$1/referrers/$2$q"
}

# sigstore_attach REF [RUNTIME node|deno]: attach an artifact (with subject =
# REF's manifest) using npm @sigstore/oci, then GET referrers.  Prints one JSON
# line {subject, artifact, referrers, filtered, fallbackTag}.
#   node: needs `npm install --prefix /tmp/e2e-npm @sigstore/oci@0.7.2` (or
#         SIGSTORE_OCI_DIR pointing at another prefix)
#   deno: fetches npm:@sigstore/oci@0.7.2 into DENO_DIR; run from $E2E_TMP
#         with --no-config --no-lock so /work/main/deno.json/deno.lock are not
#         used or modified
sigstore_attach() {
  local ref=$1 rt=${2:-node} js="$E2E_TMP/sigstore_oci.mjs"
  _e2e_write_sigstore_script "$js"
  if [[ $rt == deno ]]; then
    (cd "$E2E_TMP" && deno run --no-config --no-lock --allow-net --allow-env --allow-read "$js" "$ref")
  else
    node "$js" "$ref"
  fi
}

_e2e_write_sigstore_script() {
  cat >"$1" <<'JS'
// @sigstore/oci exports only attachArtifactToImage, getImageDigest,
// getRegistryCredentials, OCIError: no referrers lookup (plain fetch below).
// It uses plain http iff the registry host is "localhost" or "127.0.0.1".
import { createRequire } from "node:module";
import process from "node:process";
import { Buffer } from "node:buffer";
const ref = process.argv[2];
const m = ref?.match(/^([^/]+)\/(.+):([^:/]+)$/);
if (!m) throw new Error(`usage: sigstore_oci.mjs HOST:PORT/REPO:TAG (got ${ref})`);
const [, host, repo, tag] = m;
let oci;
if (typeof Deno !== "undefined") {
  oci = await import(process.env.SIGSTORE_OCI_SPEC ?? "npm:@sigstore/oci@0.7.2");
} else {
  // ESM ignores NODE_PATH: resolve through createRequire
  const base = process.env.SIGSTORE_OCI_DIR ?? "/tmp/e2e-npm/";
  oci = createRequire(base.endsWith("/") ? base : base + "/")("@sigstore/oci");
}
const { attachArtifactToImage, getImageDigest } = oci;
const imageName = `${host}/${repo}`;
// undefined credentials => no "sign in".  With credentials the client POSTs
// /v2/<repo>/blobs/uploads/ as an auth probe and throws "Invalid challenge"
// on the 202 a no-auth registry returns (leaving an open upload session).
const credentials = undefined;
const subject = await getImageDigest({ imageName, imageTag: tag, credentials });
const artifactType = "application/vnd.berth.e2e.test+json";
const desc = await attachArtifactToImage({
  imageName,
  imageDigest: subject,
  artifact: Buffer.from(JSON.stringify({ hello: "berth", at: Date.now() })),
  mediaType: artifactType, // manifest.artifactType and layers[0].mediaType
  annotations: { "org.example.e2e": "1" },
  credentials,
});
const base = `http://${host}/v2/${repo}`;
const accept = { Accept: "application/vnd.oci.image.index.v1+json" };
const r = await fetch(`${base}/referrers/${subject}`, { headers: accept });
const referrers = r.status === 200 ? await r.json() : { status: r.status, body: await r.text() };
const rf = await fetch(`${base}/referrers/${subject}?artifactType=${encodeURIComponent(artifactType)}`, { headers: accept });
const filtered = rf.status === 200
  ? { body: await rf.json(), ociFiltersApplied: rf.headers.get("oci-filters-applied") }
  : { status: rf.status, body: await rf.text() };
// referrers tag schema fallback "sha256-<hex>", written by the client only if
// GET /v2/<repo>/referrers/sha256:000..0 is not 200 or the manifest PUT had
// no OCI-Subject response header
const ft = await fetch(`${base}/manifests/${subject.replace(":", "-")}`, { headers: accept });
const fallbackTag = ft.status === 200 ? await ft.json() : null;
console.log(JSON.stringify({ subject, artifact: desc, referrers, filtered, fallbackTag }));
JS
}

# ---------------------------------------------------------------------------
# self test: `bash tests/e2e/clients.sh selftest [--berth | HOST:PORT]`
#   --berth      start Berth from /work/main on a free port (default)
#   HOST:PORT    use an already running registry
# Runs every invocation above, prints per-step time and "N passed, N failed".
# ---------------------------------------------------------------------------
_E2E_PASS=0
_E2E_FAIL=0
_E2E_FAILED=()
e2e_step() { # e2e_step NAME CMD...: run CMD in a `set -e` subshell, time it
  local name=$1 t0 rc dt
  shift
  t0=$(date +%s%N)
  set +e
  (set -e; "$@") >"$E2E_TMP/log/step.out" 2>&1
  rc=$?
  set -e
  dt=$((($(date +%s%N) - t0) / 1000000))
  if ((rc == 0)); then
    _E2E_PASS=$((_E2E_PASS + 1))
    printf 'ok   %6d ms  %s\n' "$dt" "$name"
  else
    _E2E_FAIL=$((_E2E_FAIL + 1))
    _E2E_FAILED+=("$name")
    printf 'FAIL %6d ms  %s (rc=%d)\n' "$dt" "$name" "$rc"
    sed 's/^/      | /' "$E2E_TMP/log/step.out" | tail -25
  fi
  cat "$E2E_TMP/log/step.out" >>"$E2E_TMP/log/selftest.log"
}

e2e_step_here() { # like e2e_step but in the current shell; aborts on failure
  local name=$1 t0
  shift
  t0=$(date +%s%N)
  "$@" >>"$E2E_TMP/log/selftest.log" 2>&1 || {
    printf 'FAIL %6s     %s\n' "" "$name"
    tail -25 "$E2E_TMP/log/selftest.log" | sed 's/^/      | /'
    return 1
  }
  _E2E_PASS=$((_E2E_PASS + 1))
  printf 'ok   %6d ms  %s\n' "$((($(date +%s%N) - t0) / 1000000))" "$name"
}

_st_docker_push_mount() {
  docker_load "$E2E_IMG/small.docker.tar"
  docker_load "$E2E_IMG/big.docker.tar"
  docker_tag_push berth-e2e/small:latest "$E2E_REG/$ST/dock-a:small"
  e2e_docker tag berth-e2e/big:latest "$E2E_REG/$ST/dock-b:big"
  # big shares the busybox layer with small => must be mounted from dock-a
  docker_push_expect_mount "$E2E_REG/$ST/dock-b:big" "$ST/dock-a"
}
_st_docker_pull() {
  local d
  d=$(docker_image_digest "$E2E_REG/$ST/dock-a:small")
  e2e_docker rmi "$E2E_REG/$ST/dock-a:small" berth-e2e/small:latest
  docker_pull_platform "$E2E_REG/$ST/dock-a:small" linux/amd64
  e2e_docker pull "$E2E_REG/$ST/dock-a@$d"
  # multi-arch index pushed by skopeo, docker picks the arm64 child
  skopeo_push_all multi "$E2E_REG/$ST/multi:1"
  docker_pull_platform "$E2E_REG/$ST/multi:1" linux/arm64
  [[ $(docker_image_digest "$E2E_REG/$ST/multi:1") == "$E2E_MULTI_DIGEST" ]]
  [[ $(e2e_docker image inspect --format '{{.Architecture}}' "$E2E_REG/$ST/multi:1") == arm64 ]]
}
_st_ctr() {
  skopeo_push small "$E2E_REG/$ST/ctr-src:small"
  ctr_pull "$E2E_REG/$ST/ctr-src:small"
  ctr_pull "$E2E_REG/$ST/multi:1" --all-platforms
  ctr_pull "$E2E_REG/$ST/ctr-src@$E2E_SMALL_DIGEST"
  ctr_push "$E2E_REG/$ST/ctr-dst:small" "$E2E_REG/$ST/ctr-src:small"
  ctr_push "$E2E_REG/$ST/ctr-dst:multi" "$E2E_REG/$ST/multi:1"
  [[ $(skopeo_digest "$E2E_REG/$ST/ctr-dst:multi") == "$E2E_MULTI_DIGEST" ]]
  [[ $(skopeo_digest "$E2E_REG/$ST/ctr-dst:small") == "$E2E_SMALL_DIGEST" ]]
}
_st_skopeo() {
  skopeo_push big "$E2E_REG/$ST/sk:big-oci" oci
  skopeo_push big "$E2E_REG/$ST/sk:big-v2s2" v2s2
  skopeo_push_all multi "$E2E_REG/$ST/sk:multi"
  [[ $(skopeo_digest "$E2E_REG/$ST/sk:big-oci") == "$E2E_BIG_DIGEST" ]]
  [[ $(skopeo_digest "$E2E_REG/$ST/sk:multi") == "$E2E_MULTI_DIGEST" ]]
  skopeo_inspect_raw "$E2E_REG/$ST/sk:big-v2s2" | grep -q 'application/vnd.docker.distribution.manifest.v2+json'
  skopeo_list_tags "$E2E_REG/$ST/sk" | tee "$E2E_TMP/log/tags.json"
  grep -q '"big-v2s2"' "$E2E_TMP/log/tags.json"
  skopeo_pull "$E2E_REG/$ST/sk:multi" "$E2E_TMP/back" multi --all
  skopeo_pull "$E2E_REG/$ST/sk@$E2E_BIG_DIGEST" "$E2E_TMP/back" big
  skopeo_pull "$E2E_REG/$ST/sk:multi" "$E2E_TMP/back" arm --override-arch arm64
  skopeo_copy "$E2E_REG/$ST/sk:big-oci" "$E2E_REG/$ST/sk2:copied"
  skopeo_delete "$E2E_REG/$ST/sk:big-v2s2"
  skopeo_list_tags "$E2E_REG/$ST/sk" | tee "$E2E_TMP/log/tags.json"
  # (`! cmd` never trips errexit, hence the explicit ifs)
  if grep -q '"big-v2s2"' "$E2E_TMP/log/tags.json"; then return 1; fi
  if skopeo_inspect_raw "$E2E_REG/$ST/sk:big-v2s2"; then return 1; fi
}
_st_buildah() {
  buildah_image bh-amd64 amd64 2
  buildah_image bh-arm64 arm64 1
  buildah_manifest_push_all bhlist "$E2E_REG/$ST/bh:list" localhost/bh-amd64 localhost/bh-arm64
  skopeo_inspect_raw "$E2E_REG/$ST/bh:list" | tee "$E2E_TMP/log/bh.json"
  [[ $(grep -o '"digest"' "$E2E_TMP/log/bh.json" | wc -l) == 2 ]]
}
_st_podman() {
  local d
  podman_push localhost/bh-amd64 "$E2E_REG/$ST/pd:oci"
  podman_push localhost/bh-amd64 "$E2E_REG/$ST/pd:v2s2" v2s2
  d=$(skopeo_digest "$E2E_REG/$ST/pd:oci")
  e2e_podman rmi -a -f
  podman_pull "$E2E_REG/$ST/pd:oci"
  podman_pull "$E2E_REG/$ST/pd@$d"
  podman_pull "$E2E_REG/$ST/bh:list" --arch arm64
  e2e_podman images --digests
}
_st_sigstore() {
  local rt=deno out
  [[ -d "${SIGSTORE_OCI_DIR:-/tmp/e2e-npm}/node_modules/@sigstore/oci" ]] && rt=node
  skopeo_push small "$E2E_REG/$ST/art:small"
  out=$(sigstore_attach "$E2E_REG/$ST/art:small" "$rt")
  echo "$out"
  local art
  art=$(echo "$out" | sed 's/.*"artifact":{[^}]*"digest":"\([^"]*\)".*/\1/')
  e2e_referrers "$ST/art" "$E2E_SMALL_DIGEST" | tee "$E2E_TMP/log/ref.json"
  grep -q "$art" "$E2E_TMP/log/ref.json"
}

e2e_selftest() {
  local target=${1:---berth} port
  if [[ $target == --berth ]]; then
    port=$(e2e_free_port)
    e2e_setup "127.0.0.1:$port"
  else
    e2e_setup "$target"
  fi
  trap e2e_teardown EXIT
  ST="e2e-$RANDOM"
  # these set globals, so they run in this shell (a failure aborts the run)
  [[ $target == --berth ]] && e2e_step_here "start berth" start_berth "$port"
  e2e_step_here "make_test_images" make_test_images
  e2e_step_here "start dockerd" start_dockerd
  e2e_step "docker load/tag/push + Mounted from" _st_docker_push_mount
  e2e_step "docker pull --platform / by digest" _st_docker_pull
  e2e_step "ctr pull/push --plain-http" _st_ctr
  e2e_step "skopeo copy/list-tags/delete/inspect" _st_skopeo
  e2e_step "buildah scratch + manifest push --all" _st_buildah
  e2e_step "podman push/pull tag+digest" _st_podman
  e2e_step "@sigstore/oci attach + referrers" _st_sigstore
  e2e_step_here "stop dockerd" stop_dockerd 30
  ((_E2E_FAIL == 0)) || _e2e_log "failed: ${_E2E_FAILED[*]} (logs: $E2E_TMP/log, kept: E2E_KEEP=1)"
  echo "$_E2E_PASS passed, $_E2E_FAIL failed"
  ((_E2E_FAIL == 0))
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  case "${1:-}" in
    selftest) shift; e2e_selftest "$@" ;;
    *) echo "usage: bash $0 selftest [--berth | HOST:PORT]   (or: source $0)" >&2; exit 2 ;;
  esac
fi
