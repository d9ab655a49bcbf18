package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// The key operations shared by the admin API and the CLI. Every write drops the
// key from this instance's cache at once, so the next request sees it.

// CreateKey issues (or imports) a key and stores its record.
func (a *App) CreateKey(ctx context.Context, spec NewRecordSpec) (*Issued, error) {
	issued, err := Issue(spec, time.Now())
	if err != nil {
		return nil, err
	}
	if err := a.store.Create(ctx, issued.Record); err != nil {
		return nil, err
	}
	a.cache.forget(issued.Record.SHA256)
	return issued, nil
}

// RevokeKey revokes a key for good; the record stays for audit.
func (a *App) RevokeKey(ctx context.Context, id string) (*Record, error) {
	return a.updateKey(ctx, id, revoke(time.Now()))
}

// ErrSigningState: the key is revoked, or rotate-secret was asked of a key
// without a secret, or enable-signing of a key that has one.
var ErrSigningState = errors.New("the key's signing state does not allow this")

// RotateSecret gives a signing key a new secret; the old ones keep verifying
// for grace (0 retires them at once). The new secret is returned once.
func (a *App) RotateSecret(ctx context.Context, id string, grace time.Duration) (*Issued, error) {
	return a.addSecret(ctx, id, grace, true)
}

// EnableSigning gives a key without a secret its first one.
func (a *App) EnableSigning(ctx context.Context, id string) (*Issued, error) {
	return a.addSecret(ctx, id, 0, false)
}

func (a *App) addSecret(ctx context.Context, id string, grace time.Duration, wantSigning bool) (*Issued, error) {
	var secret string
	rec, err := a.updateKey(ctx, id, func(rec *Record) error {
		now := time.Now()
		if rec.RevokedAt != nil || (len(rec.liveSecrets(now)) > 0) != wantSigning {
			return ErrSigningState
		}
		secret = rec.AddSecret(now, grace)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &Issued{Record: rec, Secret: secret}, nil
}

// Reencrypt rewrites every record sealed under the configured secrets key (or
// unsealed without one), then records that no other key is needed. Until it
// finishes, the old keys stay listed, so a sidecar without them refuses to
// start rather than fail on half the keys; running it again is safe.
func (a *App) Reencrypt(ctx context.Context) (int, error) {
	records, err := a.store.List(ctx, "")
	if err != nil {
		return 0, err
	}
	for _, rec := range records {
		if _, err := a.store.Update(ctx, rec.ID, func(*Record) error { return nil }); err != nil {
			return 0, fmt.Errorf("rewriting %s: %w", rec.ID, err)
		}
	}
	var fingerprints []string
	if current := a.sealer.Current; current != nil {
		fingerprints = []string{current.Fingerprint}
	}
	return len(records), a.store.SetSealedWith(ctx, fingerprints)
}

// Migrate copies every record between Caddy's storage and the configured
// shared store (toShared picks the direction), overwriting copies already
// there, so running it again is harmless.
func (a *App) Migrate(ctx context.Context, toShared bool) (int, error) {
	if a.backend == nil {
		return 0, errors.New("the config has no wappchat store other than Caddy's storage to migrate to or from")
	}
	from, to := Store(NewStorageStore(a.storage, a.sealer)), a.store
	if !toShared {
		from, to = to, from
	}
	records, err := from.List(ctx, "")
	if err != nil {
		return 0, err
	}
	for _, rec := range records {
		if err := to.Put(ctx, rec); err != nil {
			return 0, fmt.Errorf("copying %s: %w", rec.ID, err)
		}
	}
	// Records keep their sealing, so the destination needs the same keys.
	fingerprints, err := from.SealedWith(ctx)
	if err != nil {
		return 0, err
	}
	existing, err := to.SealedWith(ctx)
	if err != nil {
		return 0, err
	}
	for _, fp := range fingerprints {
		if !slices.Contains(existing, fp) {
			existing = append(existing, fp)
		}
	}
	return len(records), to.SetSealedWith(ctx, existing)
}

// GetKey returns one record.
func (a *App) GetKey(ctx context.Context, id string) (*Record, error) {
	return a.store.Get(ctx, id)
}

// ListKeys returns summaries ordered by creation, of one tenant when tenant is
// set, revoked keys only when all is set.
func (a *App) ListKeys(ctx context.Context, tenant string, all bool) ([]Summary, error) {
	records, err := a.store.List(ctx, tenant)
	if err != nil {
		return nil, err
	}
	summaries := []Summary{}
	for _, rec := range records {
		if all || rec.RevokedAt == nil {
			summaries = append(summaries, rec.Summary())
		}
	}
	slices.SortFunc(summaries, func(a, b Summary) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return summaries, nil
}

func (a *App) updateKey(ctx context.Context, id string, change func(*Record) error) (*Record, error) {
	rec, err := a.store.Update(ctx, id, change)
	if err != nil {
		return nil, err
	}
	a.cache.forget(rec.SHA256)
	return rec, nil
}

// revoke marks a record revoked at now, keeping the first revocation time.
func revoke(now time.Time) func(*Record) error {
	return func(rec *Record) error {
		if rec.RevokedAt == nil {
			at := now.UTC()
			rec.RevokedAt = &at
		}
		return nil
	}
}

// IssuedView is the one output that carries a raw key and secret, shown once.
type IssuedView struct {
	Summary
	Key    string `json:"key,omitempty"`
	Secret string `json:"secret,omitempty"`
}

// View is what the admin API and the CLI print for a new key.
func (i *Issued) View() IssuedView {
	return IssuedView{Summary: i.Record.Summary(), Key: i.Key, Secret: i.Secret}
}
