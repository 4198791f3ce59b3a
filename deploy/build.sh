#!/usr/bin/env bash
# Build the Lambda package for deploy/template.yaml: bulkchange and its dependencies (Linux x86_64
# wheels for Python 3.11, PostgreSQL driver included) into deploy/.aws-build/package.
set -euo pipefail
cd "$(dirname "$0")"
out=.aws-build/package
wheels=.aws-build/wheels
rm -rf "$out" "$wheels" && mkdir -p "$out" "$wheels"
# bulkchange itself as a wheel (pure Python), then it and its dependencies as Linux wheels.
python3 -m pip wheel --quiet --no-deps --wheel-dir "$wheels" ..
python3 -m pip install --quiet --target "$out" \
  --platform manylinux2014_x86_64 --implementation cp --python-version 3.11 --only-binary=:all: \
  "$(ls "$wheels"/bulkchange-*.whl)[postgres]"
# boto3/botocore are in the Lambda runtime already, but the pinned version keeps behaviour reproducible.
echo "built $(du -sh "$out" | cut -f1) into deploy/$out"
