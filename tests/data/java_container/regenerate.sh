#!/usr/bin/env bash
# Rewrites ../payments_java.avro with the Avro Java library (Java 17, Maven). The file is
# committed; CI reads it and never runs this.
set -euo pipefail
cd "$(dirname "$0")"
mvn -q -B compile dependency:build-classpath -Dmdep.outputFile=target/classpath.txt
java -cp "target/classes:$(cat target/classpath.txt)" WriteContainer payment_java.avsc ../payments_java.avro
rm -rf target
echo "wrote $(cd .. && pwd)/payments_java.avro"
