#!/usr/bin/env bash
# Runs each go-fuzz target of caddymodule for a bounded number of executions
# (default 20000 each, about 10 s here; FUZZTIME=200000x ./integration/fuzz.sh
# for longer). A count, not a duration: Go 1.26's coordinator can report a
# spurious "context deadline exceeded" failure when a duration -fuzztime ends
# while a worker is busy (go.dev/issue/75804, fixed in Go 1.27). -timeout still
# bounds each run in time. Seeds: the f.Add calls in caddymodule/fuzz_test.go
# and caddymodule/testdata/fuzz/<Target>/.
# A crash is saved by Go under testdata/fuzz/<Target>/ and fails this script:
# commit that file and it becomes a regular test case of `go test ./...`.
set -euo pipefail
cd "$(dirname "$0")/../caddymodule"
fuzztime="${FUZZTIME:-20000x}"
for target in FuzzExtractKey FuzzParseSignedHeaders FuzzVerify FuzzEventFields; do
	echo "== $target ($fuzztime)"
	go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" -timeout=5m .
done
