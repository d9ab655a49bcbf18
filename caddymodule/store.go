package caddymodule

import (
	"context"
	"errors"
)

// ErrNotFound: no record has this key hash or id.
var ErrNotFound = errors.New("no such key")

// ErrExists: a record with this key hash or id is already stored.
var ErrExists = errors.New("a key with this hash or id already exists")

// Store keeps key records. Lookup is the request path: one read by key hash.
// Implementations are safe for concurrent use by several processes.
type Store interface {
	// Open prepares the store at start; it fails if the store cannot be used.
	Open(ctx context.Context) error
	// Lookup returns the record whose key hashes to sha256Hex, or ErrNotFound.
	Lookup(ctx context.Context, sha256Hex string) (*Record, error)
	// Get returns the record with this id, or ErrNotFound.
	Get(ctx context.Context, id string) (*Record, error)
	// Create stores a new record, or returns ErrExists.
	Create(ctx context.Context, rec *Record) error
	// Update applies change to the stored record with this id under a lock.
	Update(ctx context.Context, id string, change func(*Record) error) (*Record, error)
	// Put writes a record whether or not it exists (migration between stores).
	Put(ctx context.Context, rec *Record) error
	// List returns every record of tenant ("" for all), revoked ones included.
	List(ctx context.Context, tenant string) ([]*Record, error)
	// SealedWith lists the fingerprints of the secrets keys records may be
	// sealed under, so a sidecar without them refuses to start.
	SealedWith(ctx context.Context) ([]string, error)
	// SetSealedWith replaces that list.
	SetSealedWith(ctx context.Context, fingerprints []string) error
}
