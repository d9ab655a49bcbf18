package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("wappchat_auth", parseHandler)
	httpcaddyfile.RegisterDirectiveOrder("wappchat_auth", httpcaddyfile.Before, "basic_auth")
	httpcaddyfile.RegisterGlobalOption("wappchat", parseApp)
}

// parseHandler sets up the handler from Caddyfile tokens. Syntax:
//
//	wappchat_auth [<matcher>] {
//	    tenant_header <name>
//	    key_id_header <name>|off
//	    signatures    optional|required
//	    tolerance     <duration>
//	    max_body      <size>
//	    replay        on|off
//	}
func parseHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(Handler)
	return handler, handler.UnmarshalCaddyfile(h.Dispenser)
}

// UnmarshalCaddyfile implements caddyfile.Unmarshaler.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		option := d.Val()
		var value string
		if !d.Args(&value) || d.NextArg() {
			return d.ArgErr()
		}
		switch option {
		case "tenant_header":
			h.TenantHeader = value
		case "key_id_header":
			h.KeyIDHeader = value
		case "signatures":
			h.Signatures = value
		case "tolerance":
			dur, err := caddy.ParseDuration(value)
			if err != nil {
				return d.Errf("tolerance: %v", err)
			}
			h.Tolerance = caddy.Duration(dur)
		case "max_body":
			size, err := humanize.ParseBytes(value)
			if err != nil || size == 0 || size > 1<<40 {
				return d.Errf("max_body: %q is not a size such as 1MiB", value)
			}
			h.MaxBody = int64(size)
		case "replay":
			if value != "on" && value != "off" {
				return d.Errf("replay must be on or off, not %q", value)
			}
			h.ReplayOff = value == "off"
		default:
			return d.Errf("unrecognized wappchat_auth option %q", option)
		}
	}
	return nil
}

// parseApp sets up the wappchat app from the global options. Syntax:
//
//	wappchat {
//	    cache_ttl           <duration>
//	    cache_size          <n>
//	    negative_cache_size <n>
//	    replay_capacity     <n>
//	    secrets_key         <base64 32 bytes>
//	    store               redis { ... }
//	}
func parseApp(d *caddyfile.Dispenser, _ any) (any, error) {
	app := new(App)
	d.Next() // option name
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for d.NextBlock(0) {
		option := d.Val()
		var value string
		if !d.Args(&value) || (option != "store" && d.NextArg()) {
			return nil, d.ArgErr()
		}
		switch option {
		case "cache_ttl":
			dur, err := caddy.ParseDuration(value)
			if err != nil || dur < 0 {
				return nil, d.Errf("cache_ttl: %q is not a duration such as 5s", value)
			}
			ttl := caddy.Duration(dur)
			app.CacheTTL = &ttl
		case "cache_size", "negative_cache_size", "replay_capacity":
			n, err := strconv.Atoi(value)
			if err != nil || n <= 0 {
				return nil, d.Errf("%s: %q is not a positive number", option, value)
			}
			switch option {
			case "cache_size":
				app.CacheSize = n
			case "negative_cache_size":
				app.NegativeCacheSize = n
			case "replay_capacity":
				app.ReplayCapacity = n
			}
		case "secrets_key":
			app.SecretsKey = value
		case "store":
			unm, err := caddyfile.UnmarshalModule(d, "wappchat.stores."+value)
			if err != nil {
				return nil, err
			}
			app.StoreRaw = caddyconfig.JSONModuleObject(unm, "module", value, nil)
		default:
			return nil, d.Errf("unrecognized wappchat option %q", option)
		}
	}
	return httpcaddyfile.App{Name: "wappchat", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile reads the store's block. Syntax:
//
//	store redis {
//	    address     <host:port>...
//	    master_name <name>
//	    username    <name>
//	    password    <password>
//	    db          <n>
//	    tls
//	    prefix      <prefix>
//	}
func (r *Redis) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // module name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		option := d.Val()
		args := d.RemainingArgs()
		if option == "tls" {
			if len(args) != 0 {
				return d.ArgErr()
			}
			r.TLS = true
			continue
		}
		if option == "address" {
			if len(args) == 0 {
				return d.ArgErr()
			}
			r.Addresses = append(r.Addresses, args...)
			continue
		}
		if len(args) != 1 {
			return d.ArgErr()
		}
		switch option {
		case "master_name":
			r.MasterName = args[0]
		case "username":
			r.Username = args[0]
		case "password":
			r.Password = args[0]
		case "db":
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 0 {
				return d.Errf("db: %q is not a database number", args[0])
			}
			r.DB = n
		case "prefix":
			r.Prefix = args[0]
		default:
			return d.Errf("unrecognized redis store option %q", option)
		}
	}
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*Handler)(nil)
	_ caddyfile.Unmarshaler = (*Redis)(nil)
)
