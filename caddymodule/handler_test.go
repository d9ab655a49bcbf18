package caddymodule

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// testNow is the handler's clock in these tests: the seed's example timestamp.
var testNow = time.Unix(1779111111, 0)

const testTS = "1779111111"

// handlerEnv is a Handler over an App provisioned on a temporary FileStorage,
// with a few keys stored. Handler.Provision needs a running Caddy config to
// find the app (ctx.App dereferences the config), so the fields Provision
// fills are set here explicitly, to the same defaults.
type handlerEnv struct {
	h    *Handler
	app  *App
	logs *observer.ObservedLogs

	plain, signing, revoked, expired, rotated *Issued
	oldSecret                                 string // rotated's retiring secret
}

func newHandlerEnv(t testing.TB, configure func(*Handler)) *handlerEnv {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	ttl := caddy.Duration(0) // read the store every time, so tests see their writes
	// Secrets sealed at rest, as a production config has them (and no warning that they are not).
	app := &App{CacheTTL: &ttl, SecretsKey: "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}
	if err := app.provision(ctx, &certmagic.FileStorage{Path: t.TempDir()}); err != nil {
		t.Fatalf("provisioning app: %v", err)
	}
	app.claims = NewMemoryClaims(1000, func() time.Time { return testNow })

	core, logs := observer.New(zap.DebugLevel)
	h := &Handler{
		app:    app,
		logger: zap.New(core),
		now:    func() time.Time { return testNow },
	}
	if configure != nil {
		configure(h)
	}
	h.fillDefaults()
	env := &handlerEnv{h: h, app: app, logs: logs}

	create := func(spec NewRecordSpec, at time.Time, change func(*Record)) *Issued {
		issued, err := Issue(spec, at)
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		if change != nil {
			change(issued.Record)
		}
		if err := app.Store().Create(context.Background(), issued.Record); err != nil {
			t.Fatalf("Create: %v", err)
		}
		return issued
	}
	env.plain = create(NewRecordSpec{Tenant: "tenant_plain"}, testNow, nil)
	env.signing = create(NewRecordSpec{Tenant: "tenant_signing", Signing: true}, testNow, nil)
	env.revoked = create(NewRecordSpec{Tenant: "tenant_revoked"}, testNow, func(r *Record) {
		at := testNow.Add(-time.Minute)
		r.RevokedAt = &at
	})
	env.expired = create(NewRecordSpec{Tenant: "tenant_expired", Expires: time.Hour}, testNow.Add(-time.Hour), nil)
	env.rotated = create(NewRecordSpec{Tenant: "tenant_rotated", Signing: true}, testNow.Add(-time.Hour), func(r *Record) {
		env.oldSecret = r.Secrets[0].Value
		r.AddSecret(testNow.Add(-time.Minute), time.Hour)
	})
	env.rotated.Secret = env.rotated.Record.Secrets[len(env.rotated.Record.Secrets)-1].Value
	return env
}

// trackingBody is a request body that records whether anyone read it, and can
// fail after a number of bytes.
type trackingBody struct {
	mu     sync.Mutex
	r      io.Reader
	read   bool
	failAt int // fail once this many bytes were read; < 0 never
	n      int
}

func newTrackingBody(b []byte, failAt int) *trackingBody {
	return &trackingBody{r: bytes.NewReader(b), failAt: failAt}
}

func (b *trackingBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.read = true
	if b.failAt >= 0 {
		if b.n >= b.failAt {
			return 0, errors.New("connection reset by peer")
		}
		if len(p) > b.failAt-b.n {
			p = p[:b.failAt-b.n]
		}
	}
	n, err := b.r.Read(p)
	b.n += n
	return n, err
}

func (b *trackingBody) Close() error { return nil }

func (b *trackingBody) wasRead() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.read
}

// testRequest is a request as the handler sees it inside Caddy: a replacer in
// the context, a body that records reads, and the given Content-Length (-1: chunked).
func testRequest(body []byte, contentLength int64, failAt int, headers ...string) (*http.Request, *trackingBody, *caddy.Replacer) {
	tb := newTrackingBody(body, failAt)
	r := httptest.NewRequest(http.MethodPost, "/api/whatsapp/automation/events", nil)
	r.Body = tb
	r.ContentLength = contentLength
	if contentLength < 0 {
		r.TransferEncoding = []string{"chunked"}
	} else {
		r.Header.Set("Content-Length", strconv.FormatInt(contentLength, 10))
	}
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Add(headers[i], headers[i+1])
	}
	repl := caddy.NewReplacer()
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
	return r, tb, repl
}

func signHeader(secret, ts string, body []byte) string {
	mac := referenceHMAC(secret, ts, string(body))
	return "sha256=" + hex.EncodeToString(mac[:])
}

// upstream records what the next handler received.
type upstream struct {
	called        bool
	header        http.Header
	body          []byte
	bodyObj       io.ReadCloser
	contentLength int64
	te            []string
	userID        string
	tenantID      string
}

func (u *upstream) handler() caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		u.called = true
		u.header = r.Header.Clone()
		u.contentLength = r.ContentLength
		u.te = r.TransferEncoding
		u.bodyObj = r.Body
		var err error
		if u.body, err = io.ReadAll(r.Body); err != nil {
			return err
		}
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		u.userID, _ = repl.GetString("http.auth.user.id")
		u.tenantID, _ = repl.GetString("http.auth.user.tenant_id")
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}

// rejectionCodes lists every code declared in rejection.go, read from the
// source so a code added there without a handler test fails TestHandlerRejections.
func rejectionCodes(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "rejection.go", nil, 0)
	if err != nil {
		t.Fatalf("parsing rejection.go: %v", err)
	}
	var codes []string
	ast.Inspect(f, func(n ast.Node) bool {
		lit, ok := n.(*ast.CompositeLit)
		if !ok {
			return true
		}
		if id, ok := lit.Type.(*ast.Ident); !ok || id.Name != "Rejection" || len(lit.Elts) == 0 {
			return true
		}
		if s, ok := lit.Elts[0].(*ast.BasicLit); ok && s.Kind == token.STRING {
			code, _ := strconv.Unquote(s.Value)
			codes = append(codes, code)
		}
		return true
	})
	if len(codes) < 14 {
		t.Fatalf("found only %d rejection codes in rejection.go: %v", len(codes), codes)
	}
	return codes
}

func rejectionByCode(code string) *Rejection {
	for _, r := range []*Rejection{ErrMissingKey, ErrAmbiguousKey, ErrInvalidKey, ErrKeyRevoked, ErrKeyExpired,
		ErrSignatureRequired, ErrSigningNotEnabled, ErrInvalidTimestamp, ErrTimestampTolerance, ErrInvalidSignature,
		ErrSignatureMismatch, ErrBodyTooLarge, ErrInvalidBody, ErrStoreUnavailable, ErrSignatureReplayed, ErrReplayCapacity} {
		if r.Code == code {
			return r
		}
	}
	return nil
}

// failingStore answers every read with an error, as a storage outage would.
type failingStore struct{ Store }

func (failingStore) Lookup(context.Context, string) (*Record, error) {
	return nil, errors.New("storage unreachable")
}

func TestHandlerRejections(t *testing.T) {
	body := []byte(`{"event":"lead.created","source":"my-crm"}`)
	big := bytes.Repeat([]byte("x"), 2048)

	type reqFunc func(env *handlerEnv) (*http.Request, *trackingBody, *caddy.Replacer)
	signed := func(key func(*handlerEnv) *Issued, ts string, b []byte, cl int64, failAt int, extra ...string) reqFunc {
		return func(env *handlerEnv) (*http.Request, *trackingBody, *caddy.Replacer) {
			k := key(env)
			hs := append([]string{KeyHeader, k.Key, TimestampHeader, ts, SignatureHeader, signHeader(k.Secret, ts, b)}, extra...)
			return testRequest(b, cl, failAt, hs...)
		}
	}
	plain := func(env *handlerEnv) *Issued { return env.plain }
	signing := func(env *handlerEnv) *Issued { return env.signing }
	withHeaders := func(hs func(env *handlerEnv) []string) reqFunc {
		return func(env *handlerEnv) (*http.Request, *trackingBody, *caddy.Replacer) {
			return testRequest(body, int64(len(body)), -1, hs(env)...)
		}
	}
	old := strconv.FormatInt(testNow.Add(-301*time.Second).Unix(), 10)

	for i, tc := range []struct {
		name      string
		configure func(*Handler)
		setup     func(t *testing.T, env *handlerEnv)
		request   reqFunc
		code      string
		bodyRead  bool // whether the body may have been read before refusing
	}{
		{name: "no key", request: withHeaders(func(*handlerEnv) []string { return nil }), code: "missing_key"},
		{name: "basic auth only", request: withHeaders(func(*handlerEnv) []string { return []string{"Authorization", "Basic dXNlcjpwYXNz"} }), code: "missing_key"},
		{name: "two different keys", request: withHeaders(func(env *handlerEnv) []string {
			return []string{KeyHeader, env.plain.Key, "Authorization", "Bearer " + env.signing.Key}
		}), code: "ambiguous_key"},
		{name: "key header repeated", request: withHeaders(func(env *handlerEnv) []string {
			return []string{KeyHeader, env.plain.Key, KeyHeader, env.plain.Key}
		}), code: "ambiguous_key"},
		{name: "unknown key", request: withHeaders(func(*handlerEnv) []string { return []string{KeyHeader, KeyPrefix + "unknown"} }), code: "invalid_key"},
		{name: "unknown bearer key", request: withHeaders(func(*handlerEnv) []string { return []string{"Authorization", "Bearer " + KeyPrefix + "unknown"} }), code: "invalid_key"},
		{name: "key too long", request: withHeaders(func(*handlerEnv) []string { return []string{KeyHeader, strings.Repeat("k", 4096)} }), code: "invalid_key"},
		{name: "hash of a key presented as the key", request: withHeaders(func(env *handlerEnv) []string { return []string{KeyHeader, env.plain.Record.SHA256} }), code: "invalid_key"},
		{name: "revoked key", request: withHeaders(func(env *handlerEnv) []string { return []string{KeyHeader, env.revoked.Key} }), code: "key_revoked"},
		{name: "expired key", request: withHeaders(func(env *handlerEnv) []string { return []string{KeyHeader, env.expired.Key} }), code: "key_expired"},
		{name: "signing key, unsigned", request: withHeaders(func(env *handlerEnv) []string { return []string{KeyHeader, env.signing.Key} }), code: "signature_required"},
		{name: "signing key, timestamp only", request: withHeaders(func(env *handlerEnv) []string {
			return []string{KeyHeader, env.signing.Key, TimestampHeader, testTS}
		}), code: "signature_required"},
		{name: "signing key, signature only", request: withHeaders(func(env *handlerEnv) []string {
			return []string{KeyHeader, env.signing.Key, SignatureHeader, signHeader(env.signing.Secret, testTS, body)}
		}), code: "signature_required"},
		{name: "signatures required, plain key", configure: func(h *Handler) { h.Signatures = signaturesRequired },
			request: withHeaders(func(env *handlerEnv) []string { return []string{KeyHeader, env.plain.Key} }), code: "signature_required"},
		{name: "signatures required, plain key with signature headers", configure: func(h *Handler) { h.Signatures = signaturesRequired },
			request: signed(plain, testTS, body, int64(len(body)), -1), code: "signature_required"},
		{name: "plain key with signature headers", request: signed(plain, testTS, body, int64(len(body)), -1), code: "signing_not_enabled"},
		{name: "plain key with an empty signature header", request: withHeaders(func(env *handlerEnv) []string {
			return []string{KeyHeader, env.plain.Key, SignatureHeader, ""}
		}), code: "signing_not_enabled"},
		{name: "timestamp with fraction", request: signed(signing, testTS+".0", body, int64(len(body)), -1), code: "invalid_timestamp"},
		{name: "timestamp in milliseconds is out of tolerance", request: signed(signing, testTS+"000", body, int64(len(body)), -1), code: "timestamp_out_of_tolerance"},
		{name: "timestamp repeated", request: signed(signing, testTS, body, int64(len(body)), -1, TimestampHeader, testTS), code: "invalid_timestamp"},
		{name: "timestamp too old", request: signed(signing, old, body, int64(len(body)), -1), code: "timestamp_out_of_tolerance"},
		{name: "timestamp too far ahead", request: signed(signing, strconv.FormatInt(testNow.Unix()+301, 10), body, int64(len(body)), -1), code: "timestamp_out_of_tolerance"},
		{name: "custom tolerance", configure: func(h *Handler) { h.Tolerance = caddy.Duration(10 * time.Second) },
			request: signed(signing, strconv.FormatInt(testNow.Unix()-11, 10), body, int64(len(body)), -1), code: "timestamp_out_of_tolerance"},
		{name: "signature base64", request: withHeaders(func(env *handlerEnv) []string {
			return []string{KeyHeader, env.signing.Key, TimestampHeader, testTS, SignatureHeader, "sha256=" + strings.Repeat("A", 43) + "="}
		}), code: "invalid_signature"},
		{name: "signature repeated", request: signed(signing, testTS, body, int64(len(body)), -1, SignatureHeader, "sha256="+strings.Repeat("0", 64)), code: "invalid_signature"},
		{name: "signature uppercase prefix", request: withHeaders(func(env *handlerEnv) []string {
			return []string{KeyHeader, env.signing.Key, TimestampHeader, testTS, SignatureHeader, strings.ToUpper(signHeader(env.signing.Secret, testTS, body))}
		}), code: "invalid_signature"},
		{name: "signature with the wrong secret", request: withHeaders(func(env *handlerEnv) []string {
			return []string{KeyHeader, env.signing.Key, TimestampHeader, testTS, SignatureHeader, signHeader("wrong", testTS, body)}
		}), code: "signature_mismatch", bodyRead: true},
		{name: "signature over another body", request: func(env *handlerEnv) (*http.Request, *trackingBody, *caddy.Replacer) {
			return testRequest(append([]byte(nil), append(body, '\n')...), int64(len(body)+1), -1,
				KeyHeader, env.signing.Key, TimestampHeader, testTS, SignatureHeader, signHeader(env.signing.Secret, testTS, body))
		}, code: "signature_mismatch", bodyRead: true},
		{name: "signature over another timestamp", request: func(env *handlerEnv) (*http.Request, *trackingBody, *caddy.Replacer) {
			return testRequest(body, int64(len(body)), -1,
				KeyHeader, env.signing.Key, TimestampHeader, "0"+testTS, SignatureHeader, signHeader(env.signing.Secret, testTS, body))
		}, code: "signature_mismatch", bodyRead: true},
		{name: "signature with the secret of another key", request: withHeaders(func(env *handlerEnv) []string {
			return []string{KeyHeader, env.signing.Key, TimestampHeader, testTS, SignatureHeader, signHeader(env.rotated.Secret, testTS, body)}
		}), code: "signature_mismatch", bodyRead: true},
		{name: "signature with the key as secret", request: withHeaders(func(env *handlerEnv) []string {
			return []string{KeyHeader, env.signing.Key, TimestampHeader, testTS, SignatureHeader, signHeader(env.signing.Key, testTS, body)}
		}), code: "signature_mismatch", bodyRead: true},
		{name: "body over max_body with Content-Length", configure: func(h *Handler) { h.MaxBody = 1024 },
			request: signed(signing, testTS, big, int64(len(big)), -1), code: "body_too_large"},
		{name: "body over max_body, chunked", configure: func(h *Handler) { h.MaxBody = 1024 },
			request: signed(signing, testTS, big, -1, -1), code: "body_too_large", bodyRead: true},
		{name: "body one byte over max_body, chunked", configure: func(h *Handler) { h.MaxBody = 1024 },
			request: signed(signing, testTS, big[:1025], -1, -1), code: "body_too_large", bodyRead: true},
		{name: "body longer than its Content-Length claims", configure: func(h *Handler) { h.MaxBody = 1024 },
			request: signed(signing, testTS, big, 10, -1), code: "body_too_large", bodyRead: true},
		{name: "body under max_body but over default", request: signed(signing, testTS, bytes.Repeat([]byte("y"), defaultMaxBody+1), -1, -1), code: "body_too_large", bodyRead: true},
		{name: "huge declared Content-Length, bad signature header", configure: func(h *Handler) { h.MaxBody = 1024 },
			request: func(env *handlerEnv) (*http.Request, *trackingBody, *caddy.Replacer) {
				return testRequest(big, 1<<40, -1, KeyHeader, env.signing.Key, TimestampHeader, testTS, SignatureHeader, "nope")
			}, code: "invalid_signature"},
		{name: "body fails mid-way", request: signed(signing, testTS, body, int64(len(body)), 5), code: "invalid_body", bodyRead: true},
		{name: "body fails at once, chunked", request: signed(signing, testTS, body, -1, 0), code: "invalid_body", bodyRead: true},
		{name: "store unavailable", setup: func(t *testing.T, env *handlerEnv) { env.app.store = failingStore{env.app.store} },
			request: withHeaders(func(env *handlerEnv) []string { return []string{KeyHeader, env.plain.Key} }), code: "store_unavailable"},
		{name: "corrupted record", setup: func(t *testing.T, env *handlerEnv) {
			fs := env.app.store.(*StorageStore).storage
			if err := fs.Store(context.Background(), recordPath(env.plain.Record.SHA256), []byte("{")); err != nil {
				t.Fatal(err)
			}
		}, request: withHeaders(func(env *handlerEnv) []string { return []string{KeyHeader, env.plain.Key} }), code: "store_unavailable"},
		{name: "replayed signed request", setup: func(t *testing.T, env *handlerEnv) {
			r, _, _ := testRequest(body, int64(len(body)), -1, KeyHeader, env.signing.Key, TimestampHeader, testTS, SignatureHeader, signHeader(env.signing.Secret, testTS, body))
			var up upstream
			if err := env.h.ServeHTTP(httptest.NewRecorder(), r, up.handler()); err != nil || !up.called {
				t.Fatalf("first request not accepted: %v", err)
			}
		}, request: signed(signing, testTS, body, int64(len(body)), -1), code: "signature_replayed", bodyRead: true},
		{name: "replay store full", setup: func(t *testing.T, env *handlerEnv) {
			env.app.claims = NewMemoryClaims(1, func() time.Time { return testNow })
			other := []byte(`{"event":"other"}`)
			r, _, _ := testRequest(other, int64(len(other)), -1, KeyHeader, env.signing.Key, TimestampHeader, testTS, SignatureHeader, signHeader(env.signing.Secret, testTS, other))
			var up upstream
			if err := env.h.ServeHTTP(httptest.NewRecorder(), r, up.handler()); err != nil || !up.called {
				t.Fatalf("first request not accepted: %v", err)
			}
		}, request: signed(signing, testTS, body, int64(len(body)), -1), code: "replay_capacity", bodyRead: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newHandlerEnv(t, tc.configure)
			if err := env.h.Validate(); err != nil {
				t.Fatalf("Test %d: handler config invalid: %v", i, err)
			}
			if tc.setup != nil {
				tc.setup(t, env)
			}
			r, tb, repl := tc.request(env)
			secretsAndKeys := requestSecrets(env, r)
			w := httptest.NewRecorder()
			var up upstream
			err := env.h.ServeHTTP(w, r, up.handler())
			if err != nil {
				t.Errorf("Test %d: ServeHTTP returned an error (Caddy would log the request headers): %v", i, err)
			}
			if up.called {
				t.Fatalf("Test %d: the upstream was reached for a refused request", i)
			}
			expect := rejectionByCode(tc.code)
			if expect == nil {
				t.Fatalf("Test %d: unknown code %q", i, tc.code)
			}
			if w.Code != expect.Status {
				t.Errorf("Test %d: status %d, expected %d", i, w.Code, expect.Status)
			}
			var resp map[string]string
			if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
				t.Fatalf("Test %d: response body %q is not JSON: %v", i, w.Body.String(), err)
			}
			if resp["error"] != tc.code || resp["message"] != expect.Message || len(resp) != 2 {
				t.Errorf("Test %d: response %v, expected error %q with message %q", i, resp, tc.code, expect.Message)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Test %d: Content-Type %q", i, ct)
			}
			wwwAuth := w.Header().Values("WWW-Authenticate")
			if expect.Status == http.StatusUnauthorized {
				if len(wwwAuth) != 1 || wwwAuth[0] != `Bearer realm="wappchat"` {
					t.Errorf("Test %d: 401 with WWW-Authenticate %q", i, wwwAuth)
				}
			} else if len(wwwAuth) != 0 {
				t.Errorf("Test %d: status %d with WWW-Authenticate %q", i, w.Code, wwwAuth)
			}
			if tb.wasRead() && !tc.bodyRead {
				t.Errorf("Test %d: the body was read before refusing with %s", i, tc.code)
			}
			if v, ok := repl.Get("http.auth.user.id"); ok {
				t.Errorf("Test %d: http.auth.user.id = %v on a refused request", i, v)
			}
			rejected := env.logs.FilterMessage("rejected").All()
			if len(rejected) != 1 || rejected[0].ContextMap()["code"] != tc.code {
				t.Errorf("Test %d: expected one 'rejected' log entry with code %s, got %v", i, tc.code, rejected)
			}
			assertLogsFree(t, env.logs, secretsAndKeys)
		})
	}

	t.Run("every code is covered", func(t *testing.T) {
		// Kept in step with the cases above: a code added to rejection.go
		// without a case here fails.
		covered := map[string]bool{"missing_key": true, "ambiguous_key": true, "invalid_key": true, "key_revoked": true,
			"key_expired": true, "signature_required": true, "signing_not_enabled": true, "invalid_timestamp": true,
			"timestamp_out_of_tolerance": true, "invalid_signature": true, "signature_mismatch": true, "body_too_large": true,
			"invalid_body": true, "store_unavailable": true, "signature_replayed": true, "replay_capacity": true}
		for _, code := range rejectionCodes(t) {
			if !covered[code] {
				t.Errorf("rejection %q has no handler test case", code)
			}
			if rejectionByCode(code) == nil {
				t.Errorf("rejection %q is not in rejectionByCode", code)
			}
		}
	})
}

// requestSecrets is what must never be logged for a request: the raw keys and
// secrets of the env, and the key and signature the request carries.
func requestSecrets(env *handlerEnv, r *http.Request) []string {
	s := []string{env.plain.Key, env.signing.Key, env.signing.Secret, env.rotated.Key, env.rotated.Secret, env.oldSecret,
		env.revoked.Key, env.expired.Key}
	for _, v := range r.Header.Values(KeyHeader) {
		s = append(s, v)
	}
	for _, v := range r.Header.Values(SignatureHeader) {
		if len(v) > 16 {
			s = append(s, strings.TrimPrefix(v, "sha256="))
		}
	}
	for _, v := range r.Header.Values("Authorization") {
		if _, tok, ok := strings.Cut(v, " "); ok && len(tok) > 8 {
			s = append(s, strings.TrimSpace(tok))
		}
	}
	return s
}

func assertLogsFree(t *testing.T, logs *observer.ObservedLogs, secrets []string) {
	t.Helper()
	for _, entry := range logs.All() {
		b, _ := json.Marshal(entry.ContextMap())
		text := entry.Message + " " + string(b)
		for _, s := range secrets {
			if len(s) >= 8 && strings.Contains(text, s) {
				t.Errorf("log entry %q carries a key, secret or signature: %s", entry.Message, text)
			}
		}
	}
}

func TestHandlerAccepts(t *testing.T) {
	body := []byte(`{"event":"lead.created","source":"my-crm","idempotency_key":"lead.created:lead_123"}`)
	maxed := bytes.Repeat([]byte("m"), 1024)

	for i, tc := range []struct {
		name      string
		configure func(*Handler)
		key       func(*handlerEnv) *Issued
		body      []byte
		chunked   bool
		signWith  func(*handlerEnv) string // secret to sign with; nil: unsigned
		headers   func(*handlerEnv) []string
		// expectations
		keepAuthorization string // expected Authorization upstream ("" = absent)
		keyIDHeader       string // header the key id must arrive in ("" = none)
		tenantHeader      string
		buffered          bool // whether the body is replaced by verified bytes
	}{
		{
			name: "x-wappchat-key, unsigned, spoofed headers", key: func(e *handlerEnv) *Issued { return e.plain }, body: body,
			headers: func(e *handlerEnv) []string {
				return []string{KeyHeader, e.plain.Key, "Authorization", "Basic dXNlcjpwYXNz",
					"X-Tenant-ID", "evil", "X_Tenant_ID", "evil2", "x-tenant-id", "evil3",
					"X-WappChat-Key-ID", "key_evil", "X_WAPPCHAT_KEY_ID", "key_evil2", "X_Wappchat_Key", "leak"}
			},
			keepAuthorization: "Basic dXNlcjpwYXNz", keyIDHeader: defaultKeyIDHeader, tenantHeader: defaultTenantHeader,
		},
		{
			name: "bearer, unsigned", key: func(e *handlerEnv) *Issued { return e.plain }, body: body,
			headers:     func(e *handlerEnv) []string { return []string{"Authorization", "bearer " + e.plain.Key} },
			keyIDHeader: defaultKeyIDHeader, tenantHeader: defaultTenantHeader,
		},
		{
			name: "both headers with the same key", key: func(e *handlerEnv) *Issued { return e.plain }, body: body,
			headers: func(e *handlerEnv) []string {
				return []string{KeyHeader, e.plain.Key, "Authorization", "Bearer " + e.plain.Key}
			},
			keyIDHeader: defaultKeyIDHeader, tenantHeader: defaultTenantHeader,
		},
		{
			name: "signed, x-wappchat-key", key: func(e *handlerEnv) *Issued { return e.signing }, body: body,
			signWith: func(e *handlerEnv) string { return e.signing.Secret },
			headers: func(e *handlerEnv) []string {
				return []string{KeyHeader, e.signing.Key, "Authorization", "Digest x", "X-Tenant-Id", "evil"}
			},
			keepAuthorization: "Digest x", keyIDHeader: defaultKeyIDHeader, tenantHeader: defaultTenantHeader, buffered: true,
		},
		{
			name: "signed, bearer, chunked", key: func(e *handlerEnv) *Issued { return e.signing }, body: body, chunked: true,
			signWith:    func(e *handlerEnv) string { return e.signing.Secret },
			headers:     func(e *handlerEnv) []string { return []string{"Authorization", "Bearer " + e.signing.Key} },
			keyIDHeader: defaultKeyIDHeader, tenantHeader: defaultTenantHeader, buffered: true,
		},
		{
			name: "signed, empty body", key: func(e *handlerEnv) *Issued { return e.signing }, body: nil,
			signWith:    func(e *handlerEnv) string { return e.signing.Secret },
			headers:     func(e *handlerEnv) []string { return []string{KeyHeader, e.signing.Key} },
			keyIDHeader: defaultKeyIDHeader, tenantHeader: defaultTenantHeader, buffered: true,
		},
		{
			name: "signed, body exactly max_body", configure: func(h *Handler) { h.MaxBody = int64(len(maxed)) },
			key: func(e *handlerEnv) *Issued { return e.signing }, body: maxed,
			signWith:    func(e *handlerEnv) string { return e.signing.Secret },
			headers:     func(e *handlerEnv) []string { return []string{KeyHeader, e.signing.Key} },
			keyIDHeader: defaultKeyIDHeader, tenantHeader: defaultTenantHeader, buffered: true,
		},
		{
			name: "signed, chunked body exactly max_body", configure: func(h *Handler) { h.MaxBody = int64(len(maxed)) },
			key: func(e *handlerEnv) *Issued { return e.signing }, body: maxed, chunked: true,
			signWith:    func(e *handlerEnv) string { return e.signing.Secret },
			headers:     func(e *handlerEnv) []string { return []string{KeyHeader, e.signing.Key} },
			keyIDHeader: defaultKeyIDHeader, tenantHeader: defaultTenantHeader, buffered: true,
		},
		{
			name: "rotated key, new secret", key: func(e *handlerEnv) *Issued { return e.rotated }, body: body,
			signWith:    func(e *handlerEnv) string { return e.rotated.Secret },
			headers:     func(e *handlerEnv) []string { return []string{KeyHeader, e.rotated.Key} },
			keyIDHeader: defaultKeyIDHeader, tenantHeader: defaultTenantHeader, buffered: true,
		},
		{
			name: "rotated key, old secret in its grace", key: func(e *handlerEnv) *Issued { return e.rotated }, body: body,
			signWith:    func(e *handlerEnv) string { return e.oldSecret },
			headers:     func(e *handlerEnv) []string { return []string{KeyHeader, e.rotated.Key} },
			keyIDHeader: defaultKeyIDHeader, tenantHeader: defaultTenantHeader, buffered: true,
		},
		{
			name: "signatures required, signed", configure: func(h *Handler) { h.Signatures = signaturesRequired },
			key: func(e *handlerEnv) *Issued { return e.signing }, body: body,
			signWith:    func(e *handlerEnv) string { return e.signing.Secret },
			headers:     func(e *handlerEnv) []string { return []string{KeyHeader, e.signing.Key} },
			keyIDHeader: defaultKeyIDHeader, tenantHeader: defaultTenantHeader, buffered: true,
		},
		{
			name: "unsigned body over max_body streams", configure: func(h *Handler) { h.MaxBody = 16 },
			key: func(e *handlerEnv) *Issued { return e.plain }, body: maxed, chunked: true,
			headers:     func(e *handlerEnv) []string { return []string{KeyHeader, e.plain.Key} },
			keyIDHeader: defaultKeyIDHeader, tenantHeader: defaultTenantHeader,
		},
		{
			name:      "custom headers, key id off",
			configure: func(h *Handler) { h.TenantHeader = "X-Org"; h.KeyIDHeader = headerOff },
			key:       func(e *handlerEnv) *Issued { return e.plain }, body: body,
			headers: func(e *handlerEnv) []string {
				return []string{KeyHeader, e.plain.Key, "X-Org", "evil", "x_org", "evil2"}
			},
			tenantHeader: "X-Org",
		},
		{
			name: "custom key id header", configure: func(h *Handler) { h.KeyIDHeader = "X-Key" },
			key: func(e *handlerEnv) *Issued { return e.plain }, body: body,
			headers: func(e *handlerEnv) []string {
				return []string{KeyHeader, e.plain.Key, "x_key", "evil"}
			},
			keyIDHeader: "X-Key", tenantHeader: defaultTenantHeader,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newHandlerEnv(t, tc.configure)
			if err := env.h.Validate(); err != nil {
				t.Fatalf("Test %d: handler config invalid: %v", i, err)
			}
			key := tc.key(env)
			headers := tc.headers(env)
			if tc.signWith != nil {
				headers = append(headers, TimestampHeader, testTS, SignatureHeader, signHeader(tc.signWith(env), testTS, tc.body))
			}
			cl := int64(len(tc.body))
			if tc.chunked {
				cl = -1
			}
			r, tb, repl := testRequest(tc.body, cl, -1, headers...)
			secrets := requestSecrets(env, r)
			w := httptest.NewRecorder()
			var up upstream
			if err := env.h.ServeHTTP(w, r, up.handler()); err != nil {
				t.Fatalf("Test %d: ServeHTTP: %v", i, err)
			}
			if !up.called {
				t.Fatalf("Test %d: refused: %d %s", i, w.Code, w.Body.String())
			}
			if w.Code != http.StatusNoContent {
				t.Errorf("Test %d: status %d, expected the upstream's 204", i, w.Code)
			}

			// Tenant and key id: exactly one value, ours, under one name only.
			for name, values := range up.header {
				if SameHeaderName(name, tc.tenantHeader) {
					if name != http.CanonicalHeaderKey(tc.tenantHeader) || len(values) != 1 || values[0] != key.Record.Tenant {
						t.Errorf("Test %d: upstream got %s: %q, expected only %s: %q", i, name, values, tc.tenantHeader, key.Record.Tenant)
					}
				}
				if tc.keyIDHeader != "" && SameHeaderName(name, tc.keyIDHeader) {
					if name != http.CanonicalHeaderKey(tc.keyIDHeader) || len(values) != 1 || values[0] != key.Record.ID {
						t.Errorf("Test %d: upstream got %s: %q, expected only %s: %q", i, name, values, tc.keyIDHeader, key.Record.ID)
					}
				}
				for _, v := range values {
					if strings.HasPrefix(v, "evil") || strings.HasPrefix(v, "key_evil") {
						t.Errorf("Test %d: spoofed header %s: %q reached the upstream", i, name, v)
					}
				}
			}
			if got := up.header.Get(tc.tenantHeader); got != key.Record.Tenant {
				t.Errorf("Test %d: tenant header %s = %q, expected %q", i, tc.tenantHeader, got, key.Record.Tenant)
			}
			if tc.keyIDHeader == "" {
				if got := up.header.Get(defaultKeyIDHeader); got == key.Record.ID {
					t.Errorf("Test %d: key id sent although key_id_header is off", i)
				}
			} else if got := up.header.Get(tc.keyIDHeader); got != key.Record.ID {
				t.Errorf("Test %d: key id header %s = %q, expected %q", i, tc.keyIDHeader, got, key.Record.ID)
			}

			// The credential is gone, other authorization stays.
			for name := range up.header {
				if SameHeaderName(name, KeyHeader) {
					t.Errorf("Test %d: credential header %s reached the upstream", i, name)
				}
			}
			if got := strings.Join(up.header.Values("Authorization"), ","); got != tc.keepAuthorization {
				t.Errorf("Test %d: upstream Authorization = %q, expected %q", i, got, tc.keepAuthorization)
			}
			for _, v := range flatten(up.header) {
				if strings.Contains(v, strings.TrimPrefix(key.Key, KeyPrefix)) {
					t.Errorf("Test %d: the raw key reached the upstream in %q", i, v)
				}
			}

			// The body arrives identical, with an exact length when buffered.
			if !bytes.Equal(up.body, tc.body) {
				t.Errorf("Test %d: upstream body %q, expected %q", i, up.body, tc.body)
			}
			if tc.buffered {
				if up.contentLength != int64(len(tc.body)) || up.header.Get("Content-Length") != strconv.Itoa(len(tc.body)) || len(up.te) != 0 {
					t.Errorf("Test %d: upstream ContentLength %d, Content-Length %q, Transfer-Encoding %v; expected %d, no chunking",
						i, up.contentLength, up.header.Get("Content-Length"), up.te, len(tc.body))
				}
			} else {
				if up.bodyObj != io.ReadCloser(tb) {
					t.Errorf("Test %d: an unsigned body was replaced (buffered) instead of streamed", i)
				}
				if up.contentLength != cl {
					t.Errorf("Test %d: unsigned ContentLength changed from %d to %d", i, cl, up.contentLength)
				}
			}

			if up.userID != key.Record.ID || up.tenantID != key.Record.Tenant {
				t.Errorf("Test %d: placeholders user.id=%q tenant_id=%q, expected %q %q", i, up.userID, up.tenantID, key.Record.ID, key.Record.Tenant)
			}
			if v, _ := repl.GetString("http.auth.user.id"); v != key.Record.ID {
				t.Errorf("Test %d: replacer after the request: http.auth.user.id=%q", i, v)
			}
			accepted := env.logs.FilterMessage("accepted").All()
			if len(accepted) != 1 || accepted[0].ContextMap()["key_id"] != key.Record.ID || accepted[0].ContextMap()["tenant"] != key.Record.Tenant {
				t.Errorf("Test %d: expected one 'accepted' entry with key id and tenant, got %v", i, accepted)
			}
			assertLogsFree(t, env.logs, secrets)
		})
	}
}

func flatten(h http.Header) []string {
	var out []string
	for name, values := range h {
		for _, v := range values {
			out = append(out, name+": "+v)
		}
	}
	return out
}

// TestHandlerRevocationSeen: a revoke through the app is seen by the next
// request even with a cache TTL, and a store outage never lets a request pass.
func TestHandlerRevocationSeen(t *testing.T) {
	env := newHandlerEnv(t, nil)
	ttl := caddy.Duration(time.Hour)
	env.app.CacheTTL = &ttl
	cache, err := newLookupCache(time.Hour, 10, 10, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	env.app.cache = cache

	serve := func() (*httptest.ResponseRecorder, bool) {
		r, _, _ := testRequest(nil, 0, -1, KeyHeader, env.plain.Key)
		w := httptest.NewRecorder()
		var up upstream
		if err := env.h.ServeHTTP(w, r, up.handler()); err != nil {
			t.Fatal(err)
		}
		return w, up.called
	}
	if _, ok := serve(); !ok {
		t.Fatal("fresh key refused")
	}
	if _, err := env.app.RevokeKey(context.Background(), env.plain.Record.ID); err != nil {
		t.Fatal(err)
	}
	w, ok := serve()
	if ok || w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "key_revoked") {
		t.Errorf("after RevokeKey: passed=%t status %d body %s", ok, w.Code, w.Body.String())
	}
}

func TestHandlerValidate(t *testing.T) {
	valid := func() Handler {
		return Handler{TenantHeader: defaultTenantHeader, KeyIDHeader: defaultKeyIDHeader, Signatures: signaturesOptional,
			Tolerance: caddy.Duration(defaultTolerance), MaxBody: defaultMaxBody}
	}
	for i, tc := range []struct {
		name   string
		change func(*Handler)
		ok     bool
	}{
		{"defaults", func(*Handler) {}, true},
		{"signatures required", func(h *Handler) { h.Signatures = signaturesRequired }, true},
		{"key id off", func(h *Handler) { h.KeyIDHeader = headerOff }, true},
		{"tolerance 1s", func(h *Handler) { h.Tolerance = caddy.Duration(time.Second) }, true},
		{"underscore header", func(h *Handler) { h.TenantHeader = "X_Org" }, true},
		{"signatures empty", func(h *Handler) { h.Signatures = "" }, false},
		{"signatures uppercase", func(h *Handler) { h.Signatures = "Required" }, false},
		{"signatures off", func(h *Handler) { h.Signatures = "off" }, false},
		{"tolerance 0", func(h *Handler) { h.Tolerance = 0 }, false},
		{"tolerance 999ms", func(h *Handler) { h.Tolerance = caddy.Duration(999 * time.Millisecond) }, false},
		{"tolerance negative", func(h *Handler) { h.Tolerance = caddy.Duration(-time.Minute) }, false},
		{"max_body negative", func(h *Handler) { h.MaxBody = -1 }, false},
		{"tenant header is the key header", func(h *Handler) { h.TenantHeader = "x-wappchat-key" }, false},
		{"tenant header is the key header with _", func(h *Handler) { h.TenantHeader = "X_WAPPCHAT_KEY" }, false},
		{"tenant header is authorization", func(h *Handler) { h.TenantHeader = "Authorization" }, false},
		{"tenant header is host", func(h *Handler) { h.TenantHeader = "host" }, false},
		{"tenant header is content-length", func(h *Handler) { h.TenantHeader = "Content_Length" }, false},
		{"key id header is the signature header", func(h *Handler) { h.KeyIDHeader = "X-Wappchat-Signature" }, false},
		{"key id header is the timestamp header", func(h *Handler) { h.KeyIDHeader = "x_wappchat_timestamp" }, false},
		{"tenant and key id equal", func(h *Handler) { h.KeyIDHeader = h.TenantHeader }, false},
		{"tenant and key id equal by folding", func(h *Handler) { h.TenantHeader = "X-A"; h.KeyIDHeader = "x_a" }, false},
		{"tenant header empty", func(h *Handler) { h.TenantHeader = "" }, false},
		{"tenant header with space", func(h *Handler) { h.TenantHeader = "X Tenant" }, false},
		{"tenant header with colon", func(h *Handler) { h.TenantHeader = "X-Tenant:" }, false},
		{"tenant header with newline", func(h *Handler) { h.TenantHeader = "X-Tenant\r\nX-Admin" }, false},
		{"key id header non-ASCII", func(h *Handler) { h.KeyIDHeader = "X-Clé" }, false},
	} {
		h := valid()
		tc.change(&h)
		err := h.Validate()
		if tc.ok && err != nil {
			t.Errorf("Test %d (%s): unexpected error %v", i, tc.name, err)
		}
		if !tc.ok && err == nil {
			t.Errorf("Test %d (%s): expected an error, got none (%+v)", i, tc.name, h)
		}
	}
}

// TestHandlerBodyNotReadWithoutValidKey sends a body that would take the
// sidecar to a large allocation: without a valid key it must not be read at all.
func TestHandlerBodyNotReadWithoutValidKey(t *testing.T) {
	env := newHandlerEnv(t, nil)
	for i, headers := range [][]string{
		nil,
		{KeyHeader, KeyPrefix + "unknown", TimestampHeader, testTS, SignatureHeader, "sha256=" + strings.Repeat("0", 64)},
		{KeyHeader, env.revoked.Key, TimestampHeader, testTS, SignatureHeader, "sha256=" + strings.Repeat("0", 64)},
		{KeyHeader, env.signing.Key, TimestampHeader, "1", SignatureHeader, "sha256=" + strings.Repeat("0", 64)},
	} {
		r, tb, _ := testRequest(bytes.Repeat([]byte("z"), 4<<20), -1, -1, headers...)
		w := httptest.NewRecorder()
		var up upstream
		_ = env.h.ServeHTTP(w, r, up.handler())
		if up.called || tb.wasRead() {
			t.Errorf("Test %d: next called=%t, body read=%t (status %d %s)", i, up.called, tb.wasRead(), w.Code, w.Body.String())
		}
	}
}

func ExampleSign() {
	sig := Sign([]byte("secret"), "1779111111", []byte(`{"event":"x"}`))
	fmt.Println("sha256=" + hex.EncodeToString(sig[:]))
	// Output: sha256=8d30aee6e9aa32c66f5e25737d323fc59948d021db2cd99d06b282e34bf55900
}

// A signed body's buffer goes back to the pool when the chain returns, even
// when the next handler never reads or closes the body.
func TestHandlerReturnsBodyBuffer(t *testing.T) {
	env := newHandlerEnv(t, nil)
	body := []byte(`{"event":"lead.created"}`)
	ts := strconv.FormatInt(testNow.Unix(), 10)
	r, _, _ := testRequest(body, int64(len(body)), -1, KeyHeader, env.signing.Key,
		TimestampHeader, ts, SignatureHeader, signHeader(env.signing.Secret, ts, body))
	before := buffersInUse.Load()
	var inChain int64
	ignore := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		inChain = buffersInUse.Load()
		return nil
	})
	if err := env.h.ServeHTTP(httptest.NewRecorder(), r, ignore); err != nil {
		t.Fatal(err)
	}
	if inChain != before+1 || buffersInUse.Load() != before {
		t.Errorf("buffers in use: %d before, %d in the chain, %d after; expected %d, %d, %d", before, inChain, buffersInUse.Load(), before, before+1, before)
	}
}

// A body that arrives after the tolerance ran out is refused, even though its
// headers were in time: otherwise it could outlast the claim that guards it.
func TestHandlerSlowBodyOutlastsTolerance(t *testing.T) {
	clock := testNow
	env := newHandlerEnv(t, func(h *Handler) { h.now = func() time.Time { return clock } })
	body := []byte(`{"event":"late"}`)
	ts := strconv.FormatInt(testNow.Add(-defaultTolerance).Unix(), 10) // the last accepted second
	r, _, _ := testRequest(nil, int64(len(body)), -1, KeyHeader, env.signing.Key,
		TimestampHeader, ts, SignatureHeader, signHeader(env.signing.Secret, ts, body))
	rest := bytes.NewReader(body)
	r.Body = readerFunc(func(p []byte) (int, error) {
		clock = testNow.Add(2 * time.Second) // the body arrives later
		return rest.Read(p)
	})
	w := httptest.NewRecorder()
	var up upstream
	if err := env.h.ServeHTTP(w, r, up.handler()); err != nil {
		t.Fatal(err)
	}
	if up.called || !strings.Contains(w.Body.String(), "timestamp_out_of_tolerance") {
		t.Errorf("late body: passed=%t, %d %s", up.called, w.Code, w.Body.String())
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
func (f readerFunc) Close() error               { return nil }
