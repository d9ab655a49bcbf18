package caddymodule

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestIssueGeneratesKey(t *testing.T) {
	now := time.Date(2026, 5, 19, 10, 0, 0, 0, time.FixedZone("X", 3600))
	seen := map[string]bool{}
	for i := 0; i < 50; i++ {
		issued, err := Issue(NewRecordSpec{Tenant: "tenant_1", Name: "crm"}, now)
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		rec := issued.Record
		if !strings.HasPrefix(issued.Key, KeyPrefix) {
			t.Fatalf("key %q does not start with %q", issued.Key, KeyPrefix)
		}
		random, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(issued.Key, KeyPrefix))
		if err != nil {
			t.Fatalf("key %q is not base64url after the prefix: %v", issued.Key, err)
		}
		if len(random) < 32 {
			t.Fatalf("key carries %d random bytes, expected at least 32", len(random))
		}
		if seen[issued.Key] || seen[rec.ID] {
			t.Fatalf("key or id repeated after %d issues", i)
		}
		seen[issued.Key], seen[rec.ID] = true, true

		if rec.SHA256 != HashKey(issued.Key) {
			t.Errorf("record sha256 %s is not HashKey(key) %s", rec.SHA256, HashKey(issued.Key))
		}
		if !isHexHash(rec.SHA256) {
			t.Errorf("record sha256 %q is not 64 lowercase hex digits", rec.SHA256)
		}
		if !validID(rec.ID) {
			t.Errorf("record id %q is not a valid id", rec.ID)
		}
		if rec.Tenant != "tenant_1" || rec.Name != "crm" {
			t.Errorf("tenant/name = %q/%q", rec.Tenant, rec.Name)
		}
		if !rec.CreatedAt.Equal(now) || rec.CreatedAt.Location() != time.UTC {
			t.Errorf("created_at = %v, expected %v in UTC", rec.CreatedAt, now)
		}
		if issued.Secret != "" || len(rec.Secrets) != 0 {
			t.Errorf("a key issued without signing has a secret: %q %v", issued.Secret, rec.Secrets)
		}
		if rec.ExpiresAt != nil || rec.RevokedAt != nil {
			t.Errorf("expires/revoked set: %v %v", rec.ExpiresAt, rec.RevokedAt)
		}
		b, _ := json.Marshal(rec)
		if strings.Contains(string(b), issued.Key) {
			t.Errorf("the record as stored contains the raw key: %s", b)
		}
	}
}

func TestIssueSigningAndExpiry(t *testing.T) {
	now := time.Unix(1779111111, 0)
	issued, err := Issue(NewRecordSpec{Tenant: "t", Signing: true, Expires: 720 * time.Hour}, now)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	rec := issued.Record
	if issued.Secret == "" {
		t.Fatal("signing key issued without a secret")
	}
	if issued.Secret == issued.Key || strings.Contains(issued.Secret, strings.TrimPrefix(issued.Key, KeyPrefix)) {
		t.Error("secret is derived from the key")
	}
	if len(rec.Secrets) != 1 || rec.Secrets[0].Value != issued.Secret || rec.Secrets[0].ExpiresAt != nil {
		t.Fatalf("record secrets = %+v, expected the one issued secret", rec.Secrets)
	}
	if raw := strings.TrimPrefix(issued.Secret, secretPrefix); raw == issued.Secret {
		t.Errorf("secret %q lacks prefix %q", issued.Secret, secretPrefix)
	} else if b, err := base64.RawURLEncoding.DecodeString(raw); err != nil || len(b) < 32 {
		t.Errorf("secret carries %d random bytes (err %v), expected at least 32", len(b), err)
	}
	if rec.ExpiresAt == nil || !rec.ExpiresAt.Equal(now.Add(720*time.Hour)) {
		t.Errorf("expires_at = %v, expected %v", rec.ExpiresAt, now.Add(720*time.Hour))
	}
	if got := rec.liveSecrets(now); len(got) != 1 || got[0].Value != issued.Secret {
		t.Errorf("liveSecrets = %v, expected the issued secret", got)
	}
}

func TestIssueImport(t *testing.T) {
	legacyKey := "legacy_key_from_elsewhere"
	sum := sha256.Sum256([]byte(legacyKey))
	upper := strings.ToUpper(hex.EncodeToString(sum[:]))
	now := time.Unix(1779111111, 0)

	issued, err := Issue(NewRecordSpec{Tenant: "acme", SHA256: upper}, now)
	if err != nil {
		t.Fatalf("Issue(import): %v", err)
	}
	if issued.Key != "" {
		t.Errorf("import generated a key %q", issued.Key)
	}
	if issued.Record.SHA256 != HashKey(legacyKey) {
		t.Errorf("imported sha256 = %q, expected lowercased %q", issued.Record.SHA256, HashKey(legacyKey))
	}
	if issued.Secret != "" || len(issued.Record.Secrets) != 0 {
		t.Errorf("import without secret stored one: %+v", issued.Record.Secrets)
	}

	withSecret, err := Issue(NewRecordSpec{Tenant: "acme", SHA256: HashKey(legacyKey), Secret: "legacy-secret"}, now)
	if err != nil {
		t.Fatalf("Issue(import with secret): %v", err)
	}
	if withSecret.Secret != "" {
		t.Errorf("an imported secret is printed back as if generated: %q", withSecret.Secret)
	}
	if len(withSecret.Record.Secrets) != 1 || withSecret.Record.Secrets[0].Value != "legacy-secret" {
		t.Errorf("imported secret not kept: %+v", withSecret.Record.Secrets)
	}
}

func TestIssueValidation(t *testing.T) {
	good := HashKey("k")
	for i, tc := range []struct {
		name string
		spec NewRecordSpec
	}{
		{"empty tenant", NewRecordSpec{}},
		{"tenant with space", NewRecordSpec{Tenant: "acme corp"}},
		{"tenant with leading space", NewRecordSpec{Tenant: " acme"}},
		{"tenant with tab", NewRecordSpec{Tenant: "acme\t"}},
		{"tenant with newline (header injection)", NewRecordSpec{Tenant: "acme\r\nX-Admin: 1"}},
		{"tenant with NUL", NewRecordSpec{Tenant: "acme\x00"}},
		{"tenant with DEL", NewRecordSpec{Tenant: "acme\x7f"}},
		{"tenant non-ASCII", NewRecordSpec{Tenant: "acmé"}},
		{"tenant invalid UTF-8", NewRecordSpec{Tenant: "acme\xff"}},
		{"tenant too long", NewRecordSpec{Tenant: strings.Repeat("a", maxTenantLen+1)}},
		{"name too long", NewRecordSpec{Tenant: "t", Name: strings.Repeat("n", maxNameLen+1)}},
		{"name with newline", NewRecordSpec{Tenant: "t", Name: "a\nb"}},
		{"negative expiry", NewRecordSpec{Tenant: "t", Expires: -time.Second}},
		{"sha256 too short", NewRecordSpec{Tenant: "t", SHA256: good[:63]}},
		{"sha256 odd hex", NewRecordSpec{Tenant: "t", SHA256: good[:63] + "g"}},
		{"sha256 too long", NewRecordSpec{Tenant: "t", SHA256: good + "00"}},
		{"sha256 with prefix", NewRecordSpec{Tenant: "t", SHA256: "sha256:" + good}},
		{"sha256 base64", NewRecordSpec{Tenant: "t", SHA256: base64.StdEncoding.EncodeToString(make([]byte, 32))}},
		{"secret with newline", NewRecordSpec{Tenant: "t", SHA256: good, Secret: "s\n"}},
	} {
		issued, err := Issue(tc.spec, time.Now())
		if err == nil {
			t.Errorf("Test %d (%s): expected an error, got record %+v", i, tc.name, issued.Record)
		}
		if issued != nil {
			t.Errorf("Test %d (%s): returned a record along with error %v", i, tc.name, err)
		}
	}

	for i, spec := range []NewRecordSpec{
		{Tenant: strings.Repeat("a", maxTenantLen)},
		{Tenant: "!~"},
		{Tenant: "t", Name: strings.Repeat("n", maxNameLen)},
		{Tenant: "t", Name: "Ünïcode name"},
		{Tenant: "t", Expires: time.Nanosecond},
	} {
		if _, err := Issue(spec, time.Now()); err != nil {
			t.Errorf("Valid spec %d (%+v): unexpected error %v", i, spec, err)
		}
	}
}

func TestHashKey(t *testing.T) {
	// printf '%s' wchat_live_abc | sha256sum
	const expect = "facb1d6911c32d53714c394348bd13a0ae0802cc9397a53c80b0814e94287961"
	if got := HashKey("wchat_live_abc"); got != expect {
		t.Errorf("HashKey = %s, expected %s", got, expect)
	}
	if HashKey("a") == HashKey("A") {
		t.Error("HashKey folds case")
	}
}

func TestRecordCheck(t *testing.T) {
	now := time.Unix(1779111111, 0)
	at := func(d time.Duration) *time.Time { v := now.Add(d); return &v }
	for i, tc := range []struct {
		name   string
		rec    Record
		expect *Rejection
	}{
		{"active", Record{}, nil},
		{"expires later", Record{ExpiresAt: at(time.Nanosecond)}, nil},
		{"expires exactly now", Record{ExpiresAt: at(0)}, ErrKeyExpired},
		{"expired", Record{ExpiresAt: at(-time.Hour)}, ErrKeyExpired},
		{"revoked", Record{RevokedAt: at(-time.Hour)}, ErrKeyRevoked},
		{"revoked in the future still revoked", Record{RevokedAt: at(time.Hour)}, ErrKeyRevoked},
		{"revoked and expired", Record{RevokedAt: at(-time.Hour), ExpiresAt: at(-time.Hour)}, ErrKeyRevoked},
	} {
		if got := tc.rec.Check(now); got != tc.expect {
			t.Errorf("Test %d (%s): Check = %v, expected %v", i, tc.name, got, tc.expect)
		}
	}
}

func TestLiveSecrets(t *testing.T) {
	now := time.Unix(1779111111, 0)
	at := func(d time.Duration) *time.Time { v := now.Add(d); return &v }
	rec := Record{Secrets: []Secret{
		{Value: "forever"},
		{Value: "expired", ExpiresAt: at(-time.Second)},
		{Value: "expires-now", ExpiresAt: at(0)},
		{Value: "later", ExpiresAt: at(time.Second)},
	}}
	got := rec.liveSecrets(now)
	var names []string
	for _, s := range got {
		names = append(names, s.Value)
	}
	if strings.Join(names, ",") != "forever,later" {
		t.Errorf("liveSecrets = %v, expected [forever later]", names)
	}
	if live := (&Record{}).liveSecrets(now); len(live) != 0 {
		t.Errorf("record without secrets has live secrets %v", live)
	}
	allExpired := Record{Secrets: []Secret{{Value: "x", ExpiresAt: at(-time.Hour)}}}
	if live := allExpired.liveSecrets(now); len(live) != 0 {
		t.Errorf("expired secrets are live: %v", live)
	}
	// A key whose secrets all expired still signs, and nothing verifies: never unsigned.
	key := NewKey(&allExpired)
	signed := SignedHeaders{Timestamp: "1779111111", Signature: Sign([]byte("x"), "1779111111", nil)}
	if !key.Signing() || key.VerifySignature(now, signed, nil) != ErrSignatureMismatch {
		t.Errorf("key with only expired secrets: Signing %v, verify %v", key.Signing(), key.VerifySignature(now, signed, nil))
	}
}

func TestSummaryHasNoSecrets(t *testing.T) {
	now := time.Unix(1779111111, 0)
	issued, err := Issue(NewRecordSpec{Tenant: "acme", Name: "n", Signing: true}, now)
	if err != nil {
		t.Fatal(err)
	}
	rec := issued.Record
	rec.Secrets = append(rec.Secrets, Secret{Value: "second-secret-value", CreatedAt: now})
	s := rec.Summary()
	if !s.Signing || len(s.Secrets) != 2 {
		t.Errorf("summary signing=%t secrets=%d, expected true 2", s.Signing, len(s.Secrets))
	}
	if s.ID != rec.ID || s.Tenant != "acme" || s.SHA256 != rec.SHA256 || s.Name != "n" {
		t.Errorf("summary %+v does not describe record %+v", s, rec)
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{issued.Secret, "second-secret-value", issued.Key} {
		if strings.Contains(string(b), secret) {
			t.Errorf("summary JSON %s contains secret %q", b, secret)
		}
	}
	if unsigned := (&Record{ID: "key_1"}).Summary(); unsigned.Signing || len(unsigned.Secrets) != 0 {
		t.Errorf("unsigned summary = %+v", unsigned)
	}
}

func TestSummaryStatus(t *testing.T) {
	now := time.Unix(1779111111, 0)
	past, future := now.Add(-time.Hour), now.Add(time.Hour)
	for i, tc := range []struct {
		s      Summary
		expect string
	}{
		{Summary{}, "active"},
		{Summary{ExpiresAt: &future}, "active"},
		{Summary{ExpiresAt: &now}, "expired"},
		{Summary{ExpiresAt: &past}, "expired"},
		{Summary{RevokedAt: &past, ExpiresAt: &past}, "revoked"},
	} {
		if got := tc.s.Status(now); got != tc.expect {
			t.Errorf("Test %d: Status = %q, expected %q", i, got, tc.expect)
		}
	}
}
