#!/usr/bin/env bash
# Copies the Apache Kafka broker pinned in scripts/kafka/pom.xml (org.apache.kafka:kafka_2.13 and its
# runtime dependencies) from Maven Central into .cache/kafka/<version>/libs, once; prints that folder.
# Needs Maven and Java 17 (the tests and `scripts/demo.sh --broker apache-kafka` run it with java).
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' scripts/kafka/pom.xml)
LIBS=.cache/kafka/$VERSION/libs
if [ ! -f "$LIBS/.complete" ]; then
  command -v mvn >/dev/null || { echo "Maven (mvn) is needed to fetch Apache Kafka $VERSION" >&2; exit 1; }
  command -v java >/dev/null || { echo "Java 17 is needed to run Apache Kafka $VERSION" >&2; exit 1; }
  echo "fetching Apache Kafka $VERSION from Maven Central into $LIBS" >&2
  rm -rf "$LIBS"
  mvn -q -B -f scripts/kafka/pom.xml dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$PWD/$LIBS" >&2
  touch "$LIBS/.complete"
fi
echo "$PWD/$LIBS"
