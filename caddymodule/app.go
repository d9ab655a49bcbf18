package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(App{})
}

// memoryClaims outlives config reloads: a new config must remember what the
// old one accepted, or a reload would reopen every replay window.
var memoryClaims = caddy.NewUsagePool()

const memoryClaimsKey = "wappchat.claims"

// Defaults of the wappchat app.
const (
	defaultCacheTTL          = 5 * time.Second
	defaultCacheSize         = 10000
	defaultNegativeCacheSize = 1000
	// A sustained 1,000 signed requests/s over a 10-minute window (5m tolerance either side).
	defaultReplayCapacity = 600_000
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
	// How many signed requests are remembered against replay (default 600000).
	// When full of live claims, signed requests are refused with 503.
	ReplayCapacity int `json:"replay_capacity,omitempty"`
	// Base64 32-byte key that encrypts integration secrets at rest, normally
	// {env.WAPPCHAT_SECRETS_KEY}. Without it secrets are stored as they are.
	SecretsKey string `json:"secrets_key,omitempty"`
	// Where records live when not in Caddy's storage, e.g. {"module": "redis"}:
	// shared by several instances, with shared replay claims.
	StoreRaw json.RawMessage `json:"store,omitempty" caddy:"namespace=wappchat.stores inline_key=module"`

	store     Store
	cache     *lookupCache
	claims    Claims
	backend   Backend           // nil: Caddy's storage and in-memory claims
	storage   certmagic.Storage // Caddy's storage, used by default and by migrate
	stopWatch context.CancelFunc
	// sharesMemoryClaims: this app holds a reference to memoryClaims.
	sharesMemoryClaims bool
	sealer             Sealer
	metrics            *authMetrics
	logger             *zap.Logger
	// oldSecretsKeys open records sealed under earlier keys (reencrypt only).
	oldSecretsKeys []*SecretsKey
	// maxTolerance is the longest tolerance of the handlers using this app.
	maxTolerance *atomic.Int64
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
	a.maxTolerance = new(atomic.Int64)
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
	if a.ReplayCapacity == 0 {
		a.ReplayCapacity = defaultReplayCapacity
	}
	if *a.CacheTTL < 0 || a.CacheSize < 0 || a.NegativeCacheSize < 0 || a.ReplayCapacity < 0 {
		return fmt.Errorf("cache_ttl, cache_size, negative_cache_size and replay_capacity must not be negative")
	}
	cache, err := newLookupCache(time.Duration(*a.CacheTTL), a.CacheSize, a.NegativeCacheSize, time.Now)
	if err != nil {
		return err
	}
	a.cache = cache
	if a.metrics, err = newAuthMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %v", err)
	}
	if a.sealer, err = a.newSealer(); err != nil {
		return err
	}
	a.storage = storage
	if a.StoreRaw != nil {
		mod, err := ctx.LoadModule(a, "StoreRaw")
		if err != nil {
			return fmt.Errorf("loading store: %v", err)
		}
		a.backend = mod.(Backend)
		a.store, a.claims = a.backend.KeyStore(a.sealer), a.backend.Claims()
	} else {
		a.store = NewStorageStore(storage, a.sealer)
		claims, _, err := memoryClaims.LoadOrNew(memoryClaimsKey, func() (caddy.Destructor, error) {
			return NewMemoryClaims(a.ReplayCapacity, time.Now), nil
		})
		if err != nil {
			return err
		}
		claims.(*MemoryClaims).SetCapacity(a.ReplayCapacity)
		a.claims, a.sharesMemoryClaims = claims.(*MemoryClaims), true
	}
	if err := a.store.Open(ctx); err != nil {
		return err
	}
	return a.checkSealing(ctx)
}

func (a *App) newSealer() (Sealer, error) {
	sealer := Sealer{Others: a.oldSecretsKeys}
	encoded := caddy.NewReplacer().ReplaceKnown(a.SecretsKey, "")
	if encoded == "" && a.SecretsKey != "" {
		return sealer, fmt.Errorf("secrets_key %q resolves to nothing: is its environment variable set?", a.SecretsKey)
	}
	if encoded == "" {
		return sealer, nil
	}
	key, err := ParseSecretsKey(encoded)
	if err != nil {
		return sealer, err
	}
	sealer.Current = key
	return sealer, nil
}

// checkSealing refuses to run over records sealed under a key this sidecar
// lacks, rather than fail on those keys one request at a time. It reads one
// small marker object, so start-up does not depend on how many keys exist.
func (a *App) checkSealing(ctx context.Context) error {
	sealer := a.sealer
	fingerprints, err := a.store.SealedWith(ctx)
	if err != nil {
		return err
	}
	for _, fp := range fingerprints {
		if sealer.key(fp) == nil {
			return fmt.Errorf("the key store holds secrets sealed under secrets key %s, which this sidecar does not have: "+
				"set secrets_key (normally {env.WAPPCHAT_SECRETS_KEY}) to that key, or move the records with "+
				"`caddy wappchat-keys reencrypt --old-key <that key>`", fp)
		}
	}
	if sealer.Current == nil {
		a.logger.Warn("secrets_key is not set: integration secrets are stored unencrypted in the key store")
		return nil
	}
	if !slices.Contains(fingerprints, sealer.Current.Fingerprint) {
		// Recorded before any record is sealed, so a sidecar without this key refuses to start.
		return a.store.SetSealedWith(ctx, append(fingerprints, sealer.Current.Fingerprint))
	}
	return nil
}

// Start listens for writes made by other instances of a shared store.
func (a *App) Start() error {
	if a.backend != nil {
		ctx, cancel := context.WithCancel(context.Background())
		a.stopWatch = cancel
		go a.backend.Watch(ctx, a.cache.forget, a.cache.purge)
	}
	return nil
}

// Stop ends the listening started by Start.
func (a *App) Stop() error {
	if a.stopWatch != nil {
		a.stopWatch()
	}
	return nil
}

// noteTolerance records a handler's tolerance: replay claims must outlive the longest.
func (a *App) noteTolerance(d time.Duration) {
	for {
		cur := a.maxTolerance.Load()
		if int64(d) <= cur || a.maxTolerance.CompareAndSwap(cur, int64(d)) {
			return
		}
	}
}

func (a *App) longestTolerance() time.Duration { return time.Duration(a.maxTolerance.Load()) }

// Cleanup releases this config's hold on the in-memory replay claims.
func (a *App) Cleanup() error {
	if a.sharesMemoryClaims {
		_, err := memoryClaims.Delete(memoryClaimsKey)
		return err
	}
	return nil
}

// Lookup returns the key with this hash, through the cache.
func (a *App) Lookup(ctx context.Context, sha256Hex string) (*Key, error) {
	return a.cache.lookup(ctx, a.store, sha256Hex)
}

// Store is the store behind the cache, for operator commands.
func (a *App) Store() Store { return a.store }

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
