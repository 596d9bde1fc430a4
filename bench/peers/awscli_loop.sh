#!/usr/bin/env bash
# Peer for the kmsenv benchmark: the shell entrypoint that calls the AWS CLI once
# per secret, then execs the command.
#
#   awscli_loop.sh LIST -- CMD [ARGS...]
#
# LIST has one line per variable: NAME<TAB>KEY_ARN<TAB>BASE64_CIPHERTEXT, the
# ciphertext made by KMS Encrypt with encryption context kmsenv:var=NAME (the same
# values as the kmsenv direct file). $AWS_CLI overrides the `aws` command.
set -euo pipefail
if [ "$#" -lt 3 ] || [ "$2" != "--" ]; then
  echo "usage: awscli_loop.sh LIST -- CMD [ARGS...]" >&2
  exit 125
fi
list=$1
shift 2
blob=$(mktemp)
trap 'rm -f "$blob"' EXIT
while IFS=$'\t' read -r name key ciphertext; do
  [ -n "$name" ] || continue
  printf %s "$ciphertext" | base64 -d >"$blob"
  value=$("${AWS_CLI:-aws}" kms decrypt --key-id "$key" --ciphertext-blob "fileb://$blob" \
    --encryption-context "kmsenv:var=$name" --query Plaintext --output text | base64 -d) || exit 125
  export "$name=$value"
done <"$list"
rm -f "$blob"
trap - EXIT
exec "$@"
