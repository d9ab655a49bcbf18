package caddymodule

import "context"

// Backend is a store module (namespace wappchat.stores) that keeps key records
// outside Caddy's storage, shared by several instances: it also holds replay
// claims and announces every write so each instance drops its cached copy.
type Backend interface {
	// KeyStore returns the record store, sealing secrets with sealer.
	KeyStore(sealer Sealer) Store
	// Claims returns the replay claims shared by every instance.
	Claims() Claims
	// Watch calls changed with the key hash of every record any instance
	// writes, and resync whenever notices may have been missed (at start and
	// after an interruption), until ctx ends.
	Watch(ctx context.Context, changed func(sha256Hex string), resync func())
}
