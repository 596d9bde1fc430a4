#!/usr/bin/env bash
# Part of bench/tls: setup.sh once, then run.sh (hyperfine) and ir.sh (instructions).
# TLS start-up figures for kmsenv: moto + the fault proxy in TLS mode, a test CA
# added to a copy of /etc/ssl (bind-mounted over /etc/ssl by run.sh), envelope
# files of 10 and 100 sealed values.
#   setup.sh REPO KMSENV WORK   → WORK/env (sourced by run.sh), services left running
set -euo pipefail
REPO=$1 KMSENV=$2 W=$3
mkdir -p "$W"; cd "$W"
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# Test CA and server certificate for localhost, 127.0.0.1 and an AWS endpoint's
# name (kms.us-east-1.amazonaws.com, led to 127.0.0.1 by WORK/hosts, bind-mounted
# over /etc/hosts by run.sh and ir.sh). The CA stands in for Amazon Root CA 1:
# the same subject, byte for byte (PrintableStrings), so that kmsenv's first
# stage for AWS hosts (the store's Amazon Trust Services roots) holds it.
cat > server.ext <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, DNS:kms.us-east-1.amazonaws.com, IP:127.0.0.1
EOF
cat > ca.cnf <<'EOF'
[req]
prompt = no
string_mask = pkix
distinguished_name = dn
[dn]
C = US
O = Amazon
CN = Amazon Root CA 1
EOF
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -config ca.cnf -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign -keyout ca.key -out ca.pem 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
    -keyout server.key -out server.csr 2>/dev/null
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 2 \
    -extfile server.ext -out server.pem 2>/dev/null

# A copy of /etc/ssl with the CA added the way update-ca-certificates adds one:
# appended to the bundle, a file in the folder and its hash link.
rm -rf ssl; cp -a /etc/ssl ssl
cat ca.pem >> ssl/certs/ca-certificates.crt
cp ca.pem ssl/certs/kmsenv-bench-ca.pem
# The hash is the real Amazon Root CA 1's too: the first free suffix, as c_rehash.
hash=$(openssl x509 -hash -noout -in ca.pem); n=0
while [[ -e ssl/certs/$hash.$n || -L ssl/certs/$hash.$n ]]; do n=$((n + 1)); done
ln -s kmsenv-bench-ca.pem "ssl/certs/$hash.$n"
cp ssl/certs/ca-certificates.crt bundle.pem
{ cat /etc/hosts; echo "127.0.0.1 kms.us-east-1.amazonaws.com"; } > hosts

moto_port=$(free_port)
setsid moto_server -H 127.0.0.1 -p "$moto_port" > moto.log 2>&1 < /dev/null & echo $! > moto.pid
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$moto_port/" && break; sleep 0.1; done
# The proxy exits with its parent: give it a shell that outlives this script.
setsid -f sh -c "echo \$\$ > proxy.pid; python3 '$REPO/tests/support/kms_fault_proxy.py' --upstream http://127.0.0.1:$moto_port \
    --tls-cert server.pem --tls-key server.key > proxy.out 2> proxy.log < /dev/null; true" > /dev/null 2>&1 < /dev/null
for _ in $(seq 100); do grep -q listening proxy.out && break; sleep 0.1; done
proxy_port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' proxy.out)

cat > env <<EOF
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=$W/none AWS_SHARED_CREDENTIALS_FILE=$W/none
unset SSL_CERT_FILE SSL_CERT_DIR HTTPS_PROXY HTTP_PROXY https_proxy http_proxy
HTTP=http://127.0.0.1:$proxy_port
HTTPS=https://localhost:$proxy_port
AWS_HTTPS=https://kms.us-east-1.amazonaws.com:$proxy_port
W=$W
EOF
. ./env
key=$(AWS_ENDPOINT_URL_KMS=http://127.0.0.1:$moto_port python3 - <<EOF
import json, urllib.request
r = urllib.request.Request("http://127.0.0.1:$moto_port/", data=b'{"Description":"bench"}',
    headers={"X-Amz-Target": "TrentService.CreateKey", "Content-Type": "application/x-amz-json-1.1",
             "Authorization": "AWS4-HMAC-SHA256 Credential=bench/20200101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=x"})
print(json.load(urllib.request.urlopen(r))["KeyMetadata"]["Arn"])
EOF
)
for n in 10 100; do
    python3 -c "import secrets;[print(f'BENCH_VAR_{i:04d}={secrets.token_urlsafe(24)}') for i in range($n)]" > values-$n.env
    rm -f envelope-$n.toml
    AWS_ENDPOINT_URL_KMS=$HTTP "$KMSENV" -q -f envelope-$n.toml init --key "$key" --context app=bench
    AWS_ENDPOINT_URL_KMS=$HTTP "$KMSENV" -q -f envelope-$n.toml import values-$n.env
done
echo "ready: $HTTP $HTTPS"
