#!/usr/bin/env bash
# Build the Lambda package for deploy/template.yaml: bulkchange and its dependencies (Linux x86_64
# wheels for Python 3.11, PostgreSQL driver included) into deploy/.aws-build/package.
set -euo pipefail
cd "$(dirname "$0")"
out=.aws-build/package
rm -rf "$out" && mkdir -p "$out"
python3 -m pip install --quiet --target "$out" \
  --platform manylinux2014_x86_64 --implementation cp --python-version 3.11 --only-binary=:all: \
  "..[postgres]"
# boto3/botocore are in the Lambda runtime already, but the pinned version keeps behaviour reproducible.
echo "built $(du -sh "$out" | cut -f1) into deploy/$out"
