// Package caddywappchatauth is what xcaddy builds into Caddy: importing it
// registers the wappchat app, the wappchat_auth handler and directive, and the
// wappchat-keys command.
package caddywappchatauth

import _ "github.com/wappchat/caddy-wappchat-auth/caddymodule"
