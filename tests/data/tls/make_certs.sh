#!/bin/sh
# Regenerate the test CA and the server certificate used by tests/smtp_server.py.
#
# These are TEST credentials: the private keys are committed on purpose and protect
# nothing. Both certificates are valid from 2020-01-01 for 100 years (backdated, so a
# machine whose clock is a little behind does not see "not yet valid"); the server one
# names localhost, 127.0.0.1 and ::1. The extensions (key usage, subject/authority key
# identifiers, a critical basicConstraints) are those a strict verifier such as
# Python 3.13's VERIFY_X509_STRICT insists on.
#
# Usage: tests/data/tls/make_certs.sh    (writes beside itself; needs the openssl CLI)
set -eu
cd "$(dirname "$0")"

START=20200101000000Z
END=21200101000000Z
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: > "$tmp/index.txt"
echo 01 > "$tmp/serial"

cat > "$tmp/openssl.cnf" <<CNF
[ca]
default_ca = test_ca

[test_ca]
database = $tmp/index.txt
serial = $tmp/serial
new_certs_dir = $tmp
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none

[anything]
organizationName = optional
commonName = supplied

[ca_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
CNF

# EC P-256 keys: small, and a TLS handshake costs far less than with RSA.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key
openssl req -new -key ca.key -subj "/O=mailer tests/CN=mailer test CA" -out "$tmp/ca.csr"
openssl ca -batch -notext -config "$tmp/openssl.cnf" -selfsign -keyfile ca.key \
    -in "$tmp/ca.csr" -startdate "$START" -enddate "$END" -extensions ca_ext -out ca.pem

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key
openssl req -new -key server.key -subj "/O=mailer tests/CN=localhost" -out "$tmp/server.csr"
openssl ca -batch -notext -config "$tmp/openssl.cnf" -cert ca.pem -keyfile ca.key \
    -in "$tmp/server.csr" -startdate "$START" -enddate "$END" -extensions server_ext \
    -out server.pem

chmod 644 ca.key server.key
openssl verify -x509_strict -CAfile ca.pem server.pem
