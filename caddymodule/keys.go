package caddymodule

import (
	"context"
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

// GetKey returns one record.
func (a *App) GetKey(ctx context.Context, id string) (*Record, error) {
	return a.store.Get(ctx, id)
}

// ListKeys returns summaries ordered by creation, of one tenant when tenant is
// set, revoked keys only when all is set.
func (a *App) ListKeys(ctx context.Context, tenant string, all bool) ([]Summary, error) {
	records, err := a.store.List(ctx)
	if err != nil {
		return nil, err
	}
	summaries := []Summary{}
	for _, rec := range records {
		if (tenant == "" || rec.Tenant == tenant) && (all || rec.RevokedAt == nil) {
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
