#!/usr/bin/env bash
# Validates openapi/openapi.json as an OpenAPI 3.1 document (openapi-spec-validator, from PyPI,
# installed once into target/tools/). The Rust tests already check that it equals the code.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/tools/openapi-venv
if [ ! -x "$venv/bin/openapi-spec-validator" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "openapi-spec-validator==0.7.*"
fi
"$venv/bin/openapi-spec-validator" --schema 3.1.0 openapi/openapi.json
