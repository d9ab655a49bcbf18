package caddymodule

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/headers"
)

func adapt(t *testing.T, input string) (map[string]any, error) {
	t.Helper()
	adapter := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}
	out, _, err := adapter.Adapt([]byte(input), nil)
	if err != nil {
		return nil, err
	}
	var cfg map[string]any
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatalf("adapted config is not JSON: %v\n%s", err, out)
	}
	return cfg, nil
}

func normalize(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("expected JSON in the test is invalid: %v\n%s", err, s)
	}
	return v
}

func pretty(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

// dig walks a decoded JSON value by object keys and array indexes.
func dig(v any, path ...any) any {
	for _, p := range path {
		switch p := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[p]
		case int:
			a, ok := v.([]any)
			if !ok || p >= len(a) {
				return nil
			}
			v = a[p]
		}
	}
	return v
}

func TestCaddyfileHandler(t *testing.T) {
	for i, tc := range []struct {
		name   string
		block  string
		expect string // the handler object
	}{
		{"no block", ``, `{"handler":"wappchat_auth"}`},
		{"empty block", `{
		}`, `{"handler":"wappchat_auth"}`},
		{"tenant_header", `{
			tenant_header X-Org
		}`, `{"handler":"wappchat_auth","tenant_header":"X-Org"}`},
		{"key_id_header", `{
			key_id_header X-Key
		}`, `{"handler":"wappchat_auth","key_id_header":"X-Key"}`},
		{"key_id_header off", `{
			key_id_header off
		}`, `{"handler":"wappchat_auth","key_id_header":"off"}`},
		{"signatures required", `{
			signatures required
		}`, `{"handler":"wappchat_auth","signatures":"required"}`},
		{"signatures optional", `{
			signatures optional
		}`, `{"handler":"wappchat_auth","signatures":"optional"}`},
		{"tolerance", `{
			tolerance 90s
		}`, `{"handler":"wappchat_auth","tolerance":90000000000}`},
		{"tolerance in days", `{
			tolerance 1d
		}`, `{"handler":"wappchat_auth","tolerance":86400000000000}`},
		{"max_body MiB", `{
			max_body 1MiB
		}`, `{"handler":"wappchat_auth","max_body":1048576}`},
		{"max_body MB", `{
			max_body 2MB
		}`, `{"handler":"wappchat_auth","max_body":2000000}`},
		{"max_body bytes", `{
			max_body 512
		}`, `{"handler":"wappchat_auth","max_body":512}`},
		{"max_body fractional", `{
			max_body 1.5KiB
		}`, `{"handler":"wappchat_auth","max_body":1536}`},
		{"replay off", `{
			replay off
		}`, `{"handler":"wappchat_auth","replay_off":true}`},
		{"replay on", `{
			replay on
		}`, `{"handler":"wappchat_auth"}`},
		{"everything", `{
			tenant_header  X-Tenant
			key_id_header  X-Key-ID
			signatures     required
			tolerance      5m
			max_body       64KiB
		}`, `{"handler":"wappchat_auth","tenant_header":"X-Tenant","key_id_header":"X-Key-ID","signatures":"required","tolerance":300000000000,"max_body":65536}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := adapt(t, ":8080 {\n\twappchat_auth "+tc.block+"\n}\n")
			if err != nil {
				t.Fatalf("Test %d: adapting: %v", i, err)
			}
			expect := normalize(t, `{"apps":{"http":{"servers":{"srv0":{"listen":[":8080"],"routes":[{"handle":[`+tc.expect+`]}]}}}}}`)
			if !reflect.DeepEqual(cfg, expect) {
				t.Errorf("Test %d: adapted\n%s\nexpected\n%s", i, pretty(cfg), pretty(expect))
			}

			// What the adapter writes loads into a Handler that validates once defaults are filled.
			raw, _ := json.Marshal(dig(cfg, "apps", "http", "servers", "srv0", "routes", 0, "handle", 0))
			var h Handler
			if err := json.Unmarshal(raw, &h); err != nil {
				t.Fatalf("Test %d: handler JSON does not load: %v", i, err)
			}
			h.fillDefaults()
			if err := h.Validate(); err != nil {
				t.Errorf("Test %d: adapted handler does not validate: %v", i, err)
			}
		})
	}
}

// Values the adapter takes but Validate refuses when Caddy provisions the handler.
func TestCaddyfileHandlerRefusedAtValidate(t *testing.T) {
	for i, block := range []string{
		"signatures maybe",
		"tolerance -5m",
		"tolerance 500ms",
		"tenant_header X-Wappchat-Key",
		"tenant_header authorization",
		"key_id_header X-Tenant-ID",
		"key_id_header x_tenant_id",
	} {
		cfg, err := adapt(t, ":8080 {\n\twappchat_auth {\n\t\t"+block+"\n\t}\n}\n")
		if err != nil {
			continue // refused even earlier: fine
		}
		raw, _ := json.Marshal(dig(cfg, "apps", "http", "servers", "srv0", "routes", 0, "handle", 0))
		var h Handler
		if err := json.Unmarshal(raw, &h); err != nil {
			t.Fatalf("Test %d: %v", i, err)
		}
		h.fillDefaults()
		if err := h.Validate(); err == nil {
			t.Errorf("Test %d: %q adapts and validates: %s", i, block, raw)
		}
	}
}

func TestCaddyfileHandlerErrors(t *testing.T) {
	for i, tc := range []struct {
		name  string
		input string
	}{
		{"unknown option", "wappchat_auth {\n\t\tfoo bar\n\t}"},
		{"option name typo", "wappchat_auth {\n\t\ttenant_headers X\n\t}"},
		{"missing value", "wappchat_auth {\n\t\ttenant_header\n\t}"},
		{"missing tolerance", "wappchat_auth {\n\t\ttolerance\n\t}"},
		{"extra args", "wappchat_auth {\n\t\ttolerance 5m 6m\n\t}"},
		{"extra args on header", "wappchat_auth {\n\t\ttenant_header X-A X-B\n\t}"},
		{"argument on the directive", "wappchat_auth required"},
		{"two arguments on the directive", "wappchat_auth /api/* required"},
		{"bad duration", "wappchat_auth {\n\t\ttolerance five\n\t}"},
		{"duration without unit", "wappchat_auth {\n\t\ttolerance 300\n\t}"},
		{"bad size", "wappchat_auth {\n\t\tmax_body lots\n\t}"},
		{"zero size", "wappchat_auth {\n\t\tmax_body 0\n\t}"},
		{"negative size", "wappchat_auth {\n\t\tmax_body -1MiB\n\t}"},
		{"size too large", "wappchat_auth {\n\t\tmax_body 2TiB\n\t}"},
		{"replay bad value", "wappchat_auth {\n\t\treplay no\n\t}"},
		{"nested block", "wappchat_auth {\n\t\ttenant_header X {\n\t\t\tfoo\n\t\t}\n\t}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := adapt(t, ":8080 {\n\t"+tc.input+"\n}\n")
			if err == nil {
				t.Errorf("Test %d: expected an adapt error, got\n%s", i, pretty(cfg))
			}
		})
	}
}

// TestCaddyfileHandlerOrder: without route, wappchat_auth runs before
// basic_auth and before the terminal handler, whatever order the site block
// lists them in. (reverse_proxy cannot be adapted here: its package needs
// modules that go.sum does not list. It comes after basic_auth in Caddy's
// directive order, as respond does.)
func TestCaddyfileHandlerOrder(t *testing.T) {
	const input = `:8080 {
	respond "ok"
	basic_auth {
		admin $2a$14$Zkx19XLiW6VYouLHR5NmfOFU0z2GTNmpkT/5qqR7hx4IjWJPDhjvG
	}
	header X-Served-By sidecar
	wappchat_auth /api/* {
		signatures required
	}
}
`
	cfg, err := adapt(t, input)
	if err != nil {
		t.Fatalf("adapting: %v", err)
	}
	routes, _ := dig(cfg, "apps", "http", "servers", "srv0", "routes").([]any)
	var order []string
	var wappchatRoute any
	var walk func(routes []any)
	walk = func(routes []any) {
		for _, route := range routes {
			handlers, _ := dig(route, "handle").([]any)
			for _, h := range handlers {
				name, _ := dig(h, "handler").(string)
				if name == "subroute" {
					sub, _ := dig(h, "routes").([]any)
					walk(sub)
					continue
				}
				if name == "wappchat_auth" {
					wappchatRoute = route
				}
				order = append(order, name)
			}
		}
	}
	walk(routes)
	index := func(name string) int {
		for i, n := range order {
			if n == name {
				return i
			}
		}
		t.Fatalf("handler %s not in adapted routes %v:\n%s", name, order, pretty(cfg))
		return -1
	}
	w, basic, proxy := index("wappchat_auth"), index("authentication"), index("static_response")
	if w >= basic || w >= proxy {
		t.Errorf("route order %v: wappchat_auth must come before basic_auth (authentication) and respond", order)
	}
	// The matcher stays with the handler.
	expectMatch := normalize(t, `[{"path":["/api/*"]}]`)
	if got := dig(wappchatRoute, "match"); !reflect.DeepEqual(got, expectMatch) {
		t.Errorf("wappchat_auth route matcher %s, expected %s", pretty(got), pretty(expectMatch))
	}
	if got := dig(wappchatRoute, "handle", 0, "signatures"); got != "required" {
		t.Errorf("wappchat_auth options lost in ordering: %s", pretty(wappchatRoute))
	}
}

func TestCaddyfileGlobalOption(t *testing.T) {
	const key32 = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	for i, tc := range []struct {
		name   string
		block  string
		expect string // apps.wappchat
	}{
		{"no block", ``, `{}`},
		{"empty block", `{
		}`, `{}`},
		{"cache_ttl", `{
			cache_ttl 30s
		}`, `{"cache_ttl":30000000000}`},
		{"cache_ttl 0 is kept (always read)", `{
			cache_ttl 0
		}`, `{"cache_ttl":0}`},
		{"cache_ttl 0s", `{
			cache_ttl 0s
		}`, `{"cache_ttl":0}`},
		{"cache_size", `{
			cache_size 500
		}`, `{"cache_size":500}`},
		{"negative_cache_size", `{
			negative_cache_size 50
		}`, `{"negative_cache_size":50}`},
		{"replay_capacity", `{
			replay_capacity 1000
		}`, `{"replay_capacity":1000}`},
		{"secrets_key", `{
			secrets_key ` + key32 + `
		}`, `{"secrets_key":"` + key32 + `"}`},
		{"secrets_key placeholder", `{
			secrets_key {env.WAPPCHAT_SECRETS_KEY}
		}`, `{"secrets_key":"{env.WAPPCHAT_SECRETS_KEY}"}`},
		{"store redis, then more options", `{
			store redis {
				address localhost:6379 localhost:6380
				db 2
				tls
				prefix wc
			}
			cache_ttl 1s
		}`, `{"store":{"module":"redis","addresses":["localhost:6379","localhost:6380"],"db":2,"tls":true,"prefix":"wc"},"cache_ttl":1000000000}`},
		{"all", `{
			cache_ttl 1m
			cache_size 10
			negative_cache_size 20
		}`, `{"cache_ttl":60000000000,"cache_size":10,"negative_cache_size":20}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := adapt(t, "{\n\twappchat "+tc.block+"\n}\n:8080 {\n\twappchat_auth\n}\n")
			if err != nil {
				t.Fatalf("Test %d: adapting: %v", i, err)
			}
			got := dig(cfg, "apps", "wappchat")
			if tc.expect == `{}` && got == nil {
				return // an empty app may be left out: it works with zero configuration
			}
			if expect := normalize(t, tc.expect); !reflect.DeepEqual(got, expect) {
				t.Errorf("Test %d: apps.wappchat =\n%s\nexpected\n%s", i, pretty(got), pretty(expect))
			}
			raw, _ := json.Marshal(got)
			var app App
			if err := caddy.StrictUnmarshalJSON(raw, &app); err != nil {
				t.Errorf("Test %d: apps.wappchat does not load into App: %v", i, err)
			}
			if strings.Contains(tc.name, "cache_ttl 0") && (app.CacheTTL == nil || *app.CacheTTL != 0) {
				t.Errorf("Test %d: cache_ttl 0 loads as %v: the 5s default would apply instead", i, app.CacheTTL)
			}
		})
	}

	// The whole config for one case, so nothing else is added or dropped.
	cfg, err := adapt(t, "{\n\twappchat {\n\t\tcache_ttl 2s\n\t}\n}\n:8080 {\n\twappchat_auth\n}\n")
	if err != nil {
		t.Fatal(err)
	}
	expect := normalize(t, `{"apps":{
		"wappchat":{"cache_ttl":2000000000},
		"http":{"servers":{"srv0":{"listen":[":8080"],"routes":[{"handle":[{"handler":"wappchat_auth"}]}]}}}}}`)
	if !reflect.DeepEqual(cfg, expect) {
		t.Errorf("adapted\n%s\nexpected\n%s", pretty(cfg), pretty(expect))
	}
}

func TestCaddyfileGlobalOptionErrors(t *testing.T) {
	for i, tc := range []struct {
		name  string
		block string
	}{
		{"unknown option", "{\n\t\tcache_tll 5s\n\t}"},
		{"argument on the option", "5s"},
		{"missing value", "{\n\t\tcache_ttl\n\t}"},
		{"extra args", "{\n\t\tcache_ttl 5s 6s\n\t}"},
		{"bad duration", "{\n\t\tcache_ttl soon\n\t}"},
		{"negative ttl", "{\n\t\tcache_ttl -5s\n\t}"},
		{"bad size", "{\n\t\tcache_size many\n\t}"},
		{"zero size", "{\n\t\tcache_size 0\n\t}"},
		{"negative size", "{\n\t\tcache_size -1\n\t}"},
		{"fractional size", "{\n\t\tcache_size 1.5\n\t}"},
		{"bad negative_cache_size", "{\n\t\tnegative_cache_size x\n\t}"},
		{"zero negative_cache_size", "{\n\t\tnegative_cache_size 0\n\t}"},
		{"extra args on size", "{\n\t\tnegative_cache_size 1 2\n\t}"},
		{"zero replay_capacity", "{\n\t\treplay_capacity 0\n\t}"},
		{"missing secrets_key", "{\n\t\tsecrets_key\n\t}"},
		{"unknown store module", "{\n\t\tstore nosuchstore\n\t}"},
		{"store without module", "{\n\t\tstore\n\t}"},
		{"redis unknown option", "{\n\t\tstore redis {\n\t\t\tport 1\n\t\t}\n\t}"},
		{"redis bad db", "{\n\t\tstore redis {\n\t\t\tdb -1\n\t\t}\n\t}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := adapt(t, "{\n\twappchat "+tc.block+"\n}\n:8080 {\n\twappchat_auth\n}\n")
			if err == nil {
				t.Errorf("Test %d: expected an adapt error, got\n%s", i, pretty(dig(cfg, "apps", "wappchat")))
			}
		})
	}
}
