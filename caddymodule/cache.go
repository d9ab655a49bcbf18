package caddymodule

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"
)

// lookupCache remembers store answers for ttl. Known and unknown keys live in
// separate LRUs so a flood of random keys can only evict other unknown keys.
// Concurrent misses for the same hash share one store read.
type lookupCache struct {
	ttl     time.Duration
	now     func() time.Time
	found   *lru.Cache[string, cachedKey]
	missing *lru.Cache[string, time.Time]
	flight  singleflight.Group
	// writes counts forget/purge calls: a read that started before a write
	// must not cache what it found, or the write would be undone for ttl.
	writes atomic.Uint64
}

type cachedKey struct {
	key   *Key
	until time.Time
}

func newLookupCache(ttl time.Duration, size, negativeSize int, now func() time.Time) (*lookupCache, error) {
	found, err := lru.New[string, cachedKey](size)
	if err != nil {
		return nil, err
	}
	missing, err := lru.New[string, time.Time](negativeSize)
	if err != nil {
		return nil, err
	}
	return &lookupCache{ttl: ttl, now: now, found: found, missing: missing}, nil
}

// lookup answers from the cache while fresh, else reads the store once for
// every caller waiting on the same hash. Store failures are never cached.
func (c *lookupCache) lookup(ctx context.Context, store Store, sha256Hex string) (*Key, error) {
	now := c.now()
	if hit, ok := c.found.Get(sha256Hex); ok && now.Before(hit.until) {
		return hit.key, nil
	}
	if until, ok := c.missing.Get(sha256Hex); ok && now.Before(until) {
		return nil, ErrNotFound
	}
	v, err, _ := c.flight.Do(sha256Hex, func() (any, error) {
		writes := c.writes.Load()
		// Shared by every waiter: one client leaving must not fail the others.
		rec, err := store.Lookup(context.WithoutCancel(ctx), sha256Hex)
		var key *Key
		if err == nil {
			key = NewKey(rec)
		}
		if c.writes.Load() == writes {
			c.remember(sha256Hex, key, err)
			if c.writes.Load() != writes { // a write landed while remembering: undo
				c.found.Remove(sha256Hex)
				c.missing.Remove(sha256Hex)
			}
		}
		return key, err
	})
	if err != nil {
		return nil, err
	}
	return v.(*Key), nil
}

func (c *lookupCache) remember(sha256Hex string, key *Key, err error) {
	if c.ttl <= 0 {
		return
	}
	until := c.now().Add(c.ttl)
	switch {
	case err == nil:
		c.missing.Remove(sha256Hex)
		c.found.Add(sha256Hex, cachedKey{key: key, until: until})
	case errors.Is(err, ErrNotFound):
		c.found.Remove(sha256Hex)
		c.missing.Add(sha256Hex, until)
	}
}

// forget drops whatever is cached for a hash, after a write.
func (c *lookupCache) forget(sha256Hex string) {
	c.writes.Add(1)
	c.flight.Forget(sha256Hex)
	c.found.Remove(sha256Hex)
	c.missing.Remove(sha256Hex)
}

// purge drops everything, when change notices may have been missed.
func (c *lookupCache) purge() {
	c.writes.Add(1)
	c.found.Purge()
	c.missing.Purge()
}
