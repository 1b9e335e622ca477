#!/bin/sh
# Generates the Python message classes of Strata's protos with protoc (Debian: protobuf-compiler;
# the grpc runtime is python3-grpcio). No gRPC plugin is needed: strata_client.py calls the
# methods by path with the generated classes' (de)serializers.
#   examples/python/generate.sh [OUT_DIR]      (default: examples/python/gen)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/gen}
mkdir -p "$out"
protoc -I "$here/../../proto" --python_out="$out" write.proto read.proto health.proto
