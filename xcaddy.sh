#!/usr/bin/env bash
# Builds ./caddy: Caddy with this plugin, from the working tree.
set -euo pipefail
cd "$(dirname "$0")"

XCADDY_VERSION=v0.4.5
CADDY_VERSION=v2.11.9
PATH="$(go env GOPATH)/bin:$PATH"

if ! xcaddy version 2>/dev/null | grep -q "^$XCADDY_VERSION"; then
	go install "github.com/caddyserver/xcaddy/cmd/xcaddy@$XCADDY_VERSION"
fi

# The module proxy refuses unknown modules, so the replacement names a version.
xcaddy build "$CADDY_VERSION" --output ./caddy \
	--with github.com/wappchat/caddy-wappchat-auth@v0.0.0=.
