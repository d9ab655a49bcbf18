package integration

import (
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Revocation through the CLI reaches a running sidecar within cache_ttl, and
// survives a restart.
func TestRevocation(t *testing.T) {
	for _, cacheTTL := range []string{"0", "1s"} {
		t.Run("cache_ttl "+cacheTTL, func(t *testing.T) {
			s := start(t, config{CacheTTL: cacheTTL})
			k := s.createKey(t, "tenant-revoked")
			s.accept(t, unsigned(k, event)) // now cached for cache_ttl
			s.revoke(t, k.ID)
			if cacheTTL != "0" {
				poll(t, "the revocation to pass the cache", func() bool {
					return s.send(t, unsigned(k, event)).status == http.StatusUnauthorized
				})
			}
			s.reject(t, unsigned(k, payload), 401, "key_revoked")
			s.restart(t)
			s.reject(t, unsigned(k, payload), 401, "key_revoked")
		})
	}
}

// create, list, revoke: raw keys and secrets are printed by create only.
func TestKeyCommands(t *testing.T) {
	s := start(t, config{})
	text := s.cli(t, "create", "--tenant", "tenant-a", "--name", "CRM", "--signing")
	if text.code != 0 {
		t.Fatalf("create: exit %d\n%s", text.code, text.stderr)
	}
	printed := regexp.MustCompile(`(?m)^Key (key_[0-9a-f]+) for tenant tenant-a stored\.\nKey \(shown only now\): +(wchat_live_[A-Za-z0-9_-]{43,})\nSecret \(shown only now\): +(\S+)\n$`).FindStringSubmatch(text.stdout)
	if printed == nil {
		t.Fatalf("create printed:\n%s", text.stdout)
	}
	fromText := issuedKey{ID: printed[1], Key: printed[2], Secret: printed[3], Tenant: "tenant-a"}
	s.remember(fromText.Key, fromText.Secret)
	got := s.accept(t, signed(fromText, event))
	expectIdentity(t, got, "X-Tenant-ID", "tenant-a", "X-WappChat-Key-ID", fromText.ID)

	a := s.createKey(t, "tenant-a", "--name", "Zapier")
	b := s.createKey(t, "tenant-b", "--signing", "--expires", "30d")
	if !strings.HasPrefix(b.Key, "wchat_live_") || !strings.HasPrefix(b.Secret, "wchat_secret_") || a.Name != "Zapier" || a.Secret != "" {
		t.Errorf("create --json printed unexpected keys: %+v %+v", a, b)
	}
	s.revoke(t, a.ID)
	if files := s.storageFiles(t); len(files) != 7 || !slices.Contains(files, "wappchat/keys/"+a.SHA256+".json") || !slices.Contains(files, "wappchat/ids/"+a.ID) || !slices.Contains(files, "wappchat/store.json") {
		t.Errorf("storage holds %q, want one record and one id index per key, and the store marker", files)
	}

	lists := []struct {
		args []string
		ids  []string
	}{
		{[]string{"list"}, []string{fromText.ID, b.ID}},
		{[]string{"list", "--all"}, []string{fromText.ID, a.ID, b.ID}},
		{[]string{"list", "--tenant", "tenant-a"}, []string{fromText.ID}},
		{[]string{"list", "--tenant", "tenant-a", "--all"}, []string{fromText.ID, a.ID}},
	}
	for _, tc := range lists {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			for _, asJSON := range []bool{false, true} {
				args := tc.args
				if asJSON {
					args = append(slices.Clone(args), "--json")
				}
				res := s.cli(t, args...)
				if res.code != 0 {
					t.Fatalf("%v: exit %d\n%s", args, res.code, res.stderr)
				}
				for _, c := range s.issued {
					if strings.Contains(res.stdout, c.value) {
						t.Errorf("%v printed a raw %s", args, c.kind)
					}
				}
				for _, id := range []string{fromText.ID, a.ID, b.ID} {
					if strings.Contains(res.stdout, id) != slices.Contains(tc.ids, id) {
						t.Errorf("%v: listing %s is %v, want %v\n%s", args, id, !slices.Contains(tc.ids, id), slices.Contains(tc.ids, id), res.stdout)
					}
				}
				if asJSON {
					var summaries []struct {
						ID string `json:"id"`
					}
					if err := json.Unmarshal([]byte(res.stdout), &summaries); err != nil || len(summaries) != len(tc.ids) {
						t.Errorf("%v printed %d summaries (%v), want %d", args, len(summaries), err, len(tc.ids))
					}
				}
			}
		})
	}
	if out := s.cli(t, "list", "--all").stdout; !regexp.MustCompile(a.ID + `.*revoked`).MatchString(out) {
		t.Errorf("list --all does not show %s as revoked:\n%s", a.ID, out)
	}
}

// import adopts keys a legacy system issued, by their SHA-256 alone, with or
// without an existing integration secret.
func TestImport(t *testing.T) {
	s := start(t, config{})
	imports := []struct {
		name   string
		sha256 func(key string) string
		secret string // "" for none
		stdin  bool   // pass the secret as --secret - on stdin
	}{
		{"lowercase sha256", sha256Hex, "", false},
		{"uppercase sha256", func(key string) string { return strings.ToUpper(sha256Hex(key)) }, "", false},
		{"with --secret", sha256Hex, "legacy-secret-3f9a1c7e5b2d4f6a8c0e", false},
		{"with --secret on stdin", sha256Hex, "legacy-secret-b7e2d9c4a1f6e3b8d5c2", true},
	}
	for i, tc := range imports {
		t.Run(tc.name, func(t *testing.T) {
			k := issuedKey{Key: "legacy-crm-key-" + strings.Repeat(string(rune('a'+i)), 24), Tenant: "tenant-legacy", Secret: tc.secret}
			s.remember(k.Key, k.Secret)
			args := []string{"import", "--tenant", k.Tenant, "--sha256", tc.sha256(k.Key), "--name", "legacy", "--json"}
			stdin := ""
			switch {
			case tc.stdin:
				args, stdin = append(args, "--secret", "-"), tc.secret+"\n"
			case tc.secret != "":
				args = append(args, "--secret", tc.secret)
			}
			res := s.cliWithInput(t, stdin, args...)
			if res.code != 0 {
				t.Fatalf("import: exit %d\n%s", res.code, res.stderr)
			}
			if strings.Contains(res.stdout, k.Key) || tc.secret != "" && strings.Contains(res.stdout, tc.secret) {
				t.Errorf("import printed the key or secret it was given:\n%s", res.stdout)
			}
			if err := json.Unmarshal([]byte(res.stdout), &k); err != nil || k.ID == "" {
				t.Fatalf("import --json printed %q: %v", res.stdout, err)
			}
			k.Secret = tc.secret
			if tc.secret == "" {
				expectIdentity(t, s.accept(t, unsigned(k, event)), "X-Tenant-ID", k.Tenant, "X-WappChat-Key-ID", k.ID)
				return
			}
			s.reject(t, unsigned(k, payload), 401, "signature_required")
			expectIdentity(t, s.accept(t, signed(k, event)), "X-Tenant-ID", k.Tenant, "X-WappChat-Key-ID", k.ID)
		})
	}
}

// Bad arguments: a message, a non-zero exit, and nothing written.
func TestKeyCommandsRefuseBadArguments(t *testing.T) {
	s := start(t, config{})
	k := s.createKey(t, "tenant-a")
	valid := sha256Hex("some-legacy-key")
	bad := []struct {
		name  string
		args  []string
		stdin string
	}{
		{"create without --tenant", []string{"create"}, ""},
		{"create with an empty tenant", []string{"create", "--tenant", ""}, ""},
		{"create with a tenant that is no header value", []string{"create", "--tenant", "a b"}, ""},
		{"create with --expires soon", []string{"create", "--tenant", "t", "--expires", "soon"}, ""},
		{"create with a negative --expires", []string{"create", "--tenant", "t", "--expires", "-1h"}, ""},
		{"create with a zero --expires", []string{"create", "--tenant", "t", "--expires", "0s"}, ""},
		{"create with an unknown flag", []string{"create", "--tenant", "t", "--forever"}, ""},
		{"create with an argument", []string{"create", "--tenant", "t", "extra"}, ""},
		{"import without --sha256", []string{"import", "--tenant", "t"}, ""},
		{"import without --tenant", []string{"import", "--sha256", valid}, ""},
		{"import with a non-hex --sha256", []string{"import", "--tenant", "t", "--sha256", strings.Repeat("zz", 32)}, ""},
		{"import with 63 hex digits", []string{"import", "--tenant", "t", "--sha256", valid[:63]}, ""},
		{"import with a raw key as --sha256", []string{"import", "--tenant", "t", "--sha256", k.Key}, ""},
		{"import of a key already stored", []string{"import", "--tenant", "t", "--sha256", k.SHA256}, ""},
		{"import with --secret - and no stdin", []string{"import", "--tenant", "t", "--sha256", valid, "--secret", "-"}, ""},
		{"revoke an unknown id", []string{"revoke", "key_0123456789abcdef01234567"}, ""},
		{"revoke a malformed id", []string{"revoke", "../keys/" + k.SHA256}, ""},
		{"revoke without an id", []string{"revoke"}, ""},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			before := s.storageFiles(t)
			res := s.cliWithInput(t, tc.stdin, tc.args...)
			if res.code == 0 || strings.TrimSpace(res.stderr) == "" {
				t.Errorf("exit %d, stderr %q; want a message and a non-zero exit", res.code, res.stderr)
			}
			if after := s.storageFiles(t); !slices.Equal(before, after) {
				t.Errorf("storage changed from %q to %q", before, after)
			}
		})
	}
	expectIdentity(t, s.accept(t, unsigned(k, event)), "X-Tenant-ID", k.Tenant, "X-WappChat-Key-ID", k.ID)
}
