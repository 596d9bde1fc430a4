#!/usr/bin/env python3
"""Peer for the kmsenv benchmark: the entrypoint people write by hand with boto3.

    boto3_entrypoint.py FILE -- CMD [ARGS...]

FILE is a kmsenv TOML file of direct `kms` values (what `aws kms encrypt` prints),
read with the standard library's tomllib. One KMS client, one `Decrypt` per
variable (with the value's `key` as KeyId and its encryption context), in file
order, then `os.execvpe` of CMD with the values added to the environment.
Plain string values are set as they are. Exits 125 if anything fails, like kmsenv.

Endpoint, region and credentials come from the usual environment
(AWS_ENDPOINT_URL_KMS, AWS_REGION, AWS_ACCESS_KEY_ID, ...).
"""

import base64
import os
import sys
import tomllib

import boto3


def main() -> int:
    argv = sys.argv[1:]
    if len(argv) < 3 or argv[1] != "--":
        print("usage: boto3_entrypoint.py FILE -- CMD [ARGS...]", file=sys.stderr)
        return 125
    path, cmd = argv[0], argv[2:]
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
        kms = boto3.client("kms")
        env = dict(os.environ)
        for name, entry in doc.get("env", {}).items():
            if isinstance(entry, str):
                env[name] = entry
                continue
            request = {"CiphertextBlob": base64.b64decode(entry["kms"])}
            if "key" in entry:
                request["KeyId"] = entry["key"]
            if "context" in entry:
                request["EncryptionContext"] = entry["context"]
            env[name] = kms.decrypt(**request)["Plaintext"].decode()
    except Exception as exc:  # noqa: BLE001 - an entrypoint reports and fails closed
        print(f"boto3_entrypoint: {path}: {exc}", file=sys.stderr)
        return 125
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    sys.exit(main())
