#!/usr/bin/env bash
# Part of bench/tls: setup.sh once, then run.sh (hyperfine) and ir.sh (instructions).
# ir.sh WORK BIN N: user-space instructions (valgrind callgrind, "Collected") of
# `kmsenv -f envelope-N.toml export` (the exec path without the execve, which
# valgrind cannot follow into a report) per variant: load-independent, unlike
# wall time on a shared machine.
set -euo pipefail
export W=$1 BIN=$2 N=$3
. "$W/env"; export HTTP HTTPS AWS_HTTPS
unshare -m bash -c '
set -e
mount --bind "$W/ssl" /etc/ssl
mount --bind "$W/hosts" /etc/hosts
cd "$W"
ir() { valgrind --tool=callgrind --callgrind-out-file=/dev/null --log-file=$W/vg.log "$@" > /dev/null
       sed -n "s/.*Collected : //p" $W/vg.log; }
echo "http          $(AWS_ENDPOINT_URL_KMS=$HTTP ir $BIN -f envelope-$N.toml export)"
echo "https system  $(AWS_ENDPOINT_URL_KMS=$HTTPS ir $BIN -f envelope-$N.toml export)"
echo "https AWS     $(AWS_ENDPOINT_URL_KMS=$AWS_HTTPS ir $BIN -f envelope-$N.toml export)"
echo "https file    $(SSL_CERT_FILE=$W/bundle.pem AWS_ENDPOINT_URL_KMS=$HTTPS ir $BIN -f envelope-$N.toml export)"
'
