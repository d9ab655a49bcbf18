package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingStore wraps a Store, counts Lookup calls per hash, can fail them,
// and can hold them at a gate so callers overlap.
type countingStore struct {
	Store
	mu      sync.Mutex
	lookups map[string]int
	fail    error
	gate    chan struct{} // when set, Lookup waits for it to close
	entered chan struct{} // when set, Lookup signals here before waiting
	// afterRead, when set, makes Lookup read the store first, signal here,
	// and only then wait at the gate: an answer already stale when returned.
	afterRead chan struct{}
}

func newCountingStore(t *testing.T) *countingStore {
	store, _ := newFileStore(t)
	return &countingStore{Store: store, lookups: map[string]int{}}
}

func (s *countingStore) Lookup(ctx context.Context, hash string) (*Record, error) {
	s.mu.Lock()
	s.lookups[hash]++
	fail, gate, entered, afterRead := s.fail, s.gate, s.entered, s.afterRead
	s.mu.Unlock()
	if afterRead != nil {
		rec, err := s.Store.Lookup(ctx, hash)
		afterRead <- struct{}{}
		<-gate
		return rec, err
	}
	if entered != nil {
		entered <- struct{}{}
	}
	if gate != nil {
		<-gate
	}
	if fail != nil {
		return nil, fail
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.Store.Lookup(ctx, hash)
}

func (s *countingStore) count(hash string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lookups[hash]
}

func (s *countingStore) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.lookups {
		n += c
	}
	return n
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newCacheForTest(t *testing.T, ttl time.Duration, size, negative int) (*lookupCache, *fakeClock) {
	t.Helper()
	clock := &fakeClock{t: time.Unix(1779111111, 0)}
	c, err := newLookupCache(ttl, size, negative, clock.now)
	if err != nil {
		t.Fatal(err)
	}
	return c, clock
}

func storeKey(t *testing.T, s Store) *Issued {
	t.Helper()
	issued := issueForTest(t, NewRecordSpec{})
	if err := s.Create(context.Background(), issued.Record); err != nil {
		t.Fatal(err)
	}
	return issued
}

func TestLookupCacheTTL(t *testing.T) {
	ctx := context.Background()
	const ttl = 5 * time.Second
	for i, tc := range []struct {
		name        string
		known       bool
		advance     time.Duration
		expectReads int // store reads after two lookups separated by advance
	}{
		{"known, within ttl", true, ttl - time.Nanosecond, 1},
		{"known, at ttl", true, ttl, 2},
		{"known, after ttl", true, ttl + time.Second, 2},
		{"unknown, within ttl", false, ttl - time.Nanosecond, 1},
		{"unknown, at ttl", false, ttl, 2},
		{"unknown, after ttl", false, time.Hour, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := newCountingStore(t)
			c, clock := newCacheForTest(t, ttl, 10, 10)
			hash := HashKey("unknown")
			if tc.known {
				hash = storeKey(t, store).Record.SHA256
			}
			for j := 0; j < 2; j++ {
				rec, err := c.lookup(ctx, store, hash)
				if tc.known && (err != nil || rec == nil || rec.SHA256 != hash) {
					t.Fatalf("Test %d: lookup = %+v, %v", i, rec, err)
				}
				if !tc.known && !errors.Is(err, ErrNotFound) {
					t.Fatalf("Test %d: lookup of unknown = %+v, %v; expected ErrNotFound", i, rec, err)
				}
				clock.advance(tc.advance)
			}
			if got := store.count(hash); got != tc.expectReads {
				t.Errorf("Test %d: %d store reads, expected %d", i, got, tc.expectReads)
			}
		})
	}
}

func TestLookupCacheTTLZero(t *testing.T) {
	ctx := context.Background()
	store := newCountingStore(t)
	c, _ := newCacheForTest(t, 0, 10, 10)
	known := storeKey(t, store).Record.SHA256
	unknown := HashKey("unknown")
	for j := 0; j < 3; j++ {
		if _, err := c.lookup(ctx, store, known); err != nil {
			t.Fatal(err)
		}
		if _, err := c.lookup(ctx, store, unknown); !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
	}
	if store.count(known) != 3 || store.count(unknown) != 3 {
		t.Errorf("ttl 0: %d/%d store reads, expected 3/3 (nothing cached)", store.count(known), store.count(unknown))
	}
	if c.found.Len() != 0 || c.missing.Len() != 0 {
		t.Errorf("ttl 0 cached %d known and %d unknown entries", c.found.Len(), c.missing.Len())
	}
}

func TestLookupCacheErrorsNotCached(t *testing.T) {
	ctx := context.Background()
	store := newCountingStore(t)
	c, _ := newCacheForTest(t, time.Hour, 10, 10)
	issued := storeKey(t, store)
	hash := issued.Record.SHA256

	boom := errors.New("storage down")
	store.fail = boom
	for j := 0; j < 2; j++ {
		if rec, err := c.lookup(ctx, store, hash); !errors.Is(err, boom) || rec != nil {
			t.Fatalf("lookup while failing = %+v, %v; expected %v", rec, err, boom)
		}
	}
	if store.count(hash) != 2 {
		t.Errorf("a store error was cached: %d reads for 2 lookups", store.count(hash))
	}
	store.fail = nil
	if rec, err := c.lookup(ctx, store, hash); err != nil || rec.ID != issued.Record.ID {
		t.Errorf("after recovery lookup = %+v, %v", rec, err)
	}

	// A store error after a cached answer does not replace it with a negative entry.
	store.fail = boom
	c.forget(hash)
	_, _ = c.lookup(ctx, store, hash)
	store.fail = nil
	if _, err := c.lookup(ctx, store, hash); err != nil {
		t.Errorf("a store error turned into a cached miss: %v", err)
	}
}

func TestLookupCacheForget(t *testing.T) {
	ctx := context.Background()
	store := newCountingStore(t)
	c, _ := newCacheForTest(t, time.Hour, 10, 10)

	// An unknown key, cached as missing, becomes known after forget.
	issued := issueForTest(t, NewRecordSpec{})
	hash := issued.Record.SHA256
	if _, err := c.lookup(ctx, store, hash); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if err := store.Create(ctx, issued.Record); err != nil {
		t.Fatal(err)
	}
	if _, err := c.lookup(ctx, store, hash); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expected the cached miss before forget, got %v", err)
	}
	c.forget(hash)
	rec, err := c.lookup(ctx, store, hash)
	if err != nil {
		t.Fatalf("after forget: %v", err)
	}

	// A revocation becomes visible after forget.
	if _, err := store.Update(ctx, rec.ID, revoke(time.Now())); err != nil {
		t.Fatal(err)
	}
	if rec, _ := c.lookup(ctx, store, hash); rec.RevokedAt != nil {
		t.Fatal("expected the cached record before forget")
	}
	c.forget(hash)
	if rec, _ := c.lookup(ctx, store, hash); rec == nil || rec.RevokedAt == nil {
		t.Errorf("after forget the revocation is not seen: %+v", rec)
	}
	if got := store.count(hash); got != 3 {
		t.Errorf("%d store reads, expected 3", got)
	}
	c.forget(HashKey("never seen")) // must not panic
}

func TestLookupCacheNegativeFloodKeepsKnown(t *testing.T) {
	ctx := context.Background()
	store := newCountingStore(t)
	const size, negative = 8, 4
	c, _ := newCacheForTest(t, time.Hour, size, negative)
	var known []string
	for i := 0; i < size; i++ {
		known = append(known, storeKey(t, store).Record.SHA256)
	}
	for _, h := range known {
		if _, err := c.lookup(ctx, store, h); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 100*negative; i++ {
		if _, err := c.lookup(ctx, store, HashKey(fmt.Sprintf("random-%d", i))); !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
	}
	if c.missing.Len() > negative {
		t.Errorf("negative cache holds %d entries, over its size %d", c.missing.Len(), negative)
	}
	before := store.total()
	for _, h := range known {
		if _, err := c.lookup(ctx, store, h); err != nil {
			t.Fatal(err)
		}
	}
	if reads := store.total() - before; reads != 0 {
		t.Errorf("a flood of unknown keys evicted %d known keys", reads)
	}
}

func TestLookupCacheSingleflight(t *testing.T) {
	for _, ttl := range []time.Duration{0, time.Hour} {
		t.Run(fmt.Sprintf("ttl=%s", ttl), func(t *testing.T) {
			ctx := context.Background()
			store := newCountingStore(t)
			c, _ := newCacheForTest(t, ttl, 10, 10)
			issued := storeKey(t, store)
			hash := issued.Record.SHA256

			store.gate = make(chan struct{})
			store.entered = make(chan struct{}, 100)
			const n = 50
			var started sync.WaitGroup
			var done sync.WaitGroup
			var failures atomic.Int32
			started.Add(n)
			done.Add(n)
			for i := 0; i < n; i++ {
				go func() {
					defer done.Done()
					started.Done()
					rec, err := c.lookup(ctx, store, hash)
					if err != nil || rec == nil || rec.ID != issued.Record.ID {
						failures.Add(1)
					}
				}()
			}
			started.Wait()
			<-store.entered // one read is in flight and held at the gate
			// Give every goroutine time to join the flight before it lands.
			time.Sleep(200 * time.Millisecond)
			close(store.gate)
			done.Wait()
			if failures.Load() != 0 {
				t.Errorf("%d callers got a wrong answer", failures.Load())
			}
			if got := store.count(hash); got != 1 {
				t.Errorf("%d concurrent misses made %d store reads, expected 1", n, got)
			}
		})
	}
}

func TestNewLookupCacheSizes(t *testing.T) {
	for i, tc := range []struct {
		size, negative int
		ok             bool
	}{
		{1, 1, true},
		{0, 1, false},
		{1, 0, false},
		{-1, 1, false},
	} {
		_, err := newLookupCache(time.Second, tc.size, tc.negative, time.Now)
		if (err == nil) != tc.ok {
			t.Errorf("Test %d: newLookupCache(size=%d, negative=%d) error = %v, expected ok=%t", i, tc.size, tc.negative, err, tc.ok)
		}
	}
}

// TestLookupCacheSharedReadOutlivesCancel: the caller whose request started the
// shared read leaves; the others waiting on it still get the record.
func TestLookupCacheSharedReadOutlivesCancel(t *testing.T) {
	store := newCountingStore(t)
	c, _ := newCacheForTest(t, time.Hour, 10, 10)
	issued := storeKey(t, store)
	store.gate = make(chan struct{})
	store.entered = make(chan struct{}, 10)

	first, cancel := context.WithCancel(context.Background())
	results := make(chan error, 2)
	go func() {
		_, err := c.lookup(first, store, issued.Record.SHA256)
		results <- err
	}()
	<-store.entered
	go func() {
		rec, err := c.lookup(context.Background(), store, issued.Record.SHA256)
		if err == nil && rec.ID != issued.Record.ID {
			err = fmt.Errorf("wrong record %s", rec.ID)
		}
		results <- err
	}()
	time.Sleep(100 * time.Millisecond) // let the second caller join the flight
	cancel()
	close(store.gate)
	for i := 0; i < 2; i++ {
		if err := <-results; err != nil {
			t.Errorf("a caller failed because another left: %v", err)
		}
	}
}

// TestLookupCacheForgetDuringRead: a write that forgets a hash while a store
// read of it is in flight must not be undone when that (now stale) read lands.
// keys.go: "Every write drops the key from this instance's cache at once, so
// the next request sees it"; a revocation is otherwise hidden for cache_ttl.
func TestLookupCacheForgetDuringRead(t *testing.T) {
	ctx := context.Background()
	store := newCountingStore(t)
	c, _ := newCacheForTest(t, time.Hour, 10, 10)
	issued := storeKey(t, store)
	hash := issued.Record.SHA256

	store.gate = make(chan struct{})
	store.afterRead = make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.lookup(ctx, store, hash) // reads the record while it is still active
	}()
	<-store.afterRead
	// The revocation lands and drops the hash from the cache, as App.RevokeKey does.
	if _, err := store.Store.Update(ctx, issued.Record.ID, revoke(time.Now())); err != nil {
		t.Fatal(err)
	}
	c.forget(hash)
	close(store.gate)
	<-done

	store.mu.Lock()
	store.afterRead, store.gate = nil, nil
	store.mu.Unlock()
	rec, err := c.lookup(ctx, store, hash)
	if err != nil {
		t.Fatal(err)
	}
	if rec.RevokedAt == nil {
		t.Errorf("after revoke+forget the cache serves the pre-revocation record (stale for cache_ttl): " +
			"the in-flight read's remember() re-added what forget() dropped")
	}
}
