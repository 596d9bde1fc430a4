#!/usr/bin/env bash
# `make demo`: the real job, end to end, against a local KMS (moto_server on loopback).
set -euo pipefail
BIN="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
WORK="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"

moto_server -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 &
MOTO=$!
trap 'kill $MOTO 2>/dev/null; rm -rf "$WORK"' EXIT

export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export AWS_ENDPOINT_URL_KMS="http://127.0.0.1:$PORT"
export AWS_ENDPOINT_URL_SECRETS_MANAGER="http://127.0.0.1:$PORT"

# Wait (bounded) until moto answers.
for _ in $(seq 1 100); do
  if aws --endpoint-url "$AWS_ENDPOINT_URL_KMS" kms list-keys >/dev/null 2>&1; then break; fi
  sleep 0.1
done

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
cd "$WORK"

step "aws kms create-key"
KEY="$(aws --endpoint-url "$AWS_ENDPOINT_URL_KMS" kms create-key --query KeyMetadata.Arn --output text)"
echo "$KEY"

step "kmsenv init --key $KEY --context app=demo"
"$BIN" init --key "$KEY" --context app=demo

step "printf %s 'postgres://app:s3cret@db/app' | kmsenv set DATABASE_URL"
printf %s 'postgres://app:s3cret@db/app' | "$BIN" set DATABASE_URL

step "kmsenv set --plain LOG_LEVEL=info"
"$BIN" set --plain LOG_LEVEL=info

step "aws secretsmanager create-secret --name demo/api-token --secret-string tok-1   # a secret AWS owns"
aws secretsmanager create-secret --name demo/api-token --secret-string tok-1 --query ARN --output text

step "kmsenv set --secret API_TOKEN demo/api-token   # test-reads it, writes its full ARN"
"$BIN" set --secret API_TOKEN demo/api-token

step "cat kmsenv.toml   # safe to commit"
cat kmsenv.toml

step "kmsenv list"
"$BIN" list

step "kmsenv exec -- env | grep -E 'DATABASE_URL|LOG_LEVEL|API_TOKEN'"
"$BIN" exec -- env | grep -E 'DATABASE_URL|LOG_LEVEL|API_TOKEN'

step "aws secretsmanager put-secret-value --secret-id demo/api-token --secret-string tok-2   # rotation"
aws secretsmanager put-secret-value --secret-id demo/api-token --secret-string tok-2 >/dev/null

step "kmsenv exec -- printenv API_TOKEN   # the next start reads the new value; the file is unchanged"
"$BIN" exec -- printenv API_TOKEN

step "kmsenv check"
"$BIN" check

step "kmsenv --trust-key \$KEY exec -- printenv LOG_LEVEL   # the pin, given outside the file"
"$BIN" --trust-key "$KEY" exec -- printenv LOG_LEVEL

step "kmsenv lint   # offline: no AWS call"
"$BIN" lint
echo
echo "demo ok"
