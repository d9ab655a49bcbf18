package caddymodule

import (
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"time"
)

// ErrClaimed: the same signed request was already accepted inside its window.
var ErrClaimed = errors.New("signed request already claimed")

// ErrClaimsFull: the claim store holds as many live claims as it may.
var ErrClaimsFull = errors.New("replay claim store is full")

// ClaimID identifies one signed request: key id, timestamp and signature.
type ClaimID [16]byte

// NewClaimID hashes the parts of a signed request that make it unique.
func NewClaimID(keyID string, signed SignedHeaders) ClaimID {
	// Key ids and timestamps are short: hashing a stack buffer allocates nothing.
	var buf [128]byte
	b := append(buf[:0], keyID...)
	b = append(b, 0)
	b = append(b, signed.Timestamp...)
	b = append(b, 0)
	b = append(b, signed.Signature[:]...)
	sum := sha256.Sum256(b)
	var id ClaimID
	copy(id[:], sum[:])
	return id
}

// Claims remembers accepted signed requests until their timestamp leaves the
// tolerance window, so each is accepted once.
type Claims interface {
	// Claim records id as used through lastValid (unix seconds, inclusive).
	// It returns ErrClaimed if id is already live, ErrClaimsFull when no room is
	// left, or another error when the claim could not be recorded.
	Claim(ctx context.Context, id ClaimID, lastValid int64) error
}

// claimSweepInterval is how often expired claims are dropped when not full.
const claimSweepInterval = 30

// MemoryClaims keeps claims in one map bounded by capacity. It never forgets a
// live claim to make room: when full of live claims it refuses new ones.
type MemoryClaims struct {
	mu        sync.Mutex
	live      map[ClaimID]int64 // claim -> last unix second it guards
	capacity  int
	now       func() time.Time
	lastSweep int64
}

// NewMemoryClaims returns an in-memory claim store for at most capacity live claims.
func NewMemoryClaims(capacity int, now func() time.Time) *MemoryClaims {
	return &MemoryClaims{live: make(map[ClaimID]int64), capacity: capacity, now: now}
}

func (c *MemoryClaims) Claim(_ context.Context, id ClaimID, lastValid int64) error {
	now := c.now().Unix()
	c.mu.Lock()
	defer c.mu.Unlock()
	if until, ok := c.live[id]; (ok && now <= until) || now > lastValid {
		return ErrClaimed // a window already over cannot be claimed: never accept it
	}
	if len(c.live) >= c.capacity || now-c.lastSweep >= claimSweepInterval {
		c.sweep(now)
	}
	if len(c.live) >= c.capacity {
		return ErrClaimsFull
	}
	c.live[id] = lastValid
	return nil
}

// sweep drops expired claims; at most once a second, so a store full of live
// claims costs a refusal, not a scan, per request.
func (c *MemoryClaims) sweep(now int64) {
	if now == c.lastSweep {
		return
	}
	c.lastSweep = now
	for id, until := range c.live {
		if now > until {
			delete(c.live, id)
		}
	}
}

// SetCapacity changes the bound, when a reloaded config asks for another one.
func (c *MemoryClaims) SetCapacity(capacity int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.capacity = capacity
}

// Destruct implements caddy.Destructor: nothing to release.
func (c *MemoryClaims) Destruct() error { return nil }

// Len reports how many claims are held, live or not yet swept.
func (c *MemoryClaims) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.live)
}

var _ Claims = (*MemoryClaims)(nil)
