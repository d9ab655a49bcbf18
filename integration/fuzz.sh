#!/usr/bin/env bash
# Runs each go-fuzz target of caddymodule for a short, bounded time (default
# 10s each; FUZZTIME=1m ./integration/fuzz.sh for longer). Seeds: the f.Add
# calls in caddymodule/fuzz_test.go and caddymodule/testdata/fuzz/<Target>/.
# A crash is saved by Go under testdata/fuzz/<Target>/ and fails this script:
# commit that file and it becomes a regular test case of `go test ./...`.
set -euo pipefail
cd "$(dirname "$0")/../caddymodule"
fuzztime="${FUZZTIME:-10s}"
for target in FuzzExtractKey FuzzParseSignedHeaders FuzzVerify FuzzEventFields; do
	echo "== $target ($fuzztime)"
	go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" .
done
