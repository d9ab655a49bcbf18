package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Defaults of the wappchat_auth handler.
const (
	defaultTenantHeader = "X-Tenant-ID"
	defaultKeyIDHeader  = "X-WappChat-Key-ID"
	defaultTolerance    = 5 * time.Minute
	defaultMaxBody      = 1 << 20
	headerOff           = "off"
	signaturesOptional  = "optional"
	signaturesRequired  = "required"
)

// Handler authenticates WApp Chat integration keys and request signatures,
// then tells the upstream which tenant sent the request.
type Handler struct {
	// Header the tenant id is sent upstream in. Default X-Tenant-ID.
	TenantHeader string `json:"tenant_header,omitempty"`
	// Header the key id is sent upstream in; "off" sends none. Default X-WappChat-Key-ID.
	KeyIDHeader string `json:"key_id_header,omitempty"`
	// "optional" (default): keys with a secret must sign; "required": every key must.
	Signatures string `json:"signatures,omitempty"`
	// How far a signed timestamp may be from now, either way. Default 5m.
	Tolerance caddy.Duration `json:"tolerance,omitempty"`
	// Largest signed body read, in bytes. Default 1 MiB.
	MaxBody int64 `json:"max_body,omitempty"`
	// Turns replay protection off: a signed request may then be accepted again
	// while its timestamp is within tolerance.
	ReplayOff bool `json:"replay_off,omitempty"`

	app                 *App
	logger              *zap.Logger
	now                 func() time.Time
	tenantKey, keyIDKey string // canonical TenantHeader and KeyIDHeader ("" when off)
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.wappchat_auth",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision fills defaults and finds the wappchat app.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.now = time.Now
	h.fillDefaults()
	app, err := ctx.App("wappchat")
	if err != nil {
		return fmt.Errorf("loading wappchat app: %v", err)
	}
	h.app = app.(*App)
	h.app.noteTolerance(time.Duration(h.Tolerance))
	return nil
}

// fillDefaults sets what the config left out and what is derived from it.
func (h *Handler) fillDefaults() {
	if h.TenantHeader == "" {
		h.TenantHeader = defaultTenantHeader
	}
	if h.KeyIDHeader == "" {
		h.KeyIDHeader = defaultKeyIDHeader
	}
	if h.Signatures == "" {
		h.Signatures = signaturesOptional
	}
	if h.Tolerance == 0 {
		h.Tolerance = caddy.Duration(defaultTolerance)
	}
	if h.MaxBody == 0 {
		h.MaxBody = defaultMaxBody
	}
	// Canonical keys, so injecting does not canonicalize (allocate) per request.
	h.tenantKey = http.CanonicalHeaderKey(h.TenantHeader)
	h.keyIDKey = ""
	if h.KeyIDHeader != headerOff {
		h.keyIDKey = http.CanonicalHeaderKey(h.KeyIDHeader)
	}
}

// Validate refuses settings that would weaken or break authentication.
func (h *Handler) Validate() error {
	if h.Signatures != signaturesOptional && h.Signatures != signaturesRequired {
		return fmt.Errorf("signatures must be %q or %q, not %q", signaturesOptional, signaturesRequired, h.Signatures)
	}
	if h.Tolerance < caddy.Duration(time.Second) {
		return fmt.Errorf("tolerance must be at least 1s")
	}
	if h.MaxBody < 0 {
		return fmt.Errorf("max_body must be positive")
	}
	for _, name := range h.injectedHeaders() {
		if !validHeaderName(name) {
			return fmt.Errorf("invalid header name %q", name)
		}
		for _, reserved := range reservedHeaders {
			if SameHeaderName(name, reserved) {
				return fmt.Errorf("header %q cannot carry the tenant or key id", name)
			}
		}
	}
	if SameHeaderName(h.TenantHeader, h.KeyIDHeader) {
		return fmt.Errorf("tenant_header and key_id_header must differ")
	}
	return nil
}

// injectedHeaders are the headers only this handler may set upstream.
func (h *Handler) injectedHeaders() []string {
	if h.KeyIDHeader == headerOff {
		return []string{h.TenantHeader}
	}
	return []string{h.TenantHeader, h.KeyIDHeader}
}

// ServeHTTP decides, counts and logs the decision, then either refuses or
// passes the request on with the tenant. Refusals are written here and return
// nil, so Caddy's error log never sees (nor logs the headers of) a rejected request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	started := time.Now()
	d := h.authenticate(r)
	h.app.metrics.observe(d.rejection, started, d.bodyRead)
	if d.rejection != nil {
		if d.body != nil {
			releaseBody(d.body)
		}
		return h.reject(w, r, d)
	}
	h.logAccepted(d) // before replaceBody, which may hand an empty body's buffer back
	if d.body != nil {
		// Closed here too: handlers that never read or close it would keep the buffer out of the pool.
		body := replaceBody(r, d.body)
		defer body.Close()
	}
	h.injectTenant(r, d.credential, d.key)
	return next.ServeHTTP(w, r)
}

// decision is what authenticate learned about a request.
type decision struct {
	credential Credential
	key        *Key          // nil while the key is unknown
	body       *bytes.Buffer // the body of a signed request, read once
	bodyRead   time.Duration
	rejection  *Rejection // nil: accepted
}

// authenticate reads top to bottom: key, record, signature headers, body,
// signature, replay claim. A request without a valid key never has its body read.
func (h *Handler) authenticate(r *http.Request) (d decision) {
	if d.credential, d.rejection = ExtractKey(r.Header); d.rejection != nil {
		return d
	}
	if d.key, d.rejection = h.lookup(r, d.credential.Key); d.rejection != nil {
		return d
	}
	now := h.now()
	if d.rejection = d.key.Check(now); d.rejection != nil {
		return d
	}
	if !d.key.Signing() {
		d.rejection = h.unsignedAllowed(r)
		return d
	}
	signed, rej := ParseSignedHeaders(r.Header, now, time.Duration(h.Tolerance))
	if rej != nil {
		d.rejection = rej
		return d
	}
	readStarted := time.Now()
	d.body, d.rejection = readBody(r, h.MaxBody)
	d.bodyRead = time.Since(readStarted)
	if d.rejection != nil {
		return d
	}
	if d.rejection = d.key.VerifySignature(now, signed, d.body.Bytes()); d.rejection != nil {
		return d
	}
	// Again after the body: a body sent slowly must not outlast the window its claim guards.
	if d.rejection = CheckTolerance(signed.Unix, h.now(), time.Duration(h.Tolerance)); d.rejection != nil {
		return d
	}
	d.rejection = h.claim(r, d.key.ID, signed)
	return d
}

// claim records a verified signed request so it is accepted only once while
// its timestamp is inside the tolerance window.
func (h *Handler) claim(r *http.Request, keyID string, signed SignedHeaders) *Rejection {
	if h.ReplayOff {
		return nil
	}
	// Every handler shares the claims: guard for the longest tolerance any of them accepts.
	lastValid := signed.Unix + int64(max(time.Duration(h.Tolerance), h.app.longestTolerance())/time.Second)
	err := h.app.claims.Claim(r.Context(), NewClaimID(keyID, signed), lastValid)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrClaimed):
		return ErrSignatureReplayed
	case errors.Is(err, ErrClaimsFull):
		h.logger.Error("replay claim store is full: refusing signed requests", zap.Int("replay_capacity", h.app.ReplayCapacity))
		return ErrReplayCapacity
	}
	h.logger.Error("replay claims unavailable", zap.Error(err))
	return ErrStoreUnavailable
}

func (h *Handler) lookup(r *http.Request, rawKey string) (*Key, *Rejection) {
	key, err := h.app.Lookup(r.Context(), HashKey(rawKey))
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, ErrInvalidKey
	case err != nil:
		h.logger.Error("key store unavailable", zap.Error(err))
		return nil, ErrStoreUnavailable
	}
	return key, nil
}

// unsignedAllowed decides for a key that has no secret.
func (h *Handler) unsignedAllowed(r *http.Request) *Rejection {
	if h.Signatures == signaturesRequired {
		return ErrSignatureRequired
	}
	if SignaturePresent(r.Header) {
		return ErrSigningNotEnabled
	}
	return nil
}

// injectTenant replaces anything the client sent under the tenant or key-id
// names, removes the credential, and tells the rest of Caddy who called.
func (h *Handler) injectTenant(r *http.Request, cred Credential, key *Key) {
	for k := range r.Header {
		if SameHeaderName(k, h.TenantHeader) || (h.keyIDKey != "" && SameHeaderName(k, h.KeyIDHeader)) || SameHeaderName(k, KeyHeader) {
			delete(r.Header, k)
		}
	}
	if cred.FromAuthorization {
		r.Header.Del("Authorization")
	}
	// Declared trailers would reach the upstream after the body, unchecked: a
	// trailer named X-Tenant-ID is as much a spoof as the header.
	r.Trailer = nil
	// What Header.Set does, with both values in one allocation.
	values := []string{key.Tenant, key.ID}
	r.Header[h.tenantKey] = values[0:1:1]
	if h.keyIDKey != "" {
		r.Header[h.keyIDKey] = values[1:2:2]
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	repl.Set("http.auth.user.id", key.idValue)
	repl.Set("http.auth.user.tenant_id", key.tenantValue)
}

// reject logs the refusal once (key id only when the key was known) and writes it.
func (h *Handler) reject(w http.ResponseWriter, r *http.Request, d decision) error {
	rej := d.rejection
	fields := []zap.Field{zap.String("code", rej.Code), zap.String("remote_addr", r.RemoteAddr)}
	if d.key != nil {
		fields = append(fields, zap.String("key_id", d.key.ID), zap.String("tenant", d.key.Tenant))
	}
	h.logger.Warn("rejected", fields...)

	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if d.body == nil && r.ContentLength != 0 && r.ProtoMajor == 1 {
		// The body was never read: closing spares the server draining it (it
		// would otherwise wait for up to 256 KiB an attacker may never send).
		// HTTP/2 resets just the stream; closing would drop every stream of the connection.
		w.Header().Set("Connection", "close")
	}
	if rej.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="wappchat"`)
	}
	w.WriteHeader(rej.Status)
	// A failed write means the client left; returning it would make Caddy log the request headers.
	_ = json.NewEncoder(w).Encode(map[string]string{"error": rej.Code, "message": rej.Message})
	return nil
}

// logAccepted writes the audit entry of an accepted request, with the event
// fields of a signed JSON body when it has them.
func (h *Handler) logAccepted(d decision) {
	// Checked first: with info disabled the body is not scanned for nothing.
	ce := h.logger.Check(zap.InfoLevel, "accepted")
	if ce == nil {
		return
	}
	fields := make([]zap.Field, 2, 5) // key_id, tenant and up to 3 event fields: one allocation
	fields[0], fields[1] = zap.String("key_id", d.key.ID), zap.String("tenant", d.key.Tenant)
	if d.body != nil {
		fields = appendEventFields(fields, d.body.Bytes())
	}
	ce.Write(fields...)
}

// reservedHeaders cannot carry the tenant: credentials, framing and hop-by-hop
// headers that proxies rewrite or drop.
var reservedHeaders = []string{
	KeyHeader, TimestampHeader, SignatureHeader, "Authorization", "Content-Length", "Host",
	"Connection", "Transfer-Encoding", "TE", "Trailer", "Upgrade", "Keep-Alive",
	"Proxy-Authorization", "Proxy-Authenticate", "Proxy-Connection",
}

func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
