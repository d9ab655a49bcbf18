package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

const adminKeysPath = "/wappchat/keys"

// maxAdminBody bounds what a key-creation request may send.
const maxAdminBody = 64 << 10

// adminAPI serves the key store on Caddy's admin endpoint, through the same
// app (and cache) the running handlers use.
type adminAPI struct {
	app    *App
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.wappchat",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Provision finds the running wappchat app.
func (a *adminAPI) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger(a)
	app, err := ctx.App("wappchat")
	if err != nil {
		return fmt.Errorf("loading wappchat app: %v", err)
	}
	a.app = app.(*App)
	return nil
}

// Routes implements caddy.AdminRouter.
func (a *adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: adminKeysPath, Handler: caddy.AdminHandlerFunc(a.serveKeys)},
		{Pattern: adminKeysPath + "/", Handler: caddy.AdminHandlerFunc(a.serveKeys)},
	}
}

// apiError is an admin API refusal with a stable code.
type apiError struct {
	status  int
	code    string
	message string
}

var errMethodNotAllowed = &apiError{http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on this resource"}

// serveKeys routes /wappchat/keys and /wappchat/keys/{id}. Errors are written
// here as JSON with a code, so Caddy's admin error wrapper never reshapes them.
func (a *adminAPI) serveKeys(w http.ResponseWriter, r *http.Request) error {
	id, action, _ := strings.Cut(strings.Trim(strings.TrimPrefix(r.URL.Path, adminKeysPath), "/"), "/")
	var status int
	var out any
	var aerr *apiError
	switch {
	case action != "" && r.Method == http.MethodPost:
		status, out, aerr = a.sign(r, id, action)
	case action != "":
		aerr = errMethodNotAllowed
	case id == "" && r.Method == http.MethodGet:
		status, out, aerr = a.list(r)
	case id == "" && r.Method == http.MethodPost:
		status, out, aerr = a.create(r)
	case id != "" && r.Method == http.MethodGet:
		status, out, aerr = a.get(r, id)
	case id != "" && r.Method == http.MethodDelete:
		status, out, aerr = a.revoke(r, id)
	default:
		aerr = errMethodNotAllowed
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if aerr != nil {
		status, out = aerr.status, map[string]string{"error": aerr.code, "message": aerr.message}
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(out)
	return nil
}

func (a *adminAPI) list(r *http.Request) (int, any, *apiError) {
	q := r.URL.Query()
	all := q.Get("all") == "1" || q.Get("all") == "true"
	summaries, err := a.app.ListKeys(r.Context(), q.Get("tenant"), all)
	if err != nil {
		return 0, nil, a.storeError(err)
	}
	return http.StatusOK, summaries, nil
}

func (a *adminAPI) get(r *http.Request, id string) (int, any, *apiError) {
	rec, err := a.app.GetKey(r.Context(), id)
	if err != nil {
		return 0, nil, a.storeError(err)
	}
	return http.StatusOK, rec.Summary(), nil
}

func (a *adminAPI) revoke(r *http.Request, id string) (int, any, *apiError) {
	rec, err := a.app.RevokeKey(r.Context(), id)
	if err != nil {
		return 0, nil, a.storeError(err)
	}
	a.logger.Info("key revoked", zap.String("key_id", rec.ID), zap.String("tenant", rec.Tenant))
	return http.StatusOK, rec.Summary(), nil
}

// RotateRequest is the optional body of POST /wappchat/keys/{id}/rotate-secret.
type RotateRequest struct {
	Grace string `json:"grace,omitempty"` // default 24h; "0" retires the old secret at once
}

// defaultGrace is how long a rotated-out secret keeps verifying.
const defaultGrace = 24 * time.Hour

// ParseGrace reads a grace period; "" is the default.
func ParseGrace(v string) (time.Duration, error) {
	if v == "" {
		return defaultGrace, nil
	}
	d, err := caddy.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("grace %q is not a duration such as 24h or 0", v)
	}
	return d, nil
}

// sign serves POST /wappchat/keys/{id}/rotate-secret and /enable-signing.
func (a *adminAPI) sign(r *http.Request, id, action string) (int, any, *apiError) {
	var issued *Issued
	var err error
	switch action {
	case "rotate-secret":
		var req RotateRequest
		if aerr := decodeJSON(r, &req, true); aerr != nil {
			return 0, nil, aerr
		}
		grace, perr := ParseGrace(req.Grace)
		if perr != nil {
			return 0, nil, &apiError{http.StatusBadRequest, "invalid_request", perr.Error()}
		}
		issued, err = a.app.RotateSecret(r.Context(), id, grace)
	case "enable-signing":
		issued, err = a.app.EnableSigning(r.Context(), id)
	default:
		return 0, nil, &apiError{http.StatusNotFound, "not_found", "no such resource"}
	}
	if err != nil {
		return 0, nil, a.storeError(err)
	}
	a.logger.Info("secret issued", zap.String("key_id", id), zap.String("action", action))
	return http.StatusOK, issued.View(), nil
}

// decodeJSON reads one JSON object with no unknown fields; optional allows an empty body.
func decodeJSON(r *http.Request, v any, optional bool) *apiError {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if optional && errors.Is(err, io.EOF) {
		return nil
	}
	if err != nil || dec.More() {
		return &apiError{http.StatusBadRequest, "invalid_json", "the body must be one JSON object with only the documented fields"}
	}
	return nil
}

// CreateRequest is the body of POST /wappchat/keys. SHA256 and Secret import a
// key issued elsewhere; otherwise the key (and, with Signing, a secret) is generated.
type CreateRequest struct {
	Tenant    string `json:"tenant"`
	Name      string `json:"name,omitempty"`
	Signing   bool   `json:"signing,omitempty"`
	ExpiresIn string `json:"expires_in,omitempty"`
	SHA256    string `json:"sha256,omitempty"`
	Secret    string `json:"secret,omitempty"`
}

// Spec validates the request's lifetime and turns it into a record spec.
func (c CreateRequest) Spec() (NewRecordSpec, error) {
	expires, err := parseLifetime(c.ExpiresIn)
	if err != nil {
		return NewRecordSpec{}, err
	}
	return NewRecordSpec{Tenant: c.Tenant, Name: c.Name, Signing: c.Signing, Expires: expires, SHA256: c.SHA256, Secret: c.Secret}, nil
}

func (a *adminAPI) create(r *http.Request) (int, any, *apiError) {
	var req CreateRequest
	if aerr := decodeJSON(r, &req, false); aerr != nil {
		return 0, nil, aerr
	}
	spec, err := req.Spec()
	if err != nil {
		return 0, nil, &apiError{http.StatusBadRequest, "invalid_request", err.Error()}
	}
	issued, err := a.app.CreateKey(r.Context(), spec)
	if err != nil {
		return 0, nil, a.storeError(err)
	}
	a.logger.Info("key created", zap.String("key_id", issued.Record.ID), zap.String("tenant", issued.Record.Tenant))
	return http.StatusCreated, issued.View(), nil
}

// storeError maps what the app returns to an API error; validation errors
// from Issue carry no secret, so their text is safe to return.
func (a *adminAPI) storeError(err error) *apiError {
	var invalid *InvalidSpecError
	switch {
	case errors.Is(err, ErrNotFound):
		return &apiError{http.StatusNotFound, "key_not_found", "no key with this id"}
	case errors.Is(err, ErrExists):
		return &apiError{http.StatusConflict, "key_exists", "a key with this hash already exists"}
	case errors.As(err, &invalid):
		return &apiError{http.StatusBadRequest, "invalid_request", err.Error()}
	case errors.Is(err, ErrSigningState):
		return &apiError{http.StatusConflict, "signing_conflict", "revoked keys cannot sign; rotate-secret needs a signing key, enable-signing a key without a secret"}
	}
	a.logger.Error("key store unavailable", zap.Error(err))
	return &apiError{http.StatusServiceUnavailable, "store_unavailable", "the key store cannot be used right now"}
}

// Interface guards
var (
	_ caddy.Provisioner = (*adminAPI)(nil)
	_ caddy.AdminRouter = (*adminAPI)(nil)
)
