package caddymodule

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"github.com/caddyserver/certmagic"
)

// storagePrefix is where key records live in Caddy's storage.
const storagePrefix = "wappchat"

// StorageStore keeps each record as one JSON object in Caddy's storage, named by
// its key hash, plus a small id -> hash index object for operator commands.
type StorageStore struct {
	storage certmagic.Storage
	sealer  Sealer
}

// NewStorageStore returns a store over Caddy's configured storage that seals
// secrets with sealer.
func NewStorageStore(storage certmagic.Storage, sealer Sealer) *StorageStore {
	return &StorageStore{storage: storage, sealer: sealer}
}

func recordPath(sha256Hex string) string { return path.Join(storagePrefix, "keys", sha256Hex+".json") }
func idPath(id string) string            { return path.Join(storagePrefix, "ids", id) }

var (
	sealMarkerPath  = path.Join(storagePrefix, "secrets_keys.json")
	storeMarkerPath = path.Join(storagePrefix, "store.json")
)

// Open marks the store as existing, so a store that disappears later (its
// directory removed, an unmounted volume) reads as unavailable, not as empty.
func (s *StorageStore) Open(ctx context.Context) error {
	if s.storage.Exists(ctx, storeMarkerPath) {
		return nil
	}
	if err := s.storage.Store(ctx, storeMarkerPath, []byte(`{"wappchat":"key store"}`)); err != nil {
		return fmt.Errorf("initializing the key store: %w", err)
	}
	return nil
}

func (s *StorageStore) Lookup(ctx context.Context, sha256Hex string) (*Record, error) {
	if !isHexHash(sha256Hex) {
		return nil, ErrNotFound
	}
	rec, err := s.load(ctx, sha256Hex)
	if errors.Is(err, ErrNotFound) && !s.storage.Exists(ctx, storeMarkerPath) {
		return nil, fmt.Errorf("the key store is gone (%s is missing)", storeMarkerPath)
	}
	return rec, err
}

func (s *StorageStore) Get(ctx context.Context, id string) (*Record, error) {
	sha256Hex, err := s.hashOf(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.load(ctx, sha256Hex)
}

// Create writes the id index before the record: a crash in between leaves an
// index entry pointing at nothing, never a working key that cannot be revoked.
func (s *StorageStore) Create(ctx context.Context, rec *Record) error {
	if !isHexHash(rec.SHA256) || !validID(rec.ID) {
		return fmt.Errorf("record has a malformed id or hash")
	}
	unlock, err := s.lock(ctx, rec.SHA256)
	if err != nil {
		return err
	}
	defer unlock()
	if s.storage.Exists(ctx, recordPath(rec.SHA256)) || s.storage.Exists(ctx, idPath(rec.ID)) {
		return ErrExists
	}
	if err := s.storage.Store(ctx, idPath(rec.ID), []byte(rec.SHA256)); err != nil {
		return fmt.Errorf("writing key index: %w", err)
	}
	if err := s.save(ctx, rec); err != nil {
		_ = s.storage.Delete(ctx, idPath(rec.ID)) // a failed create leaves nothing behind
		return err
	}
	return nil
}

// Put writes rec whether or not it exists (migrations), indexes included.
func (s *StorageStore) Put(ctx context.Context, rec *Record) error {
	unlock, err := s.lock(ctx, rec.SHA256)
	if err != nil {
		return err
	}
	defer unlock()
	if err := s.storage.Store(ctx, idPath(rec.ID), []byte(rec.SHA256)); err != nil {
		return fmt.Errorf("writing key index: %w", err)
	}
	return s.save(ctx, rec)
}

func (s *StorageStore) Update(ctx context.Context, id string, change func(*Record) error) (*Record, error) {
	sha256Hex, err := s.hashOf(ctx, id)
	if err != nil {
		return nil, err
	}
	unlock, err := s.lock(ctx, sha256Hex)
	if err != nil {
		return nil, err
	}
	defer unlock()
	rec, err := s.load(ctx, sha256Hex)
	if err != nil {
		return nil, err
	}
	if err := change(rec); err != nil {
		return nil, err
	}
	return rec, s.save(ctx, rec)
}

// List loads every record: Caddy's storage has no index by tenant.
func (s *StorageStore) List(ctx context.Context, tenant string) ([]*Record, error) {
	names, err := s.storage.List(ctx, path.Join(storagePrefix, "keys"), false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing keys: %w", err)
	}
	records := make([]*Record, 0, len(names))
	for _, name := range names {
		// Skip what is not a record, such as the temporary file of a write that was killed.
		sha256Hex, isRecord := strings.CutSuffix(path.Base(name), ".json")
		if !isRecord || !isHexHash(sha256Hex) {
			continue
		}
		rec, err := s.load(ctx, sha256Hex)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if tenant == "" || rec.Tenant == tenant {
			records = append(records, rec)
		}
	}
	return records, nil
}

// SealedWith lists the fingerprints of secrets keys records may be sealed under.
func (s *StorageStore) SealedWith(ctx context.Context) ([]string, error) {
	b, err := s.storage.Load(ctx, sealMarkerPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", sealMarkerPath, err)
	}
	var fingerprints []string
	if err := json.Unmarshal(b, &fingerprints); err != nil {
		return nil, fmt.Errorf("%s is corrupted", sealMarkerPath)
	}
	return fingerprints, nil
}

// SetSealedWith records which secrets keys records may be sealed under.
func (s *StorageStore) SetSealedWith(ctx context.Context, fingerprints []string) error {
	b, err := json.Marshal(fingerprints)
	if err != nil {
		return err
	}
	return s.storage.Store(ctx, sealMarkerPath, b)
}

func (s *StorageStore) hashOf(ctx context.Context, id string) (string, error) {
	if !validID(id) {
		return "", ErrNotFound
	}
	b, err := s.storage.Load(ctx, idPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("reading key index: %w", err)
	}
	if !isHexHash(string(b)) {
		return "", fmt.Errorf("key index for %s is corrupted", id)
	}
	return string(b), nil
}

func (s *StorageStore) load(ctx context.Context, sha256Hex string) (*Record, error) {
	b, err := s.storage.Load(ctx, recordPath(sha256Hex))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading key record: %w", err)
	}
	return s.sealer.decode(b, sha256Hex)
}

func (s *StorageStore) save(ctx context.Context, rec *Record) error {
	b, err := s.sealer.encode(rec)
	if err != nil {
		return err
	}
	if err := s.storage.Store(ctx, recordPath(rec.SHA256), b); err != nil {
		return fmt.Errorf("writing key record: %w", err)
	}
	return nil
}

func (s *StorageStore) lock(ctx context.Context, sha256Hex string) (func(), error) {
	name := path.Join(storagePrefix, "keys", sha256Hex)
	if err := s.storage.Lock(ctx, name); err != nil {
		return nil, fmt.Errorf("locking key record: %w", err)
	}
	return func() { _ = s.storage.Unlock(context.WithoutCancel(ctx), name) }, nil
}

func isHexHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

func validID(id string) bool {
	rest, ok := strings.CutPrefix(id, idPrefix)
	if !ok || len(rest) == 0 || len(rest) > 64 {
		return false
	}
	for _, c := range rest {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

var _ Store = (*StorageStore)(nil)
