package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

func newFileStore(t *testing.T) (*StorageStore, string) {
	t.Helper()
	dir := t.TempDir()
	store := NewStorageStore(&certmagic.FileStorage{Path: dir}, Sealer{})
	if err := store.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	return store, dir
}

func TestStorageStoreGoneIsNotEmpty(t *testing.T) {
	store, dir := newFileStore(t)
	if _, err := store.Lookup(context.Background(), HashKey("unknown")); err != ErrNotFound {
		t.Fatalf("unknown key in a present store: %v, expected ErrNotFound", err)
	}
	if err := os.RemoveAll(filepath.Join(dir, storagePrefix)); err != nil {
		t.Fatal(err)
	}
	_, err := store.Lookup(context.Background(), HashKey("unknown"))
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup in a removed store: %v, expected an error that is not ErrNotFound", err)
	}
}

func issueForTest(t *testing.T, spec NewRecordSpec) *Issued {
	t.Helper()
	if spec.Tenant == "" {
		spec.Tenant = "tenant_1"
	}
	issued, err := Issue(spec, time.Unix(1779111111, 0))
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	return issued
}

func TestStorageStoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	store, dir := newFileStore(t)

	if recs, err := store.List(ctx, ""); err != nil || len(recs) != 0 {
		t.Fatalf("List on an empty store = %v, %v; expected nothing and no error", recs, err)
	}

	a := issueForTest(t, NewRecordSpec{Tenant: "acme", Name: "a", Signing: true, Expires: time.Hour})
	b := issueForTest(t, NewRecordSpec{Tenant: "other", Name: "b"})
	for _, issued := range []*Issued{a, b} {
		if err := store.Create(ctx, issued.Record); err != nil {
			t.Fatalf("Create: %v", err)
		}
	}

	got, err := store.Lookup(ctx, HashKey(a.Key))
	if err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	if got.ID != a.Record.ID || got.Tenant != "acme" || got.Name != "a" || len(got.Secrets) != 1 ||
		got.Secrets[0].Value != a.Secret || got.ExpiresAt == nil || !got.ExpiresAt.Equal(*a.Record.ExpiresAt) ||
		!got.CreatedAt.Equal(a.Record.CreatedAt) {
		t.Errorf("Lookup returned %+v, expected %+v", got, a.Record)
	}

	got, err = store.Get(ctx, b.Record.ID)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got.SHA256 != HashKey(b.Key) || got.Tenant != "other" {
		t.Errorf("Get returned %+v, expected %+v", got, b.Record)
	}

	updated, err := store.Update(ctx, b.Record.ID, func(r *Record) error {
		r.Name = "renamed"
		return nil
	})
	if err != nil || updated.Name != "renamed" {
		t.Fatalf("Update = %+v, %v", updated, err)
	}
	if got, _ := store.Lookup(ctx, HashKey(b.Key)); got == nil || got.Name != "renamed" {
		t.Errorf("update not persisted: %+v", got)
	}

	// A failing change writes nothing.
	changeErr := errors.New("no")
	if _, err := store.Update(ctx, b.Record.ID, func(r *Record) error { r.Name = "lost"; return changeErr }); !errors.Is(err, changeErr) {
		t.Errorf("Update with a failing change returned %v, expected %v", err, changeErr)
	}
	if got, _ := store.Get(ctx, b.Record.ID); got == nil || got.Name != "renamed" {
		t.Errorf("a failed change was written: %+v", got)
	}

	recs, err := store.List(ctx, "")
	if err != nil || len(recs) != 2 {
		t.Fatalf("List = %d records, %v; expected 2", len(recs), err)
	}
	ids := map[string]bool{}
	for _, r := range recs {
		ids[r.ID] = true
	}
	if !ids[a.Record.ID] || !ids[b.Record.ID] {
		t.Errorf("List ids %v, expected %s and %s", ids, a.Record.ID, b.Record.ID)
	}

	// Records live under wappchat/ in the storage.
	if _, err := os.Stat(filepath.Join(dir, "wappchat", "keys", HashKey(a.Key)+".json")); err != nil {
		t.Errorf("record not stored under wappchat/keys: %v", err)
	}
}

func TestStorageStoreCreateExists(t *testing.T) {
	ctx := context.Background()
	store, _ := newFileStore(t)
	orig := issueForTest(t, NewRecordSpec{Tenant: "acme"})
	if err := store.Create(ctx, orig.Record); err != nil {
		t.Fatal(err)
	}

	sameHash := *orig.Record
	sameHash.ID = "key_0123456789ab"
	sameHash.Tenant = "attacker"
	if err := store.Create(ctx, &sameHash); !errors.Is(err, ErrExists) {
		t.Errorf("Create with a duplicate hash returned %v, expected ErrExists", err)
	}

	sameID := *issueForTest(t, NewRecordSpec{Tenant: "attacker"}).Record
	sameID.ID = orig.Record.ID
	if err := store.Create(ctx, &sameID); !errors.Is(err, ErrExists) {
		t.Errorf("Create with a duplicate id returned %v, expected ErrExists", err)
	}

	// Neither attempt changed the stored record or the id index.
	got, err := store.Get(ctx, orig.Record.ID)
	if err != nil || got.Tenant != "acme" || got.SHA256 != orig.Record.SHA256 {
		t.Errorf("after duplicate creates, Get = %+v, %v", got, err)
	}
	if _, err := store.Get(ctx, sameHash.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("the refused record's id was indexed: %v", err)
	}
	if _, err := store.Lookup(ctx, sameID.SHA256); !errors.Is(err, ErrNotFound) {
		t.Errorf("the refused record's hash was stored: %v", err)
	}

	for i, rec := range []*Record{
		{ID: "key_abc", SHA256: "nothex"},
		{ID: "key_abc", SHA256: strings.ToUpper(HashKey("x"))},
		{ID: "../escape", SHA256: HashKey("x")},
		{ID: "", SHA256: HashKey("x")},
	} {
		if err := store.Create(ctx, rec); err == nil {
			t.Errorf("Test %d: Create accepted a malformed record %+v", i, rec)
		}
	}
}

func TestStorageStoreNotFound(t *testing.T) {
	ctx := context.Background()
	store, dir := newFileStore(t)
	issued := issueForTest(t, NewRecordSpec{})
	if err := store.Create(ctx, issued.Record); err != nil {
		t.Fatal(err)
	}
	// A file outside wappchat/ that a traversal would reach.
	if err := os.WriteFile(filepath.Join(dir, "x"), []byte(issued.Record.SHA256), 0o600); err != nil {
		t.Fatal(err)
	}

	for i, id := range []string{
		"key_0000000000000000",
		"",
		"key_",
		"../x",
		"key_../../x",
		"key_../../",
		"key_/../../x",
		"KEY_" + strings.TrimPrefix(issued.Record.ID, "key_"),
		strings.ToUpper(issued.Record.ID),
		issued.Record.ID + "/",
		issued.Record.ID + "\x00",
		"key_" + strings.Repeat("a", 65),
		"key_" + issued.Record.SHA256[:10] + "g",
		issued.Record.SHA256,
	} {
		if rec, err := store.Get(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Test %d: Get(%q) = %+v, %v; expected ErrNotFound", i, id, rec, err)
		}
		if _, err := store.Update(ctx, id, func(r *Record) error { r.Tenant = "x"; return nil }); !errors.Is(err, ErrNotFound) {
			t.Errorf("Test %d: Update(%q) = %v; expected ErrNotFound", i, id, err)
		}
	}

	for i, hash := range []string{
		HashKey("unknown"),
		"",
		strings.ToUpper(issued.Record.SHA256),
		issued.Record.SHA256[:63],
		issued.Record.SHA256 + "0",
		"../../x",
		"../" + issued.Record.SHA256[3:],
		issued.Record.SHA256[:62] + "zz",
		issued.Key, // the raw key is not its hash
	} {
		if rec, err := store.Lookup(ctx, hash); !errors.Is(err, ErrNotFound) {
			t.Errorf("Test %d: Lookup(%q) = %+v, %v; expected ErrNotFound", i, hash, rec, err)
		}
	}
}

func TestStorageStoreCorrupted(t *testing.T) {
	ctx := context.Background()
	for i, tc := range []struct {
		name    string
		corrupt func(dir string, rec *Record) error
	}{
		{"record not JSON", func(dir string, rec *Record) error {
			return os.WriteFile(filepath.Join(dir, "wappchat", "keys", rec.SHA256+".json"), []byte("{not json"), 0o600)
		}},
		{"record empty", func(dir string, rec *Record) error {
			return os.WriteFile(filepath.Join(dir, "wappchat", "keys", rec.SHA256+".json"), nil, 0o600)
		}},
		{"record for another hash", func(dir string, rec *Record) error {
			return os.WriteFile(filepath.Join(dir, "wappchat", "keys", rec.SHA256+".json"),
				[]byte(fmt.Sprintf(`{"id":%q,"tenant":"t","sha256":%q}`, rec.ID, HashKey("other"))), 0o600)
		}},
		{"record without id", func(dir string, rec *Record) error {
			return os.WriteFile(filepath.Join(dir, "wappchat", "keys", rec.SHA256+".json"),
				[]byte(fmt.Sprintf(`{"tenant":"t","sha256":%q}`, rec.SHA256)), 0o600)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store, dir := newFileStore(t)
			issued := issueForTest(t, NewRecordSpec{})
			if err := store.Create(ctx, issued.Record); err != nil {
				t.Fatal(err)
			}
			if err := tc.corrupt(dir, issued.Record); err != nil {
				t.Fatal(err)
			}
			if rec, err := store.Lookup(ctx, issued.Record.SHA256); err == nil || errors.Is(err, ErrNotFound) {
				t.Errorf("Test %d: Lookup of a corrupted record = %+v, %v; expected an error other than ErrNotFound", i, rec, err)
			}
			if rec, err := store.Get(ctx, issued.Record.ID); err == nil || errors.Is(err, ErrNotFound) {
				t.Errorf("Test %d: Get of a corrupted record = %+v, %v; expected an error other than ErrNotFound", i, rec, err)
			}
			if _, err := store.List(ctx, ""); err == nil {
				t.Errorf("Test %d: List with a corrupted record returned no error", i)
			}
		})
	}

	t.Run("id index corrupted", func(t *testing.T) {
		store, dir := newFileStore(t)
		issued := issueForTest(t, NewRecordSpec{})
		if err := store.Create(ctx, issued.Record); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "wappchat", "ids", issued.Record.ID), []byte("../../etc/passwd"), 0o600); err != nil {
			t.Fatal(err)
		}
		if rec, err := store.Get(ctx, issued.Record.ID); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("Get through a corrupted index = %+v, %v; expected an error other than ErrNotFound", rec, err)
		}
	})
}

func TestStorageStoreNeverWritesRawKey(t *testing.T) {
	ctx := context.Background()
	store, dir := newFileStore(t)
	var keys []string
	for i := 0; i < 5; i++ {
		issued := issueForTest(t, NewRecordSpec{Signing: i%2 == 0})
		if err := store.Create(ctx, issued.Record); err != nil {
			t.Fatal(err)
		}
		if _, err := store.Update(ctx, issued.Record.ID, revoke(time.Now())); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, issued.Key)
	}
	files := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, key := range keys {
			random := strings.TrimPrefix(key, KeyPrefix)
			if strings.Contains(string(b), random) || strings.Contains(p, random) {
				t.Errorf("raw key %q found in %s", key, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < len(keys) {
		t.Fatalf("walked only %d files; the test looked at the wrong directory", files)
	}
}

func TestStorageStoreRevokeKeepsFirst(t *testing.T) {
	ctx := context.Background()
	store, _ := newFileStore(t)
	issued := issueForTest(t, NewRecordSpec{})
	if err := store.Create(ctx, issued.Record); err != nil {
		t.Fatal(err)
	}
	first := time.Date(2026, 5, 19, 10, 0, 0, 0, time.UTC)
	rec, err := store.Update(ctx, issued.Record.ID, revoke(first))
	if err != nil || rec.RevokedAt == nil || !rec.RevokedAt.Equal(first) {
		t.Fatalf("first revoke = %+v, %v", rec, err)
	}
	rec, err = store.Update(ctx, issued.Record.ID, revoke(first.Add(time.Hour)))
	if err != nil || rec.RevokedAt == nil || !rec.RevokedAt.Equal(first) {
		t.Fatalf("second revoke changed revoked_at: %+v, %v", rec.RevokedAt, err)
	}
	got, err := store.Lookup(ctx, issued.Record.SHA256)
	if err != nil || got.RevokedAt == nil || !got.RevokedAt.Equal(first) {
		t.Errorf("stored revoked_at = %v, %v; expected %v", got, err, first)
	}
	if got.Check(first.Add(2*time.Hour)) != ErrKeyRevoked {
		t.Error("revoked record passes Check")
	}
}

func TestStorageStoreConcurrentUpdates(t *testing.T) {
	ctx := context.Background()
	store, _ := newFileStore(t)
	issued := issueForTest(t, NewRecordSpec{})
	if err := store.Create(ctx, issued.Record); err != nil {
		t.Fatal(err)
	}
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := 0; i < n; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, err := store.Update(ctx, issued.Record.ID, func(r *Record) error {
				r.Secrets = append(r.Secrets, Secret{Value: fmt.Sprintf("s%03d", i)})
				return nil
			})
			errs <- err
		}()
		go func() {
			defer wg.Done()
			errs <- store.Create(ctx, issueForTest(t, NewRecordSpec{Tenant: fmt.Sprintf("t%03d", i)}).Record)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent write failed: %v", err)
		}
	}
	got, err := store.Get(ctx, issued.Record.ID)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, s := range got.Secrets {
		seen[s.Value] = true
	}
	if len(got.Secrets) != n || len(seen) != n {
		t.Errorf("after %d concurrent updates the record has %d secrets (%d distinct): updates were lost", n, len(got.Secrets), len(seen))
	}
	recs, err := store.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != n+1 {
		t.Errorf("after %d concurrent creates List has %d records, expected %d", n, len(recs), n+1)
	}
}

func TestStorageStoreSealedSecrets(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fs := &certmagic.FileStorage{Path: dir}
	key, err := ParseSecretsKey("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
	if err != nil {
		t.Fatal(err)
	}
	other, err := ParseSecretsKey(strings.Repeat("A", 43) + "=")
	if err != nil {
		t.Fatal(err)
	}
	store := NewStorageStore(fs, Sealer{Current: key})
	if err := store.Open(ctx); err != nil {
		t.Fatal(err)
	}
	issued := issueForTest(t, NewRecordSpec{Signing: true})
	if err := store.Create(ctx, issued.Record); err != nil {
		t.Fatal(err)
	}
	if issued.Record.Secrets[0].Value != issued.Secret {
		t.Error("Create changed the caller's record (secret value replaced by its sealed form)")
	}
	got, err := store.Lookup(ctx, issued.Record.SHA256)
	if err != nil || len(got.Secrets) != 1 || got.Secrets[0].Value != issued.Secret || got.Secrets[0].Sealed != nil {
		t.Fatalf("sealed round trip = %+v, %v", got, err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "wappchat", "keys", issued.Record.SHA256+".json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), strings.TrimPrefix(issued.Secret, secretPrefix)) {
		t.Errorf("sealed store wrote the secret in clear: %s", raw)
	}

	for i, s := range []*StorageStore{
		NewStorageStore(fs, Sealer{}),
		NewStorageStore(fs, Sealer{Current: other}),
	} {
		if rec, err := s.Lookup(ctx, issued.Record.SHA256); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("Test %d: a store without the sealing key read %+v, %v; expected an error other than ErrNotFound", i, rec, err)
		}
	}
	if rec, err := NewStorageStore(fs, Sealer{Current: other, Others: []*SecretsKey{key}}).Lookup(ctx, issued.Record.SHA256); err != nil || rec.Secrets[0].Value != issued.Secret {
		t.Errorf("old key in Others does not open: %+v, %v", rec, err)
	}

	// A sealed secret moved into another record does not open there.
	victim := issueForTest(t, NewRecordSpec{})
	if err := store.Create(ctx, victim.Record); err != nil {
		t.Fatal(err)
	}
	var stolen Record
	if err := json.Unmarshal(raw, &stolen); err != nil {
		t.Fatal(err)
	}
	vpath := filepath.Join(dir, "wappchat", "keys", victim.Record.SHA256+".json")
	vraw, _ := os.ReadFile(vpath)
	var v Record
	if err := json.Unmarshal(vraw, &v); err != nil {
		t.Fatal(err)
	}
	v.Secrets = stolen.Secrets
	vraw, _ = json.Marshal(v)
	if err := os.WriteFile(vpath, vraw, 0o600); err != nil {
		t.Fatal(err)
	}
	if rec, err := store.Lookup(ctx, victim.Record.SHA256); err == nil {
		t.Errorf("a sealed secret moved to another record opened: %+v", rec.Secrets)
	}
}

// A write killed midway leaves a temporary file beside the records; listing skips it.
func TestStorageStoreListSkipsLeftovers(t *testing.T) {
	store, dir := newFileStore(t)
	issued := issueForTest(t, NewRecordSpec{})
	if err := store.Create(context.Background(), issued.Record); err != nil {
		t.Fatal(err)
	}
	leftover := filepath.Join(dir, storagePrefix, "keys", "1786930668")
	if err := os.WriteFile(leftover, []byte(`{"id":`), 0o600); err != nil {
		t.Fatal(err)
	}
	records, err := store.List(context.Background(), "")
	if err != nil || len(records) != 1 || records[0].ID != issued.Record.ID {
		t.Fatalf("List = %v, %v; expected only %s", records, err, issued.Record.ID)
	}
}
