#!/usr/bin/env bash
#
# Checks the Kubernetes manifests in deploy/k8s without a cluster: each document against the
# Kubernetes API schemas (kubernetes-validate from PyPI, strict: an unknown field fails), then
# the rules the deployment relies on (scripts/deploy-check.py): probes, resources and a non-root
# security context on every workload, a PodDisruptionBudget and a NetworkPolicy for each, a
# migration Job per data service, Services and policies that select something, ConfigMap and
# Secret keys that exist. Both checks first prove they can fail on a broken manifest.
#
#   ./scripts/deploy-check.sh
#
# Needs python3 with venv and PyPI; the virtual environment is kept in .local/deploy-check.

set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "${root}"

validator_version="1.37.0"
kubernetes_version="1.33.0"
venv="${root}/.local/deploy-check"
if [[ ! -x "${venv}/bin/kubernetes-validate" ]] \
    || [[ "$("${venv}/bin/kubernetes-validate" --version)" != "${validator_version}" ]]; then
    python3 -m venv "${venv}"
    "${venv}/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==${validator_version}"
fi

manifests=(deploy/k8s/*.yaml deploy/k8s/templates/*.yaml deploy/k8s/cluster-access/*.yaml)

work=$(mktemp -d)
trap 'rm -rf "${work}"' EXIT
# A Deployment with a misspelt field must be refused, or the check below proves nothing.
cat > "${work}/broken.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: broken}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers: [{name: c, image: i, readinesProbe: {}}]
YAML
if "${venv}/bin/kubernetes-validate" --strict --quiet -k "${kubernetes_version}" "${work}/broken.yaml" >/dev/null 2>&1; then
    echo "kubernetes-validate accepted a manifest with an unknown field; the check cannot fail" >&2
    exit 1
fi

"${venv}/bin/kubernetes-validate" --strict --quiet -k "${kubernetes_version}" "${manifests[@]}"
"${venv}/bin/python" scripts/deploy-check.py --self-test
"${venv}/bin/python" scripts/deploy-check.py "${manifests[@]}"
