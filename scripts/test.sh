#!/usr/bin/env bash
# Runs every dockwatch test on this machine: installs what the tests need when it is absent
# (Docker Engine, busybox-static, Prometheus with promtool, Alertmanager with amtool,
# node_exporter, docker-compose), starts dockerd when no engine answers, then runs the unit and
# integration tests. Needs root for apt-get and dockerd. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
have() { command -v "$1" >/dev/null 2>&1; }
have dockerd || need_packages+=(docker.io)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx nc || need_packages+=(busybox-static)
have promtool || need_packages+=(prometheus)
have prometheus-alertmanager || have alertmanager || need_packages+=(prometheus-alertmanager)
have amtool || need_packages+=(prometheus-alertmanager)
have prometheus-node-exporter || need_packages+=(prometheus-node-exporter)
have docker-compose || need_packages+=(docker-compose)

if [ ${#need_packages[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${need_packages[*]}; run as root or: sudo apt-get install -y ${need_packages[*]}" >&2
    exit 1
  fi
  echo "installing: ${need_packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

# Debian's packages start services through systemd, which may not exist here: nothing of
# theirs is relied upon. The tests start their own Prometheus, Alertmanager and node_exporter
# on free loopback ports.
for bin in dockerd docker promtool amtool prometheus-node-exporter docker-compose; do
  have "$bin" || { echo "required program $bin is still missing after install" >&2; exit 1; }
done
have prometheus || { echo "required program prometheus is missing (apt-get install -y prometheus)" >&2; exit 1; }

started_dockerd=""
if ! docker version >/dev/null 2>&1; then
  echo "starting dockerd"
  mkdir -p target
  nohup dockerd >target/dockerd.log 2>&1 &
  started_dockerd=$!
  for _ in $(seq 60); do
    docker version >/dev/null 2>&1 && break
    sleep 1
  done
  if ! docker version >/dev/null 2>&1; then
    echo "dockerd did not come up; its log:" >&2
    tail -n 50 target/dockerd.log >&2
    exit 1
  fi
fi
cleanup() {
  if [ -n "$started_dockerd" ]; then
    kill "$started_dockerd" 2>/dev/null || true
    wait "$started_dockerd" 2>/dev/null || true
  fi
}
trap cleanup EXIT

echo "docker engine $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')"
cargo test --all-targets --no-fail-fast "$@"
