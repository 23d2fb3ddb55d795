#!/usr/bin/env bash
# Run Prometheus on loopback with agentq's shipped configuration (prometheus.yml and
# alerts.yml beside this script), scraping the web and the workers on this machine.
#
#   deploy/prometheus/run-prometheus.sh          # next to `agentq dev` or `make run`
#
# It copies the configuration into $PROMETHEUS_DIR/config, writes the target files there
# (the shipped targets/ are left alone) and runs Prometheus in the foreground: Ctrl-C
# stops it. It needs the prometheus binary: `apt-get install prometheus` on Debian (the
# package also starts a system service on :9090; this script neither needs nor touches it).
#
# Environment (all optional):
#   AGENTQ_WEB_TARGETS     web instances serving /api/metrics, host:port, comma-separated
#                          (default 127.0.0.1:$PORT, PORT defaulting to 8000)
#   AGENTQ_WORKER_TARGETS  workers' metrics ports, host:port, comma-separated
#                          (default 127.0.0.1:$WORKER_METRICS_PORT, defaulting to 9808)
#   PROMETHEUS_PORT        port to listen on, on 127.0.0.1 (default: a free port)
#   PROMETHEUS_DIR         its configuration copy and data (default $AGENTQ_HOME/prometheus,
#                          AGENTQ_HOME defaulting to ./var as for `agentq dev`)
#   PROMETHEUS_SCRAPE_INTERVAL  replaces the shipped 15s scrape and evaluation interval
#   PROMETHEUS             the prometheus binary (default: the one on PATH)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prometheus="${PROMETHEUS:-$(command -v prometheus || true)}"
if [ -z "$prometheus" ] || [ ! -x "$prometheus" ]; then
  echo "run-prometheus: no prometheus binary; on Debian: apt-get install prometheus" >&2
  exit 1
fi

web_targets="${AGENTQ_WEB_TARGETS:-127.0.0.1:${PORT:-8000}}"
worker_targets="${AGENTQ_WORKER_TARGETS:-127.0.0.1:${WORKER_METRICS_PORT:-9808}}"
dir="${PROMETHEUS_DIR:-${AGENTQ_HOME:-$PWD/var}/prometheus}"
port="${PROMETHEUS_PORT:-}"
if [ -z "$port" ] || [ "$port" = 0 ]; then
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi

# One file_sd target file: a YAML list holding one group of host:port targets.
targets_file() {
  local IFS=,
  echo "# Written by run-prometheus.sh"
  echo "- targets:"
  for target in $1; do
    [ -n "$target" ] && echo "    - \"$target\""
  done
  return 0
}

mkdir -p "$dir/config/targets" "$dir/data"
cp "$here/prometheus.yml" "$here/alerts.yml" "$dir/config/"
targets_file "$web_targets" >"$dir/config/targets/agentq-web.yml"
targets_file "$worker_targets" >"$dir/config/targets/agentq-workers.yml"
if [ -n "${PROMETHEUS_SCRAPE_INTERVAL:-}" ]; then
  sed -i -E "s/^(  (scrape|evaluation)_interval:) .*/\1 $PROMETHEUS_SCRAPE_INTERVAL/" \
    "$dir/config/prometheus.yml"
  # A scrape may not take longer than the interval between scrapes.
  sed -i -E "s/^(  scrape_timeout:) .*/\1 $PROMETHEUS_SCRAPE_INTERVAL/" "$dir/config/prometheus.yml"
fi
if command -v promtool >/dev/null; then
  promtool check config "$dir/config/prometheus.yml" >/dev/null
fi

echo "Prometheus on http://127.0.0.1:$port, scraping web $web_targets and workers $worker_targets"
echo "(configuration and data in $dir)"
exec "$prometheus" \
  --config.file="$dir/config/prometheus.yml" \
  --storage.tsdb.path="$dir/data" \
  --web.listen-address="127.0.0.1:$port" \
  --log.level=warn
