#!/usr/bin/env bash
# What the test suite talks to besides the project's own code, installed on a fresh machine
# (Debian, as root): promtool (tests/ops.rs checks /metrics with it), the OCSF and ECS
# validators (tests/siem.rs) and rsyslog with its TLS driver (tests/syslog.rs). Idempotent:
# what is there already is kept. README's test command and .ci/run call it.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "promtool (tests/ops.rs checks /metrics with it)"
if ! command -v promtool >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
promtool --version 2>&1 | sed -n 1p   # sed reads it all: no SIGPIPE under pipefail

step "OCSF and ECS validators (tests/siem.rs): PyPI ocsf-json-schema + jsonschema, npm @elastic/ecs"
if ! command -v npm >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm python3-venv >/dev/null
fi
bash tests/siem/setup-venv.sh

step "rsyslog with its TLS driver (tests/syslog.rs sends to a real rsyslogd)"
if ! command -v rsyslogd >/dev/null 2>&1 || ! ls /usr/lib/*/rsyslog/lmnsd_gtls.so >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends rsyslog rsyslog-gnutls >/dev/null
fi
rsyslogd -v 2>&1 | sed -n 1p


step "OTLP receiver's decoder (tests/otlp_sink.rs): PyPI opentelemetry-proto + protobuf; the S3 API server (tests/s3.rs): PyPI moto[server] + boto3"
if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi
bash tests/venv.sh target/otlp-venv tests/otlp/requirements.txt
bash tests/venv.sh target/s3-venv tests/s3_server/requirements.txt

step "Parquet reader and OCSF validator (tests/parquet.rs): PyPI pyarrow + ocsf-json-schema + jsonschema"
bash tests/venv.sh target/parquet-venv tests/parquet/requirements.txt

step "PostgreSQL (tests/replicas.rs and tests/pg_state.rs: leases and the state store on a real server, started by tests/postgres as the postgres user)"
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || ! id postgres >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
ls -d /usr/lib/postgresql/*/bin/postgres | sed -n '$p'

step "openssl (tests/pg_state.rs: the CA and server certificate of the TLS test)"
if ! command -v openssl >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends openssl >/dev/null
fi
openssl version
