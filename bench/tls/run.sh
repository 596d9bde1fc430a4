#!/usr/bin/env bash
# Part of bench/tls: setup.sh once, then run.sh (hyperfine) and ir.sh (instructions).
# run.sh WORK OLD NEW N OUT.json — hyperfine -N medians and user+sys CPU of
# `kmsenv -f envelope-N.toml exec -- true` against the fault proxy (moto behind it):
# http:// ; https:// to localhost (a custom endpoint) and to
# kms.us-east-1.amazonaws.com (an AWS host, WORK/hosts over /etc/hosts), both with
# the system store (WORK/ssl bind-mounted over /etc/ssl: this machine's store plus
# the test CA in bundle and folder) ; https:// with SSL_CERT_FILE = that bundle;
# for the OLD and the NEW binary.
set -euo pipefail
W=$1 OLD=$2 NEW=$3 N=$4 OUT=$5
. "$W/env"
cd "$W"
cmds=()
for v in old new; do
    bin=$OLD; [[ $v == new ]] && bin=$NEW
    cmds+=(-n "$v http"          "env AWS_ENDPOINT_URL_KMS=$HTTP $bin -f envelope-$N.toml exec -- true")
    cmds+=(-n "$v https system"  "env AWS_ENDPOINT_URL_KMS=$HTTPS $bin -f envelope-$N.toml exec -- true")
    cmds+=(-n "$v https AWS host" "env AWS_ENDPOINT_URL_KMS=$AWS_HTTPS $bin -f envelope-$N.toml exec -- true")
    cmds+=(-n "$v https SSL_CERT_FILE" "env SSL_CERT_FILE=$W/bundle.pem AWS_ENDPOINT_URL_KMS=$HTTPS $bin -f envelope-$N.toml exec -- true")
done
unshare -m sh -c 'mount --bind "$0" /etc/ssl && mount --bind "$1" /etc/hosts && shift && exec "$@"' "$W/ssl" "$W/hosts" \
    hyperfine -N -w 10 -r 100 --export-json "$OUT" "${cmds[@]}" > /dev/null
python3 - "$OUT" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(f'{r["command"]:<24} median {r["median"]*1000:6.2f} ms   user+sys {(r["user"]+r["system"])*1000:5.2f} ms')
PY
