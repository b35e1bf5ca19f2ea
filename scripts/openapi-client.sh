#!/usr/bin/env bash
#
# Generates a Python client from the committed OpenAPI document (services/gateway/openapi.json)
# with openapi-python-client from PyPI, and checks that the client works
# (scripts/openapi-client-check.py): every operation generated without a warning, query
# parameters sent in the query and path parameters in the path, a token sent on every
# operation that needs one and none required by the public ones, answers (errors included)
# read into the generated models.
#
#   ./scripts/openapi-client.sh
#
# Needs python3 with venv and PyPI; the virtual environment is kept in .local/openapi-client.

set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "${root}"

generator_version="0.29.1"
venv="${root}/.local/openapi-client"
if [[ ! -x "${venv}/bin/openapi-python-client" ]] \
    || [[ "$("${venv}/bin/openapi-python-client" --version)" != *"${generator_version}"* ]]; then
    python3 -m venv "${venv}"
    "${venv}/bin/pip" install --quiet --disable-pip-version-check "openapi-python-client==${generator_version}"
fi

work=$(mktemp -d)
trap 'rm -rf "${work}"' EXIT
printf 'post_hooks: []\n' > "${work}/config.yaml"
"${venv}/bin/openapi-python-client" generate --path services/gateway/openapi.json \
    --output-path "${work}/client" --config "${work}/config.yaml" 2>&1 | tee "${work}/generate.log"
if grep -qi "warning\|error" "${work}/generate.log"; then
    echo "openapi-python-client could not generate every part of the client (above)" >&2
    exit 1
fi
PYTHONPATH="${work}/client" "${venv}/bin/python" scripts/openapi-client-check.py services/gateway/openapi.json
