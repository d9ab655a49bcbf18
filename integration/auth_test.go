package integration

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// payload is the body of requests refused from their headers alone; reject
// checks in Caddy's access log (bytes_read) that the sidecar read none of it.
var payload = bytes.Repeat([]byte(`{"event":"lead.created"}`), 64<<10/24)

var event = []byte(`{"event":"lead.created","source":"my-crm","contact":{"phone":"919999999999"}}`)

// variant is an event body of its own, for a request that must not repeat another's signature.
func variant(name string) []byte {
	return []byte(`{"event":"lead.created","case":"` + name + `"}`)
}

// Rules 1 and 2: where the key comes from, and every way it can be refused.
func TestKeyRules(t *testing.T) {
	s := start(t, config{})
	k := s.createKey(t, "tenant-keys")
	other := s.createKey(t, "tenant-other")
	revoked := s.createKey(t, "tenant-keys")
	s.revoke(t, revoked.ID)
	unknown := "wchat_live_" + strings.Repeat("A", 43)

	rejections := []struct {
		name   string
		header http.Header
		status int
		code   string
	}{
		{"no key", nil, 401, "missing_key"},
		{"empty x-wappchat-key", http.Header{"X-Wappchat-Key": {""}}, 401, "missing_key"},
		{"Basic authorization", http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}}, 401, "missing_key"},
		{"Bearer without a token", http.Header{"Authorization": {"Bearer"}}, 401, "missing_key"},
		{"unknown key", http.Header{"X-Wappchat-Key": {unknown}}, 401, "invalid_key"},
		{"unknown bearer", http.Header{"Authorization": {"Bearer " + unknown}}, 401, "invalid_key"},
		{"key of another length", http.Header{"X-Wappchat-Key": {k.Key + "x"}}, 401, "invalid_key"},
		{"revoked key", http.Header{"X-Wappchat-Key": {revoked.Key}}, 401, "key_revoked"},
		{"revoked bearer", http.Header{"Authorization": {"Bearer " + revoked.Key}}, 401, "key_revoked"},
		{"two different keys", http.Header{"X-Wappchat-Key": {k.Key}, "Authorization": {"Bearer " + other.Key}}, 400, "ambiguous_key"},
		{"x-wappchat-key repeated", http.Header{"X-Wappchat-Key": {k.Key, k.Key}}, 400, "ambiguous_key"},
		{"x-wappchat-key repeated in two spellings", http.Header{"x-wappchat-key": {k.Key}, "X-WAPPCHAT-KEY": {other.Key}}, 400, "ambiguous_key"},
		{"Authorization repeated", http.Header{"Authorization": {"Bearer " + k.Key, "Bearer " + k.Key}}, 400, "ambiguous_key"},
		{"revoked key beside a valid bearer", http.Header{"X-Wappchat-Key": {revoked.Key}, "Authorization": {"Bearer " + k.Key}}, 400, "ambiguous_key"},
	}
	for _, tc := range rejections {
		t.Run(tc.name, func(t *testing.T) {
			s.reject(t, request{header: tc.header, body: payload}, tc.status, tc.code)
		})
	}

	accepted := []struct {
		name          string
		header        http.Header
		authorization []string // what the upstream must get in Authorization
	}{
		{"x-wappchat-key", http.Header{"x-wappchat-key": {k.Key}}, nil},
		{"Bearer", http.Header{"Authorization": {"Bearer " + k.Key}}, nil},
		{"bearer", http.Header{"Authorization": {"bearer " + k.Key}}, nil},
		{"BEARER", http.Header{"Authorization": {"BEARER " + k.Key}}, nil},
		{"bEaReR", http.Header{"Authorization": {"bEaReR " + k.Key}}, nil},
		{"both headers, same key", http.Header{"X-Wappchat-Key": {k.Key}, "Authorization": {"Bearer " + k.Key}}, nil},
		{"x-wappchat-key beside Basic authorization", http.Header{"X-Wappchat-Key": {k.Key}, "Authorization": {"Basic dXNlcjpwYXNz"}}, []string{"Basic dXNlcjpwYXNz"}},
	}
	for _, tc := range accepted {
		t.Run(tc.name, func(t *testing.T) {
			got := s.accept(t, request{header: tc.header, body: event})
			expectIdentity(t, got, "X-Tenant-ID", k.Tenant, "X-WappChat-Key-ID", k.ID)
			if v := got.header("X-Wappchat-Key"); v != nil {
				t.Errorf("the upstream got the credential header: %q", v)
			}
			if v := got.header("Authorization"); !slices.Equal(v, tc.authorization) {
				t.Errorf("the upstream got Authorization %q, want %q", v, tc.authorization)
			}
			if !bytes.Equal(got.body(), event) {
				t.Errorf("the upstream got body %q", got.body())
			}
		})
	}
}

// expectIdentity checks that the upstream got exactly one tenant and one key-id
// value, counting every spelling a CGI-style backend would merge, and that the
// auth placeholders carried the same identity.
func expectIdentity(t *testing.T, got seen, tenantHeader, tenant, keyIDHeader, keyID string) {
	t.Helper()
	if v := got.header(tenantHeader); !slices.Equal(v, []string{tenant}) {
		t.Errorf("the upstream got %s %q, want only %q", tenantHeader, v, tenant)
	}
	if keyIDHeader != "" {
		if v := got.header(keyIDHeader); !slices.Equal(v, []string{keyID}) {
			t.Errorf("the upstream got %s %q, want only %q", keyIDHeader, v, keyID)
		}
	}
	if v := got.header("X-Seen-Tenant-Id"); !slices.Equal(v, []string{tenant}) {
		t.Errorf("{http.auth.user.tenant_id} was %q, want %q", v, tenant)
	}
	if v := got.header("X-Seen-User-Id"); !slices.Equal(v, []string{keyID}) {
		t.Errorf("{http.auth.user.id} was %q, want %q", v, keyID)
	}
}

// Rule 2: a key created with a lifetime stops working when it runs out.
func TestExpiredKey(t *testing.T) {
	s := start(t, config{})
	k := s.createKey(t, "tenant-expiring", "--expires", "1s")
	poll(t, "the key to expire", func() bool {
		return s.send(t, unsigned(k, event)).status == http.StatusUnauthorized
	})
	s.reject(t, request{header: unsigned(k, nil).header, body: payload}, 401, "key_expired")
	if out := s.cli(t, "list", "--tenant", k.Tenant).stdout; !strings.Contains(out, "expired") {
		t.Errorf("list does not show the key as expired:\n%s", out)
	}
}

// Rules 3 and 4: which requests must be signed, and every way a signature is refused.
// Header problems are found before the body is read: those requests carry a
// 64 KiB body, and reject checks that none of it was read.
func TestSignatureRules(t *testing.T) {
	s := start(t, config{})
	k := s.createKey(t, "tenant-signing", "--signing")
	other := s.createKey(t, "tenant-signing", "--signing")
	plain := s.createKey(t, "tenant-plain")
	ts := now()
	sig := signature(k.Secret, ts, event)
	unix, _ := strconv.ParseInt(ts, 10, 64)
	at := func(offset int64) (string, string) {
		t := strconv.FormatInt(unix+offset, 10)
		return t, signature(k.Secret, t, event)
	}
	past, pastSig := at(-301)     // the server's clock only moves further away
	future, futureSig := at(+400) // far enough that a second passing cannot bring it in
	headers := func(key string, pairs ...string) http.Header {
		h := http.Header{}
		if key != "" {
			h.Set("X-Wappchat-Key", key)
		}
		for i := 0; i < len(pairs); i += 2 {
			h[pairs[i]] = append(h[pairs[i]], pairs[i+1])
		}
		return h
	}
	const tsH, sigH = "X-Wappchat-Timestamp", "X-Wappchat-Signature"
	hex64 := strings.TrimPrefix(sig, "sha256=")

	headerRejections := []struct {
		name   string
		header http.Header
		status int
		code   string
	}{
		{"signing key, unsigned", headers(k.Key), 401, "signature_required"},
		{"signing key, timestamp only", headers(k.Key, tsH, ts), 401, "signature_required"},
		{"signing key, signature only", headers(k.Key, sigH, sig), 401, "signature_required"},
		{"plain key, signed", headers(plain.Key, tsH, ts, sigH, sig), 401, "signing_not_enabled"},
		{"plain key, timestamp only", headers(plain.Key, tsH, ts), 401, "signing_not_enabled"},
		{"plain key, signature only", headers(plain.Key, sigH, sig), 401, "signing_not_enabled"},
		{"timestamp empty", headers(k.Key, tsH, "", sigH, sig), 400, "invalid_timestamp"},
		{"timestamp not a number", headers(k.Key, tsH, "yesterday", sigH, sig), 400, "invalid_timestamp"},
		{"timestamp negative", headers(k.Key, tsH, "-"+ts, sigH, sig), 400, "invalid_timestamp"},
		{"timestamp with plus sign", headers(k.Key, tsH, "+"+ts, sigH, sig), 400, "invalid_timestamp"},
		{"timestamp with fraction", headers(k.Key, tsH, ts+".5", sigH, sig), 400, "invalid_timestamp"},
		{"timestamp in milliseconds notation", headers(k.Key, tsH, "1.779111111e9", sigH, sig), 400, "invalid_timestamp"},
		{"timestamp in hex", headers(k.Key, tsH, "0x6a0b8f47", sigH, sig), 400, "invalid_timestamp"},
		{"timestamp overflowing int64", headers(k.Key, tsH, "99999999999999999999", sigH, sig), 400, "invalid_timestamp"},
		{"timestamp repeated", headers(k.Key, tsH, ts, tsH, ts, sigH, sig), 400, "invalid_timestamp"},
		{"timestamp too old", headers(k.Key, tsH, past, sigH, pastSig), 401, "timestamp_out_of_tolerance"},
		{"timestamp in the future", headers(k.Key, tsH, future, sigH, futureSig), 401, "timestamp_out_of_tolerance"},
		{"timestamp zero", headers(k.Key, tsH, "0", sigH, sig), 401, "timestamp_out_of_tolerance"},
		{"signature empty", headers(k.Key, tsH, ts, sigH, ""), 400, "invalid_signature"},
		{"signature without prefix", headers(k.Key, tsH, ts, sigH, hex64), 400, "invalid_signature"},
		{"signature with uppercase prefix", headers(k.Key, tsH, ts, sigH, "SHA256="+hex64), 400, "invalid_signature"},
		{"signature sha1", headers(k.Key, tsH, ts, sigH, "sha1="+hex64[:40]), 400, "invalid_signature"},
		{"signature 63 digits", headers(k.Key, tsH, ts, sigH, sig[:len(sig)-1]), 400, "invalid_signature"},
		{"signature 65 digits", headers(k.Key, tsH, ts, sigH, sig+"0"), 400, "invalid_signature"},
		{"signature not hex", headers(k.Key, tsH, ts, sigH, "sha256="+strings.Repeat("zz", 32)), 400, "invalid_signature"},
		{"signature base64", headers(k.Key, tsH, ts, sigH, "sha256=dGhpcyBpcyBub3QgaGV4IGF0IGFsbCwgaXQgaXMgYmFzZTY0IQ=="), 400, "invalid_signature"},
		{"signature repeated", headers(k.Key, tsH, ts, sigH, sig, sigH, sig), 400, "invalid_signature"},
		{"key checked before signature", headers("wchat_live_unknown", tsH, "bad", sigH, "bad"), 401, "invalid_key"},
		{"timestamp checked before signature", headers(k.Key, tsH, "bad", sigH, "bad"), 400, "invalid_timestamp"},
		{"tolerance checked before signature syntax", headers(k.Key, tsH, past, sigH, "bad"), 401, "timestamp_out_of_tolerance"},
	}
	for _, tc := range headerRejections {
		t.Run(tc.name, func(t *testing.T) {
			s.reject(t, request{header: tc.header, body: payload}, tc.status, tc.code)
		})
	}

	// A mismatch needs the body, so these requests send it.
	mismatches := []struct {
		name   string
		header http.Header
		body   []byte
	}{
		{"another key's secret", headers(k.Key, tsH, ts, sigH, signature(other.Secret, ts, event)), event},
		{"another body", headers(k.Key, tsH, ts, sigH, sig), append(slices.Clone(event), '\n')},
		{"another timestamp", headers(k.Key, tsH, ts, sigH, pastSig), event},
		{"body signed without the timestamp", headers(k.Key, tsH, ts, sigH, mac(k.Secret, event)), event},
		{"the key instead of the secret", headers(k.Key, tsH, ts, sigH, signature(k.Key, ts, event)), event},
	}
	for _, tc := range mismatches {
		t.Run(tc.name, func(t *testing.T) {
			s.reject(t, request{header: tc.header, body: tc.body}, 401, "signature_mismatch")
		})
	}

	// Each accepted request signs its own body: a signature is accepted once.
	upper, bearer := variant("uppercase hex"), variant("bearer")
	accepted := []struct {
		name   string
		header http.Header
		body   []byte
	}{
		{"signed", signed(k, event).header, event},
		{"signed with uppercase hex", headers(k.Key, tsH, ts, sigH, "sha256="+strings.ToUpper(strings.TrimPrefix(signature(k.Secret, ts, upper), "sha256="))), upper},
		{"signed empty body", signed(k, nil).header, nil},
		{"signed, key as Bearer", headers("", tsH, ts, sigH, signature(k.Secret, ts, bearer), "Authorization", "Bearer "+k.Key), bearer},
		{"plain key, unsigned", headers(plain.Key), event},
	}
	for _, tc := range accepted {
		t.Run(tc.name, func(t *testing.T) {
			got := s.accept(t, request{header: tc.header, body: tc.body})
			if !bytes.Equal(got.body(), tc.body) {
				t.Errorf("the upstream got body %q, want %q", got.body(), tc.body)
			}
		})
	}
}

// Rule 3: with "signatures required", a key without a secret gets nowhere.
func TestSignaturesRequired(t *testing.T) {
	auth := slices.Clone(exampleAuth)
	auth[2] = "signatures required"
	s := start(t, config{Auth: auth})
	k := s.createKey(t, "tenant-strict", "--signing")
	plain := s.createKey(t, "tenant-strict")

	s.reject(t, request{header: unsigned(plain, nil).header, body: payload}, 401, "signature_required")
	s.reject(t, request{header: unsigned(k, nil).header, body: payload}, 401, "signature_required")
	forged := signed(k, event)
	forged.header.Set("X-Wappchat-Key", plain.Key)
	s.reject(t, request{header: forged.header, body: payload}, 401, "signature_required")
	got := s.accept(t, signed(k, event))
	expectIdentity(t, got, "X-Tenant-ID", k.Tenant, "X-WappChat-Key-ID", k.ID)
}

// Rule 4: signed bodies are read once, at most max_body, and forwarded as the
// same bytes with a correct Content-Length; unsigned bodies stream through.
func TestBody(t *testing.T) {
	auth := slices.Clone(exampleAuth)
	auth[4] = "max_body 1KiB"
	s := start(t, config{Auth: auth})
	k := s.createKey(t, "tenant-body", "--signing")
	plain := s.createKey(t, "tenant-body")

	var limit []byte // every byte value, 1 KiB: exactly max_body
	for len(limit) < 1024 {
		limit = append(limit, byte(len(limit)))
	}
	reversed := slices.Clone(limit)
	slices.Reverse(reversed)
	over := append(slices.Clone(limit), 0)
	big := bytes.Repeat(limit, 64)

	tooLarge := []struct {
		name    string
		req     request
		maxRead float64 // body bytes the sidecar may read before refusing
	}{
		{"Content-Length one over", signed(k, over), 0},
		{"Content-Length 64 KiB", signed(k, big), 0},
		{"chunked one over", chunked(signed(k, over)), 1025},
		{"chunked 64 KiB", chunked(signed(k, big)), 1025},
		{"size checked before the signature", request{header: signed(k, event).header, body: over}, 0},
	}
	for _, tc := range tooLarge {
		t.Run(tc.name, func(t *testing.T) {
			entry := s.reject(t, tc.req, 413, "body_too_large")
			if read := entry["bytes_read"].(float64); read > tc.maxRead {
				t.Errorf("the sidecar read %v body bytes, want at most %v", read, tc.maxRead)
			}
		})
	}

	accepted := []struct {
		name             string
		req              request
		transferEncoding []string // what the upstream must see
	}{
		{"signed, Content-Length, max_body bytes", signed(k, limit), nil},
		{"signed, chunked, max_body bytes", chunked(signed(k, reversed)), nil},
		{"signed, empty", signed(k, nil), nil},
		{"unsigned, over max_body", unsigned(plain, big), nil},
		{"unsigned, chunked, over max_body", chunked(unsigned(plain, big)), []string{"chunked"}},
	}
	for _, tc := range accepted {
		t.Run(tc.name, func(t *testing.T) {
			got := s.accept(t, tc.req)
			if !bytes.Equal(got.body(), tc.req.body) {
				t.Errorf("the upstream got %d different bytes, want the %d sent", len(got.body()), len(tc.req.body))
			}
			if !slices.Equal(got.TransferEncoding, tc.transferEncoding) {
				t.Errorf("the upstream got Transfer-Encoding %q, want %q", got.TransferEncoding, tc.transferEncoding)
			}
			if tc.transferEncoding != nil {
				return // streamed: no length to check
			}
			length := strconv.Itoa(len(tc.req.body))
			if got.ContentLength != int64(len(tc.req.body)) || !slices.Equal(got.header("Content-Length"), []string{length}) && len(tc.req.body) > 0 {
				t.Errorf("the upstream got length %d, Content-Length %q; want %s", got.ContentLength, got.header("Content-Length"), length)
			}
		})
	}
}

func chunked(r request) request {
	r.chunked = true
	return r
}

// Rule 5: whatever the client sends under the tenant or key-id names, in any
// case and with '_' for '-', the upstream sees only the sidecar's values. Caddy
// itself drops headers with '_' unless they are allowlisted, so the sidecars
// that allowlist them show that the plugin removes them too.
func TestSpoofedIdentityHeaders(t *testing.T) {
	customAuth := []string{"tenant_header X-Org", "key_id_header off"}
	sidecars := []struct {
		name         string
		cfg          config
		tenantHeader string
		keyIDHeader  string // "" when off
	}{
		{"example config", config{}, "X-Tenant-ID", "X-WappChat-Key-ID"},
		{"underscore headers allowed", config{Servers: []string{"expected_underscore_headers X_Tenant_ID X_WappChat_Key_ID X_Legacy_Flag"}},
			"X-Tenant-ID", "X-WappChat-Key-ID"},
		{"custom tenant header, key id off", config{Auth: customAuth, Servers: []string{"expected_underscore_headers X_Org X_Legacy_Flag"}},
			"X-Org", ""},
	}
	for _, sc := range sidecars {
		t.Run(sc.name, func(t *testing.T) {
			s := start(t, sc.cfg)
			k := s.createKey(t, "tenant-real", "--signing")
			var names []string
			for _, name := range []string{sc.tenantHeader, sc.keyIDHeader} {
				if name != "" {
					underscored := strings.ReplaceAll(name, "-", "_")
					names = append(names, name, strings.ToLower(name), strings.ToUpper(name), underscored, strings.ToLower(underscored))
				}
			}
			for _, name := range names {
				t.Run(name, func(t *testing.T) {
					req := signed(k, variant(name))
					req.header[name] = []string{"tenant-evil"}
					req.header["X_Legacy_Flag"] = []string{"on"}
					got := s.accept(t, req)
					expectIdentity(t, got, sc.tenantHeader, k.Tenant, sc.keyIDHeader, k.ID)
					if sc.keyIDHeader == "" && got.header("X-WappChat-Key-ID") != nil {
						t.Errorf("key_id_header off, yet the upstream got a key id: %q", got.header("X-WappChat-Key-ID"))
					}
					for header, values := range got.Headers {
						if slices.Contains(values, "tenant-evil") {
							t.Errorf("the spoofed value reached the upstream as %s", header)
						}
					}
					if allowed := len(sc.cfg.Servers) > 0; allowed != slices.Equal(got.header("X_Legacy_Flag"), []string{"on"}) {
						t.Errorf("X_Legacy_Flag reached the upstream: %v, want %v (the control for Caddy's own filter)", !allowed, allowed)
					}
				})
			}
		})
	}
}

// Rule 5: Caddy's access log names the key that called, and its filter keeps
// the raw key out while the handler removes it from what goes upstream.
func TestAccessLogNamesTheKey(t *testing.T) {
	s := start(t, config{})
	k := s.createKey(t, "tenant-logged")
	entries := []map[string]any{
		s.accessEntry(t, s.accept(t, unsigned(k, event)).header("X-Test-Id")[0]),
		s.accessEntry(t, s.accept(t, request{header: http.Header{"Authorization": {"Bearer " + k.Key}}, body: event}).header("X-Test-Id")[0]),
		s.reject(t, request{header: http.Header{"X-Wappchat-Key": {"wchat_live_nobody"}}, body: event}, 401, "invalid_key"),
	}
	wantUsers := []string{k.ID, k.ID, ""}
	for i, entry := range entries {
		if entry["user_id"] != wantUsers[i] {
			t.Errorf("access log entry %d has user_id %q, want %q", i, entry["user_id"], wantUsers[i])
		}
		headers, _ := entry["request"].(map[string]any)["headers"].(map[string]any)
		if _, ok := headers["X-Wappchat-Key"]; ok {
			t.Errorf("access log entry %d has the X-Wappchat-Key header", i)
		}
	}
	raw, err := os.ReadFile(filepath.Join(s.dir, "access.log"))
	if err != nil || bytes.Contains(raw, []byte(k.Key)) || bytes.Contains(raw, []byte("wchat_live_nobody")) {
		t.Errorf("the access log holds a raw key (err %v)", err)
	}
}

// Rule 6: a key record the store cannot read is a 503, never a pass.
func TestStoreUnavailable(t *testing.T) {
	s := start(t, config{CacheTTL: "0"})
	breakages := []struct {
		name    string
		corrupt func(path string) error
	}{
		{"record is not JSON", func(path string) error { return os.WriteFile(path, []byte("{not json"), 0o600) }},
		{"record of another key", func(path string) error {
			return os.WriteFile(path, []byte(`{"id":"key_00","tenant":"t","sha256":"00","created_at":"2026-01-01T00:00:00Z"}`), 0o600)
		}},
		{"record is a directory", func(path string) error {
			if err := os.Remove(path); err != nil {
				return err
			}
			return os.Mkdir(path, 0o700)
		}},
	}
	for _, tc := range breakages {
		t.Run(tc.name, func(t *testing.T) {
			k := s.createKey(t, "tenant-broken")
			s.accept(t, unsigned(k, event))
			if err := tc.corrupt(s.recordPath(k.SHA256)); err != nil {
				t.Fatal(err)
			}
			s.reject(t, request{header: unsigned(k, nil).header, body: payload}, 503, "store_unavailable")
		})
	}
}
