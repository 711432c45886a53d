#!/usr/bin/env bash
# The validators tests/siem.rs runs, installed from the registries into target/siem-venv:
# PyPI's ocsf-json-schema (the OCSF 1.8.0 export) and jsonschema for OCSF, and npm's
# @elastic/ecs (ECS's own flat field reference) for ECS. Idempotent: a complete venv is kept.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=target/siem-venv
OCSF_JSON_SCHEMA=1.2.0
JSONSCHEMA=4.26.0
ECS=9.4.0
STAMP="$VENV/.ready-$OCSF_JSON_SCHEMA-$JSONSCHEMA-$ECS"
[ -f "$STAMP" ] && exit 0
mkdir -p target
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
  "ocsf-json-schema==$OCSF_JSON_SCHEMA" "jsonschema==$JSONSCHEMA"
mkdir -p "$VENV/ecs"
(cd "$VENV/ecs" && npm install --silent --no-audit --no-fund --prefix . "@elastic/ecs@$ECS" >/dev/null)
# The package's flat field reference (ecs_flat.yml of the ECS release), as JSON for the validator.
node -e 'const {EcsFlat} = require(process.argv[1]); require("fs").writeFileSync(process.argv[2], JSON.stringify(EcsFlat))' \
  "$PWD/$VENV/ecs/node_modules/@elastic/ecs/build/commonjs/ecs_flat.js" "$VENV/ecs_flat.json"
touch "$STAMP"
