#!/usr/bin/env bash
# Prints the kubeconfig metering reads a Hopsworks cluster with, from the token Secret of
# 10-metering.yaml, for the `kubeconfig` field of a cluster's registration.
#
#   deploy/k8s/cluster-access/kubeconfig.sh <context of the Hopsworks cluster> <API server URL>
#
# The API server URL must be the one reachable from the metering pods. The CA is the cluster's
# own (the Secret's ca.crt); the API server's certificate must be issued by it, not be it: a
# self-signed certificate that is itself a CA is refused by metering's TLS stack
# (CaUsedAsEndEntity) although kubectl accepts it.
set -euo pipefail
context=${1:?usage: kubeconfig.sh <kubectl context> <API server URL>}
server=${2:?usage: kubeconfig.sh <kubectl context> <API server URL>}
secret=(kubectl --context "$context" -n hopsbridge-access get secret hopsbridge-metering-token)
ca=$("${secret[@]}" -o 'jsonpath={.data.ca\.crt}')
token=$("${secret[@]}" -o 'jsonpath={.data.token}' | base64 -d)
if [[ -z "$ca" || -z "$token" ]]; then
    echo "kubeconfig.sh: the token Secret has no ca.crt or token yet; apply 10-metering.yaml and retry" >&2
    exit 1
fi
cat <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
  - name: hopsworks
    cluster:
      server: ${server}
      certificate-authority-data: ${ca}
users:
  - name: hopsbridge-metering
    user:
      token: ${token}
contexts:
  - name: hopsbridge-metering
    context:
      cluster: hopsworks
      user: hopsbridge-metering
current-context: hopsbridge-metering
KUBECONFIG
