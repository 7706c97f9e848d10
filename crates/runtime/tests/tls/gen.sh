#!/bin/sh
# Regenerates the test-only certificates (a CA, a node certificate for 127.0.0.1 and
# localhost signed by it, and one from an unrelated CA). Valid for 100 years.
set -e
cd "$(dirname "$0")"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 36500 \
  -subj "/CN=akka-cqrs-rs test CA" -keyout ca.key -out ca.pem
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=node" \
  -keyout node.key -out node.csr
printf "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n" > ext.cnf
openssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 36500 -extfile ext.cnf -out node.pem
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 36500 \
  -subj "/CN=other CA" -keyout other-ca.key -out other-ca.pem
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=intruder" \
  -keyout intruder.key -out intruder.csr
openssl x509 -req -in intruder.csr -CA other-ca.pem -CAkey other-ca.key -CAcreateserial -days 36500 -extfile ext.cnf -out intruder.pem
rm -f node.csr intruder.csr ext.cnf ca.srl other-ca.srl ca.key other-ca.key
