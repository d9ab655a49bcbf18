package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
)

// keyService is what the CLI does to keys: through a running server's admin
// API when one answers, else on the store directly. Both give the same records.
type keyService interface {
	Create(req CreateRequest) (IssuedView, error)
	List(tenant string, all bool) ([]Summary, error)
	Revoke(id string) (Summary, error)
	RotateSecret(id, grace string) (IssuedView, error)
	EnableSigning(id string) (IssuedView, error)
}

// openKeys resolves the admin address like `caddy reload` and uses the server
// if it answers there. It says on stderr which way it went.
func openKeys(fl caddycmd.Flags) (keyService, func(), error) {
	addr, err := caddycmd.DetermineAdminAPIAddress(fl.String("address"), nil, fl.String("config"), fl.String("adapter"))
	if err != nil {
		return nil, nil, err
	}
	if adminAnswers(addr) {
		fmt.Fprintf(os.Stderr, "wappchat-keys: using the running server's admin API at %s\n", addr)
		return adminKeys{addr: addr}, func() {}, nil
	}
	app, done, err := openApp(fl)
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(os.Stderr, "wappchat-keys: no server answers at %s; using the key store directly\n", addr)
	return localKeys{app: app}, done, nil
}

func adminAnswers(addr string) bool {
	na, err := caddy.ParseNetworkAddress(addr)
	if err != nil {
		return false
	}
	conn, err := net.DialTimeout(na.Network, na.JoinHostPort(0), time.Second)
	if err != nil {
		return false
	}
	_ = conn.Close()
	return true
}

// localKeys works on the store, when no server runs.
type localKeys struct{ app *App }

func (k localKeys) Create(req CreateRequest) (IssuedView, error) {
	spec, err := req.Spec()
	if err != nil {
		return IssuedView{}, err
	}
	return view(k.app.CreateKey(context.Background(), spec))
}

func (k localKeys) List(tenant string, all bool) ([]Summary, error) {
	return k.app.ListKeys(context.Background(), tenant, all)
}

func (k localKeys) Revoke(id string) (Summary, error) {
	rec, err := k.app.RevokeKey(context.Background(), id)
	if err != nil {
		return Summary{}, err
	}
	return rec.Summary(), nil
}

func (k localKeys) RotateSecret(id, grace string) (IssuedView, error) {
	d, err := ParseGrace(grace)
	if err != nil {
		return IssuedView{}, err
	}
	return view(k.app.RotateSecret(context.Background(), id, d))
}

func (k localKeys) EnableSigning(id string) (IssuedView, error) {
	return view(k.app.EnableSigning(context.Background(), id))
}

func view(issued *Issued, err error) (IssuedView, error) {
	if err != nil {
		return IssuedView{}, err
	}
	return issued.View(), nil
}

// adminKeys asks the running server's admin API.
type adminKeys struct{ addr string }

func (k adminKeys) Create(req CreateRequest) (IssuedView, error) {
	var out IssuedView
	body, err := json.Marshal(req)
	if err != nil {
		return out, err
	}
	return out, k.call(http.MethodPost, adminKeysPath, bytes.NewReader(body), &out)
}

func (k adminKeys) List(tenant string, all bool) ([]Summary, error) {
	q := url.Values{}
	if tenant != "" {
		q.Set("tenant", tenant)
	}
	if all {
		q.Set("all", "1")
	}
	var out []Summary
	return out, k.call(http.MethodGet, adminKeysPath+"?"+q.Encode(), nil, &out)
}

func (k adminKeys) Revoke(id string) (Summary, error) {
	var out Summary
	return out, k.call(http.MethodDelete, adminKeysPath+"/"+url.PathEscape(id), nil, &out)
}

func (k adminKeys) RotateSecret(id, grace string) (IssuedView, error) {
	body, err := json.Marshal(RotateRequest{Grace: grace})
	if err != nil {
		return IssuedView{}, err
	}
	return k.issue(adminKeysPath+"/"+url.PathEscape(id)+"/rotate-secret", bytes.NewReader(body))
}

func (k adminKeys) EnableSigning(id string) (IssuedView, error) {
	return k.issue(adminKeysPath+"/"+url.PathEscape(id)+"/enable-signing", nil)
}

func (k adminKeys) issue(uri string, body io.Reader) (IssuedView, error) {
	var out IssuedView
	return out, k.call(http.MethodPost, uri, body, &out)
}

// call makes one admin API request; AdminAPIRequest returns an error response
// as text, where the API's key_not_found code maps back to ErrNotFound.
func (k adminKeys) call(method, uri string, body io.Reader, out any) error {
	resp, err := caddycmd.AdminAPIRequest(k.addr, method, uri, nil, body)
	if err != nil && strings.Contains(err.Error(), `"key_not_found"`) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}
