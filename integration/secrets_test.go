package integration

// Issue 4: secrets sealed at rest with secrets_key, refusal to start without
// the key, and reencrypt (from none to a key, from key A to key B, interrupted).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const secretsKeyLine = "secrets_key {env.WAPPCHAT_SECRETS_KEY}"

// sealedStart starts a sidecar whose wappchat app reads secrets_key from
// WAPPCHAT_SECRETS_KEY, set to key ("": no secrets_key in the config at all).
func sealedStart(t *testing.T, key string) *sidecar {
	t.Helper()
	cfg := config{}
	if key != "" {
		cfg = config{App: []string{secretsKeyLine}, Env: []string{"WAPPCHAT_SECRETS_KEY=" + key}}
	}
	s := start(t, cfg)
	if key != "" {
		s.rememberSecretsKeys(key)
	}
	return s
}

// useSecretsKey switches the Caddyfile and environment to secrets key key, or
// ("") to no secrets_key line at all; a secrets_key that resolves to nothing
// is refused, so "without" means without the line.
func (s *sidecar) useSecretsKey(t *testing.T, key string) {
	t.Helper()
	b, err := os.ReadFile(s.caddyfile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "\t\t"+secretsKeyLine+"\n", "", 1)
	if key != "" {
		cfg = strings.Replace(cfg, "\twappchat {\n", "\twappchat {\n\t\t"+secretsKeyLine+"\n", 1)
	}
	if err := os.WriteFile(s.caddyfile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s.setEnv("WAPPCHAT_SECRETS_KEY", key)
}

// sealing counts the stored secrets by how they are stored: the fingerprint
// they are sealed under, or "plain".
func (s *sidecar) sealing(t *testing.T) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for _, f := range s.storageFiles(t) {
		if !strings.HasPrefix(f, "wappchat/keys/") || !strings.HasSuffix(f, ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, "data", "caddy", f))
		if err != nil {
			t.Fatal(err)
		}
		var rec struct {
			Secrets []struct {
				Value  string `json:"value"`
				Sealed *struct {
					Key  string `json:"key"`
					Data string `json:"data"`
				} `json:"sealed"`
			} `json:"secrets"`
		}
		if err := json.Unmarshal(b, &rec); err != nil {
			t.Fatalf("record %s is not JSON: %v", f, err)
		}
		for _, sec := range rec.Secrets {
			switch {
			case sec.Sealed != nil && sec.Value == "" && sec.Sealed.Data != "":
				counts[sec.Sealed.Key]++
			case sec.Sealed == nil && sec.Value != "":
				counts["plain"]++
			default:
				t.Errorf("record %s has a secret stored neither sealed nor plain: %s", f, b)
			}
		}
	}
	return counts
}

// snapshot is every storage file's content.
func (s *sidecar) snapshot(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, f := range s.storageFiles(t) {
		b, err := os.ReadFile(filepath.Join(s.dir, "data", "caddy", f))
		if err != nil {
			t.Fatal(err)
		}
		out[f] = string(b)
	}
	return out
}

func sameSnapshot(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// sealedMessage is the README's refusal for records sealed under a key the sidecar lacks.
func expectSealedRefusal(t *testing.T, what, out, fingerprint string) {
	t.Helper()
	for _, want := range []string{
		"the key store holds secrets sealed under secrets key " + fingerprint,
		"which this sidecar does not have",
		"caddy wappchat-keys reencrypt --old-key",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("%s: output does not say %q:\n%s", what, want, out)
		}
	}
}

// expectWorks sends a signed (or, for keys without a secret, unsigned) request
// with every key, each of which must be accepted.
func (s *sidecar) expectWorks(t *testing.T, what string, keys []issuedKey) {
	t.Helper()
	before := len(s.upstreamRequests(t))
	for _, k := range keys {
		req := unsigned(k, event)
		if k.Secret != "" {
			req = signed(k, fresh(what))
		}
		if resp := s.send(t, req); resp.status != http.StatusOK {
			t.Errorf("%s: key %s got %d %s", what, k.ID, resp.status, resp.body)
		}
	}
	if got := len(s.upstreamRequests(t)) - before; got != len(keys) {
		t.Errorf("%s: the upstream got %d requests, want %d", what, got, len(keys))
	}
}

// With secrets_key, no secret (issued by create, the admin API, import or
// rotate-secret) is findable anywhere in the storage, records included; the
// secrets still verify, after a restart too.
func TestSecretsSealedAtRest(t *testing.T) {
	key := freshSecretsKey()
	s := sealedStart(t, key)
	a := s.createKey(t, "tenant-sealed", "--signing")
	b := s.apiCreate(t, `{"tenant":"tenant-sealed","signing":true}`).issued()
	legacy := issuedKey{Key: "legacy-sealed-key-" + randomHex(16), Secret: "legacy-secret-" + randomHex(16), Tenant: "tenant-sealed"}
	s.remember(legacy.Key, legacy.Secret)
	imp, res := s.cliJSON(t, "import", "--tenant", legacy.Tenant, "--sha256", sha256Hex(legacy.Key), "--secret", legacy.Secret)
	if strings.Contains(res.stdout, legacy.Secret) {
		t.Errorf("import printed the secret it was given")
	}
	legacy.ID = imp.ID
	rotated, _ := s.cliJSON(t, "rotate-secret", a.ID, "--grace", "1h")
	s.remember(a.Key, rotated.Secret)
	a2 := a
	a2.Secret = rotated.Secret
	plain := s.createKey(t, "tenant-sealed")
	keys := []issuedKey{a, a2, b, legacy, plain}
	secrets := []string{a.Secret, a2.Secret, b.Secret, legacy.Secret}

	marker := s.sealMarker(t)
	if len(marker) != 1 {
		t.Fatalf("secrets_keys.json lists %q, want the one configured key", marker)
	}
	s.expectSecretsNotStored(t, secrets...)
	if got := s.sealing(t); !maps1(got, marker[0], len(secrets)) {
		t.Errorf("stored secrets: %v, want all %d sealed under %s", got, len(secrets), marker[0])
	}
	s.expectWorks(t, "sealed", keys)
	for _, e := range s.debugLog(t) {
		if strings.Contains(e.str("msg"), "secrets_key is not set") {
			t.Errorf("a sidecar with secrets_key warns: %v", e)
		}
	}

	s.restart(t) // nothing cached: every secret is opened from the store
	s.expectWorks(t, "sealed, after a restart", keys)
	s.expectSecretsNotStored(t, secrets...)
}

// maps1 reports whether m is exactly {key: n}.
func maps1(m map[string]int, key string, n int) bool {
	return len(m) == 1 && m[key] == n
}

// Without secrets_key, secrets are stored as they are (the record is the one
// place), and the sidecar warns at start.
func TestNoSecretsKeyWarns(t *testing.T) {
	s := sealedStart(t, "") // secrets_key {env...} with the variable unset
	k := s.createKey(t, "tenant-unsealed", "--signing")
	if files := filesContaining(t, filepath.Join(s.dir, "data"), []byte(k.Secret)); !slices.Equal(files, []string{s.recordPath(k.SHA256)}) {
		t.Errorf("without secrets_key the secret is stored in %q, want its record only", files)
	}
	warned := false
	for _, e := range s.debugLog(t) {
		if e.str("level") == "warn" && strings.Contains(e.str("msg"), "secrets_key is not set") {
			warned = true
		}
	}
	if !warned {
		t.Errorf("no warning at start about secrets stored unencrypted")
	}
	s.accept(t, signed(k, event))
}

// Over sealed records, a sidecar without the key, or with another one, refuses
// to start with the README's message, as does the CLI; nothing is rewritten.
func TestSealedStoreRefusesWithoutTheKey(t *testing.T) {
	key := freshSecretsKey()
	s := sealedStart(t, key)
	k := s.createKey(t, "tenant-refuse", "--signing")
	s.accept(t, signed(k, event))
	marker := s.sealMarker(t)
	if len(marker) != 1 {
		t.Fatalf("secrets_keys.json lists %q", marker)
	}
	s.caddy.stop()
	stored := s.snapshot(t)

	wrong := freshSecretsKey()
	s.rememberSecretsKeys(wrong)
	for _, tc := range []struct{ name, key string }{{"without secrets_key", ""}, {"with another secrets_key", wrong}} {
		t.Run(tc.name, func(t *testing.T) {
			s.useSecretsKey(t, tc.key)
			expectSealedRefusal(t, "caddy run", s.startFails(t), marker[0])
			for _, args := range [][]string{{"list"}, {"create", "--tenant", "tenant-refuse", "--signing"}, {"revoke", k.ID}} {
				res := s.cli(t, args...)
				if res.code == 0 {
					t.Errorf("%v: exit 0, want a refusal\n%s", args, res.stdout)
				}
				expectSealedRefusal(t, fmt.Sprint(args), res.stderr, marker[0])
			}
			if !sameSnapshot(stored, s.snapshot(t)) {
				t.Errorf("the refused start or commands changed the storage")
			}
		})
	}
	s.useSecretsKey(t, key)
	s.startCaddy(t)
	s.accept(t, signed(k, fresh("right key again")))
}

// reencrypt moves every record from no key to key A, then from A to B with
// --old-key; every key works after each restart, and only the current key's
// sidecar starts.
func TestReencrypt(t *testing.T) {
	s := sealedStart(t, "")
	var keys []issuedKey
	for i := 0; i < 3; i++ {
		keys = append(keys, s.createKey(t, "tenant-reencrypt", "--signing"))
	}
	keys = append(keys, s.createKey(t, "tenant-reencrypt"))
	rotated, _ := s.cliJSON(t, "rotate-secret", keys[0].ID, "--grace", "1h")
	s.remember(keys[0].Key, rotated.Secret)
	again := keys[0]
	again.Secret = rotated.Secret
	keys = append(keys, again)
	revoked := s.createKey(t, "tenant-reencrypt", "--signing")
	s.revoke(t, revoked.ID)
	var secrets []string
	for _, k := range append(slices.Clone(keys), revoked) {
		if k.Secret != "" {
			secrets = append(secrets, k.Secret)
		}
	}
	if got := s.sealing(t); !maps1(got, "plain", len(secrets)) {
		t.Fatalf("before reencrypt: %v, want %d plain secrets", got, len(secrets))
	}
	s.expectWorks(t, "unsealed", keys)
	s.caddy.stop()

	// From none to A.
	keyA := freshSecretsKey()
	s.rememberSecretsKeys(keyA)
	s.useSecretsKey(t, keyA)
	for run := 1; run <= 2; run++ { // idempotent
		res := s.cli(t, "reencrypt")
		if res.code != 0 || !strings.Contains(res.stdout, "5 records rewritten") {
			t.Fatalf("reencrypt run %d: exit %d\n%s\n%s", run, res.code, res.stdout, res.stderr)
		}
	}
	fpA := s.sealMarker(t)
	if len(fpA) != 1 {
		t.Fatalf("after reencrypt to A, secrets_keys.json lists %q", fpA)
	}
	if got := s.sealing(t); !maps1(got, fpA[0], len(secrets)) {
		t.Errorf("after reencrypt to A: %v, want %d secrets sealed under %s", got, len(secrets), fpA[0])
	}
	s.expectSecretsNotStored(t, secrets...)
	s.startCaddy(t)
	s.expectWorks(t, "sealed under A", keys)
	s.reject(t, unsigned(revoked, payload), 401, "key_revoked")
	s.caddy.stop()

	// From A to B: without --old-key the CLI refuses and changes nothing.
	keyB := freshSecretsKey()
	s.rememberSecretsKeys(keyB)
	s.useSecretsKey(t, keyB)
	s.setEnv("OLD_WAPPCHAT_SECRETS_KEY", keyA)
	stored := s.snapshot(t)
	res := s.cli(t, "reencrypt")
	if res.code == 0 {
		t.Errorf("reencrypt to B without --old-key: exit 0\n%s", res.stdout)
	}
	expectSealedRefusal(t, "reencrypt without --old-key", res.stderr, fpA[0])
	if !sameSnapshot(stored, s.snapshot(t)) {
		t.Errorf("the refused reencrypt changed the storage")
	}
	res = s.cli(t, "reencrypt", "--old-key", "{env.OLD_WAPPCHAT_SECRETS_KEY}")
	if res.code != 0 || !strings.Contains(res.stdout, "5 records rewritten") {
		t.Fatalf("reencrypt --old-key: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	fpB := s.sealMarker(t)
	if len(fpB) != 1 || fpB[0] == fpA[0] {
		t.Fatalf("after reencrypt to B, secrets_keys.json lists %q (A was %s)", fpB, fpA[0])
	}
	if got := s.sealing(t); !maps1(got, fpB[0], len(secrets)) {
		t.Errorf("after reencrypt to B: %v, want %d secrets sealed under %s", got, len(secrets), fpB[0])
	}
	s.expectSecretsNotStored(t, secrets...)
	s.startCaddy(t)
	s.expectWorks(t, "sealed under B", keys)
	s.reject(t, unsigned(revoked, payload), 401, "key_revoked")
	s.caddy.stop()

	// A alone no longer opens the store.
	s.useSecretsKey(t, keyA)
	expectSealedRefusal(t, "caddy run with A after moving to B", s.startFails(t), fpB[0])
	s.useSecretsKey(t, keyB)
	s.startCaddy(t)
	s.expectWorks(t, "sealed under B, again", keys)
}

// reencrypt interrupted, then rerun: every key works. Three interruptions:
// the state a run leaves when stopped between records (built by hand, so it is
// certain to be half done), the same with certmagic's temporary file left by a
// kill during a record write, and a real kill -9 of a run over 300 records.
func TestReencryptInterrupted(t *testing.T) {
	t.Run("between records", func(t *testing.T) { testReencryptHalfDone(t, false) })
	t.Run("during a record write", func(t *testing.T) { testReencryptHalfDone(t, true) })
	t.Run("kill -9", testReencryptKilled)
}

// testReencryptHalfDone builds the state reencrypt from A to B leaves when it
// stops after half the records: those sealed under B, the others still under
// A, and both fingerprints listed.
func testReencryptHalfDone(t *testing.T, strayTempFile bool) {
	keyA, keyB := freshSecretsKey(), freshSecretsKey()
	s := sealedStart(t, keyA)
	s.rememberSecretsKeys(keyB)
	var keys []issuedKey
	for i := 0; i < 10; i++ {
		keys = append(keys, s.apiCreate(t, `{"tenant":"tenant-half","signing":true}`).issued())
	}
	fpA := s.sealMarker(t)
	s.caddy.stop()
	underA := map[string][]byte{}
	for _, k := range keys[:5] {
		b, err := os.ReadFile(s.recordPath(k.SHA256))
		if err != nil {
			t.Fatal(err)
		}
		underA[s.recordPath(k.SHA256)] = b
	}
	s.useSecretsKey(t, keyB)
	s.setEnv("OLD_WAPPCHAT_SECRETS_KEY", keyA)
	if res := s.cli(t, "reencrypt", "--old-key", "{env.OLD_WAPPCHAT_SECRETS_KEY}"); res.code != 0 {
		t.Fatalf("reencrypt: exit %d\n%s", res.code, res.stderr)
	}
	fpB := s.sealMarker(t)
	if len(fpA) != 1 || len(fpB) != 1 {
		t.Fatalf("markers %q and %q", fpA, fpB)
	}
	for path, b := range underA {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	marker, _ := json.Marshal([]string{fpA[0], fpB[0]})
	if err := os.WriteFile(filepath.Join(s.dir, "data", "caddy", "wappchat", "secrets_keys.json"), marker, 0o600); err != nil {
		t.Fatal(err)
	}
	if strayTempFile {
		// atomicfile writes a record to an os.CreateTemp file beside it, then renames it.
		if err := os.WriteFile(filepath.Join(s.dir, "data", "caddy", "wappchat", "keys", "2749164210"), []byte(`{"id":"key_`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.sealing(t); got[fpA[0]] != 5 || got[fpB[0]] != 5 || len(got) != 2 {
		t.Fatalf("the half-done state is %v", got)
	}

	// Until a rerun completes, a sidecar with B alone refuses to start.
	s.setEnv("OLD_WAPPCHAT_SECRETS_KEY", "")
	expectSealedRefusal(t, "caddy run with B over a half-done reencrypt", s.startFails(t), fpA[0])

	s.setEnv("OLD_WAPPCHAT_SECRETS_KEY", keyA)
	res := s.cli(t, "reencrypt", "--old-key", "{env.OLD_WAPPCHAT_SECRETS_KEY}")
	if res.code != 0 {
		t.Fatalf("rerun of reencrypt: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	if got := s.sealMarker(t); !slices.Equal(got, fpB) {
		t.Errorf("after the rerun, secrets_keys.json lists %q, want %q", got, fpB)
	}
	if got := s.sealing(t); !maps1(got, fpB[0], len(keys)) {
		t.Errorf("after the rerun: %v, want %d secrets sealed under %s", got, len(keys), fpB[0])
	}
	s.startCaddy(t)
	s.expectWorks(t, "after the rerun", keys)
	if listed, _ := s.listJSON(t); len(listed) != len(keys) {
		t.Errorf("list: %d records, want %d", len(listed), len(keys))
	}
}

// testReencryptKilled kills a real reencrypt from A to B over 300 records as
// soon as it has started rewriting, then reruns it.
func testReencryptKilled(t *testing.T) {
	keyA, keyB := freshSecretsKey(), freshSecretsKey()
	s := sealedStart(t, keyA)
	s.rememberSecretsKeys(keyB)
	var keys []issuedKey
	for i := 0; i < 300; i++ {
		keys = append(keys, s.apiCreate(t, fmt.Sprintf(`{"tenant":"tenant-kill-%d","signing":true}`, i%7)).issued())
	}
	fpA := s.sealMarker(t)
	s.caddy.stop()
	s.useSecretsKey(t, keyB)
	s.setEnv("OLD_WAPPCHAT_SECRETS_KEY", keyA)

	cmd := exec.Command(caddyBin, "wappchat-keys", "reencrypt", "--old-key", "{env.OLD_WAPPCHAT_SECRETS_KEY}", "--config", s.caddyfile)
	cmd.Env = s.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Kill it as soon as a record is sealed under the new key: rewriting has begun.
	deadline := time.Now().Add(waitLimit)
	var waitErr error
	done := false
	for !done && (len(s.sealMarker(t)) < 2 || len(s.sealing(t)) < 2) {
		select {
		case waitErr = <-exited:
			done = true
		default:
			if time.Now().After(deadline) {
				t.Fatalf("reencrypt neither started rewriting nor exited\n%s", out.String())
			}
			time.Sleep(time.Millisecond)
		}
	}
	if !done {
		_ = cmd.Process.Kill()
		waitErr = <-exited
	}
	state := s.sealing(t)
	var strays []string
	for _, f := range s.storageFiles(t) {
		if !strings.HasSuffix(f, ".json") && !strings.HasPrefix(f, "wappchat/ids/") {
			strays = append(strays, f)
		}
	}
	t.Logf("reencrypt stopped (%v) with secrets sealed %v; secrets_keys.json %q; other files %q", waitErr, state, s.sealMarker(t), strays)
	if state[fpA[0]] == 0 {
		t.Logf("the kill came after every record was rewritten: this run did not interrupt it midway")
	} else {
		expectSealedRefusal(t, "caddy run with B over a killed reencrypt", s.startFails(t), fpA[0])
	}

	res := s.cli(t, "reencrypt", "--old-key", "{env.OLD_WAPPCHAT_SECRETS_KEY}")
	if res.code != 0 || !strings.Contains(res.stdout, "300 records rewritten") {
		t.Fatalf("rerun of reencrypt: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	fpB := s.sealMarker(t)
	if got := s.sealing(t); len(fpB) != 1 || !maps1(got, fpB[0], len(keys)) {
		t.Errorf("after the rerun: %v, secrets_keys.json %q; want %d secrets sealed under the one key listed", got, fpB, len(keys))
	}
	s.setEnv("OLD_WAPPCHAT_SECRETS_KEY", "")
	s.startCaddy(t)
	s.expectWorks(t, "after the killed reencrypt's rerun", keys)
}
