package caddymodule

import (
	"context"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
)

// A secrets_key that is configured but resolves to nothing (an unset
// environment variable) refuses to start: it must not store secrets in clear.
func TestAppSecretsKeyResolvingToNothing(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	app := &App{SecretsKey: "{env.WAPPCHAT_TEST_UNSET_SECRETS_KEY}"}
	err := app.provision(ctx, &certmagic.FileStorage{Path: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "resolves to nothing") {
		t.Fatalf("provision = %v, expected a refusal", err)
	}
}
