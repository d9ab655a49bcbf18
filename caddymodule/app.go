package caddymodule

import (
	"context"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(App{})
}

// Defaults of the wappchat app.
const (
	defaultCacheTTL          = 5 * time.Second
	defaultCacheSize         = 10000
	defaultNegativeCacheSize = 1000
)

// App owns the key store that every wappchat_auth handler asks. It works with
// zero configuration: keys live in Caddy's configured storage under wappchat/.
type App struct {
	// How long a record read from the store is trusted. Default 5s; 0 reads the
	// store on every request. A revocation written by another process takes
	// effect within this time.
	CacheTTL *caddy.Duration `json:"cache_ttl,omitempty"`
	// How many known keys are cached (default 10000).
	CacheSize int `json:"cache_size,omitempty"`
	// How many unknown keys are cached (default 1000), kept apart from known keys.
	NegativeCacheSize int `json:"negative_cache_size,omitempty"`

	store   Store
	cache   *lookupCache
	metrics *authMetrics
	logger  *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "wappchat",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision opens the store in Caddy's configured storage.
func (a *App) Provision(ctx caddy.Context) error {
	return a.provision(ctx, ctx.Storage())
}

// provision is shared with the CLI, which has no running config to ask for storage.
func (a *App) provision(ctx caddy.Context, storage certmagic.Storage) error {
	a.logger = ctx.Logger()
	if a.CacheTTL == nil {
		ttl := caddy.Duration(defaultCacheTTL)
		a.CacheTTL = &ttl
	}
	if a.CacheSize == 0 {
		a.CacheSize = defaultCacheSize
	}
	if a.NegativeCacheSize == 0 {
		a.NegativeCacheSize = defaultNegativeCacheSize
	}
	if *a.CacheTTL < 0 || a.CacheSize < 0 || a.NegativeCacheSize < 0 {
		return fmt.Errorf("cache_ttl, cache_size and negative_cache_size must not be negative")
	}
	cache, err := newLookupCache(time.Duration(*a.CacheTTL), a.CacheSize, a.NegativeCacheSize, time.Now)
	if err != nil {
		return err
	}
	a.cache = cache
	if a.metrics, err = newAuthMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %v", err)
	}
	a.store = NewStorageStore(storage)
	return nil
}

// Start implements caddy.App; the store needs no background work.
func (a *App) Start() error { return nil }

// Stop implements caddy.App.
func (a *App) Stop() error { return nil }

// Lookup returns the record of a key hash, through the cache.
func (a *App) Lookup(ctx context.Context, sha256Hex string) (*Record, error) {
	return a.cache.lookup(ctx, a.store, sha256Hex)
}

// Store is the store behind the cache, for operator commands.
func (a *App) Store() Store { return a.store }

// Interface guards
var (
	_ caddy.App         = (*App)(nil)
	_ caddy.Provisioner = (*App)(nil)
)
