package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// hdr builds a header from name/value pairs, canonicalising names the way
// net/http's server does; a name may repeat to send the header twice.
func hdr(pairs ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(pairs); i += 2 {
		h.Add(pairs[i], pairs[i+1])
	}
	return h
}

func TestExtractKey(t *testing.T) {
	const key = "wchat_live_abcDEF123-_xyz"
	long := KeyPrefix + strings.Repeat("a", maxKeyLength-len(KeyPrefix))
	tooLong := long + "a"

	for i, tc := range []struct {
		name       string
		header     http.Header
		expectKey  string
		expectAuth bool
		expectRej  *Rejection
	}{
		{name: "no headers", header: hdr(), expectRej: ErrMissingKey},
		{name: "x-wappchat-key", header: hdr("x-wappchat-key", key), expectKey: key},
		{name: "bearer", header: hdr("Authorization", "Bearer "+key), expectKey: key, expectAuth: true},
		{name: "bearer lowercase scheme", header: hdr("Authorization", "bearer "+key), expectKey: key, expectAuth: true},
		{name: "bearer uppercase scheme", header: hdr("Authorization", "BEARER "+key), expectKey: key, expectAuth: true},
		{name: "bearer mixed scheme", header: hdr("Authorization", "bEaReR "+key), expectKey: key, expectAuth: true},
		{name: "bearer with two spaces", header: hdr("Authorization", "Bearer  "+key), expectKey: key, expectAuth: true},
		{name: "bearer with trailing space", header: hdr("Authorization", "Bearer "+key+" "), expectKey: key, expectAuth: true},
		{name: "bearer with tab separator is not a bearer token", header: hdr("Authorization", "Bearer\t"+key), expectRej: ErrMissingKey},
		{name: "bearer with tab separator and key header", header: hdr("Authorization", "Bearer\t"+key, "x-wappchat-key", key), expectKey: key},
		{name: "bearer without token", header: hdr("Authorization", "Bearer"), expectRej: ErrMissingKey},
		{name: "bearer with empty token", header: hdr("Authorization", "Bearer "), expectRej: ErrMissingKey},
		{name: "bearer with only spaces", header: hdr("Authorization", "Bearer    "), expectRej: ErrMissingKey},
		{name: "bearerish scheme", header: hdr("Authorization", "Bearerx "+key), expectRej: ErrMissingKey},
		{name: "scheme prefix only", header: hdr("Authorization", "Bear "+key), expectRej: ErrMissingKey},
		{name: "basic alone", header: hdr("Authorization", "Basic dXNlcjpwYXNz"), expectRej: ErrMissingKey},
		{name: "basic with key header keeps authorization", header: hdr("Authorization", "Basic dXNlcjpwYXNz", "x-wappchat-key", key), expectKey: key, expectAuth: false},
		{name: "bare key in authorization", header: hdr("Authorization", key), expectRej: ErrMissingKey},
		{name: "both same", header: hdr("x-wappchat-key", key, "Authorization", "Bearer "+key), expectKey: key, expectAuth: true},
		{name: "both same, scheme lowercase", header: hdr("x-wappchat-key", key, "Authorization", "bearer "+key), expectKey: key, expectAuth: true},
		{name: "both different", header: hdr("x-wappchat-key", key, "Authorization", "Bearer "+key+"x"), expectRej: ErrAmbiguousKey},
		{name: "both different by case", header: hdr("x-wappchat-key", key, "Authorization", "Bearer "+strings.ToUpper(key)), expectRej: ErrAmbiguousKey},
		{name: "key header repeated same value", header: hdr("x-wappchat-key", key, "X-Wappchat-Key", key), expectRej: ErrAmbiguousKey},
		{name: "key header repeated different values", header: hdr("x-wappchat-key", key, "x-wappchat-key", "other"), expectRej: ErrAmbiguousKey},
		{name: "key header repeated, one empty", header: hdr("x-wappchat-key", key, "x-wappchat-key", ""), expectRej: ErrAmbiguousKey},
		{name: "authorization repeated", header: hdr("Authorization", "Bearer "+key, "Authorization", "Bearer "+key), expectRej: ErrAmbiguousKey},
		{name: "authorization repeated, bearer and basic", header: hdr("Authorization", "Bearer "+key, "Authorization", "Basic eDp5"), expectRej: ErrAmbiguousKey},
		{name: "authorization repeated with key header", header: hdr("x-wappchat-key", key, "Authorization", "Basic eDp5", "Authorization", "Basic eDp5"), expectRej: ErrAmbiguousKey},
		{name: "empty key header", header: hdr("x-wappchat-key", ""), expectRej: ErrMissingKey},
		{name: "empty authorization", header: hdr("Authorization", ""), expectRej: ErrMissingKey},
		{name: "empty key header, bearer", header: hdr("x-wappchat-key", "", "Authorization", "Bearer "+key), expectKey: key, expectAuth: true},
		{name: "key header, empty bearer", header: hdr("x-wappchat-key", key, "Authorization", "Bearer "), expectKey: key, expectAuth: false},
		{name: "key of max length", header: hdr("x-wappchat-key", long), expectKey: long},
		{name: "key over max length", header: hdr("x-wappchat-key", tooLong), expectRej: ErrInvalidKey},
		{name: "bearer over max length", header: hdr("Authorization", "Bearer "+tooLong), expectRej: ErrInvalidKey},
		{name: "huge key", header: hdr("x-wappchat-key", strings.Repeat("k", 1<<20)), expectRej: ErrInvalidKey},
		{name: "key with inner space", header: hdr("x-wappchat-key", "wchat_live_a b"), expectRej: ErrInvalidKey},
		{name: "key with tab", header: hdr("x-wappchat-key", "wchat_live_a\tb"), expectRej: ErrInvalidKey},
		{name: "key with leading space", header: hdr("x-wappchat-key", " "+key), expectRej: ErrInvalidKey},
		{name: "bearer with inner space", header: hdr("Authorization", "Bearer wchat_live_a b"), expectRej: ErrInvalidKey},
		{name: "bearer with two tokens", header: hdr("Authorization", "Bearer "+key+" "+key), expectRej: ErrInvalidKey},
		{name: "underscore header name is not the key header", header: hdr("X_Wappchat_Key", key), expectRej: ErrMissingKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cred, rej := ExtractKey(tc.header)
			if rej != tc.expectRej {
				t.Fatalf("Test %d: expected rejection %v, got %v", i, tc.expectRej, rej)
			}
			if rej != nil {
				if cred != (Credential{}) {
					t.Errorf("Test %d: rejected, but returned a credential %+v", i, cred)
				}
				return
			}
			if cred.Key != tc.expectKey {
				t.Errorf("Test %d: expected key %q, got %q", i, tc.expectKey, cred.Key)
			}
			if cred.FromAuthorization != tc.expectAuth {
				t.Errorf("Test %d: expected FromAuthorization=%t, got %t", i, tc.expectAuth, cred.FromAuthorization)
			}
		})
	}
}

func TestSameHeaderName(t *testing.T) {
	for i, tc := range []struct {
		a, b   string
		expect bool
	}{
		{"X-Tenant-ID", "X-Tenant-ID", true},
		{"X-Tenant-ID", "x-tenant-id", true},
		{"X-Tenant-ID", "X-TENANT-ID", true},
		{"X-Tenant-ID", "X_Tenant_ID", true},
		{"X-Tenant-ID", "x_tenant_id", true},
		{"X-Tenant-ID", "X_Tenant-Id", true},
		{"X_Tenant_ID", "X-Tenant-ID", true},
		{"x_tenant_id", "X_TENANT_ID", true},
		{"", "", true},
		{"X-Tenant-ID", "X-Tenant-IDs", false},
		{"X-Tenant-ID", "X-Tenant-I", false},
		{"X-Tenant-ID", "X.Tenant.ID", false},
		{"X-Tenant-ID", "X Tenant ID", false},
		{"X-Tenant-ID", "XTenant-ID", false},
		{"X-Tenant-ID", "X--Tenant-ID", false},
		{"X-Tenant-ID", "", false},
		{"X-Tenant-ID", "X-Tenant-1D", false},
		// Unicode case folding must not apply: K (Kelvin sign) is not k.
		{"X-Key", "X-\u212aey", false},
		// Bytes that differ only by the ASCII case bit outside letters are different.
		{"X-Tenant-ID@", "X-Tenant-ID`", false},
		{"X-Tenant-ID[", "X-Tenant-ID{", false},
	} {
		if got := SameHeaderName(tc.a, tc.b); got != tc.expect {
			t.Errorf("Test %d: SameHeaderName(%q, %q) = %t, expected %t", i, tc.a, tc.b, got, tc.expect)
		}
		if got := SameHeaderName(tc.b, tc.a); got != tc.expect {
			t.Errorf("Test %d: SameHeaderName(%q, %q) = %t, expected %t (not symmetric)", i, tc.b, tc.a, got, tc.expect)
		}
	}
}

// injectTenant removes every spelling of the tenant header before setting it.
func TestInjectTenantRemovesSpellings(t *testing.T) {
	for i, tc := range []struct {
		name   string
		header http.Header // set raw, as a client or a non-canonicalising stack would
		delete string
		expect []string // header names that must remain
	}{
		{
			name:   "canonical and underscore variants",
			header: http.Header{"X-Tenant-Id": {"a"}, "X_tenant_id": {"b"}, "Accept": {"*/*"}},
			delete: "X-Tenant-ID",
			expect: []string{"Accept"},
		},
		{
			name:   "raw non-canonical keys",
			header: http.Header{"x-tenant-id": {"a"}, "X_TENANT_ID": {"b"}, "x_Tenant-iD": {"c"}, "X-Tenant-IDs": {"d"}},
			delete: "X-Tenant-ID",
			expect: []string{"X-Tenant-IDs"},
		},
		{
			name:   "delete by underscore name",
			header: http.Header{"X-Tenant-Id": {"a"}, "X-Tenant": {"b"}},
			delete: "x_tenant_id",
			expect: []string{"X-Tenant"},
		},
		{
			name:   "repeated values all go",
			header: http.Header{"X-Tenant-Id": {"a", "b", "c"}},
			delete: "X-Tenant-ID",
			expect: nil,
		},
		{
			name:   "nothing matches",
			header: http.Header{"X-Tenant": {"a"}, "Tenant-Id": {"b"}},
			delete: "X-Tenant-ID",
			expect: []string{"Tenant-Id", "X-Tenant"},
		},
		{
			name:   "empty header",
			header: http.Header{},
			delete: "X-Tenant-ID",
			expect: nil,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &Handler{TenantHeader: tc.delete, KeyIDHeader: headerOff}
			h.fillDefaults()
			r := httptest.NewRequest(http.MethodPost, "/", nil)
			r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
			r.Header = tc.header
			h.injectTenant(r, Credential{}, NewKey(&Record{ID: "key_1", Tenant: "real"}))
			if got := tc.header[http.CanonicalHeaderKey(tc.delete)]; len(got) != 1 || got[0] != "real" {
				t.Errorf("Test %d: tenant header %v, expected [real]", i, got)
			}
			delete(tc.header, http.CanonicalHeaderKey(tc.delete))
			if len(tc.header) != len(tc.expect) {
				t.Fatalf("Test %d: expected remaining headers %v, got %v", i, tc.expect, tc.header)
			}
			for _, name := range tc.expect {
				if _, ok := tc.header[name]; !ok {
					t.Errorf("Test %d: header %q was removed, expected it to remain (left: %v)", i, name, tc.header)
				}
			}
		})
	}
}
