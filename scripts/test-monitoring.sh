#!/usr/bin/env bash
# test-monitoring.sh: checks docs/monitoring/: the alert rules parse and pass their unit tests
# (promtool, from Debian's `prometheus` package), the dashboard is valid JSON. That both use
# only exported metric names is a unit test in src/metrics.rs.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/../docs/monitoring"

usage() {
    cat <<EOF2
Usage: ${0##*/}
Runs promtool check rules + promtool test rules on alerts.yml / alerts.test.yml and jq on
grafana-dashboard.json. Needs promtool (apt-get install prometheus) and jq.
Exit codes: 0 passed; 1 a check failed or a tool is missing.
EOF2
}
case ${1:-} in -h | --help) usage; exit 0 ;; esac
for tool in promtool jq; do
    command -v "$tool" >/dev/null || { echo "test-monitoring.sh: needs $tool" >&2; exit 1; }
done
promtool check rules alerts.yml
promtool test rules alerts.test.yml
jq -e '.panels | length > 0' grafana-dashboard.json >/dev/null
echo "grafana-dashboard.json: valid, $(jq '.panels | length' grafana-dashboard.json) panels"
