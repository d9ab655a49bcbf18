package integration

// Issue 4: replay protection, and secrets that rotate without downtime.

import (
	"bytes"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// The same signed request twice: the second is 401 signature_replayed and the
// upstream sees it once. A request is claimed only after its signature
// verifies: a forgery with the same timestamp and signature claims nothing.
func TestReplay(t *testing.T) {
	s := start(t, config{})
	k := s.createKey(t, "tenant-replay", "--signing")

	req := signed(k, fresh("replay"))
	forgery := request{header: req.header, body: variant("forged body, same signature")}
	s.reject(t, forgery, 401, "signature_mismatch")
	s.accept(t, req)
	message := s.rejectReplayed(t, req)
	if !strings.Contains(message, "sign") || !strings.Contains(message, "new timestamp") {
		t.Errorf("the replay message %q does not tell the client to sign again with a new timestamp", message)
	}
	s.rejectReplayed(t, req) // and again: a refused replay does not free the claim
	// The same request as Bearer is the same claim.
	bearer := request{header: req.header.Clone(), body: req.body}
	bearer.header.Del("X-Wappchat-Key")
	bearer.header.Set("Authorization", "Bearer "+k.Key)
	s.rejectReplayed(t, bearer)

	count := 0
	for _, r := range s.upstreamRequests(t) {
		if bytes.Equal(r.body(), req.body) {
			count++
		}
	}
	if count != 1 {
		t.Errorf("the upstream saw the signed request %d times, want 1", count)
	}
	// Signing again with the same timestamp but another body is another request.
	s.accept(t, signed(k, fresh("replay")))
}

// The seed's Node example, run twice with fresh timestamps: both reach the upstream.
func TestSeedExampleTwice(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node is needed to run this test: %v", err)
	}
	s := start(t, config{})
	k := s.createKey(t, "tenant-seed", "--signing")
	script := seedExample(t, s.url, k)
	var timestamps []string
	for run := 1; run <= 2; run++ {
		if run == 2 {
			// The example signs unix seconds: a new second is a new timestamp.
			first := timestamps[0]
			poll(t, "the clock to reach a new second", func() bool { return now() > first })
		}
		before := len(s.upstreamRequests(t))
		out, err := exec.Command("node", script).CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) != 0 {
			t.Fatalf("node run %d: %v, printed %q", run, err, out)
		}
		got := s.upstreamRequests(t)
		if len(got) != before+1 {
			t.Fatalf("run %d of the seed example: the upstream got %d requests, want 1 (rejections: %v)", run, len(got)-before, s.handlerLog(t, "rejected"))
		}
		last := got[len(got)-1]
		if string(last.body()) != seedBody {
			t.Errorf("run %d: the upstream got %q", run, last.body())
		}
		expectIdentity(t, last, "X-Tenant-ID", k.Tenant, "X-WappChat-Key-ID", k.ID)
		timestamps = append(timestamps, strings.Join(last.header("X-Wappchat-Timestamp"), ","))
	}
	if timestamps[0] == timestamps[1] {
		t.Errorf("both runs signed timestamp %s", timestamps[0])
	}
}

// `replay off` lets the same signed request through twice.
func TestReplayOff(t *testing.T) {
	s := start(t, config{Auth: append(slices.Clone(exampleAuth), "replay off")})
	k := s.createKey(t, "tenant-replay-off", "--signing")
	req := signed(k, fresh("replay off"))
	first, second := s.accept(t, req), s.accept(t, req)
	if !bytes.Equal(first.body(), req.body) || !bytes.Equal(second.body(), req.body) {
		t.Errorf("the upstream got %q and %q", first.body(), second.body())
	}
	// A replay of a forged signature is still refused: only the claim is off.
	s.reject(t, request{header: req.header, body: variant("forged")}, 401, "signature_mismatch")
}

// rotate-secret through the CLI while the server runs: with a short grace the
// old and the new secret both verify, then only the new one; --grace 0 retires
// the old one at once. The records show the live secrets' dates, never values.
func TestRotateSecretCLI(t *testing.T) {
	s := start(t, config{CacheTTL: "1h"})
	k := s.createKey(t, "tenant-rotate", "--signing")
	s.accept(t, signed(k, fresh("before rotation"))) // cached for an hour

	const grace = 5 * time.Second
	rotatedAt := time.Now()
	rec, res := s.cliJSON(t, "rotate-secret", k.ID, "--grace", "5s")
	expectVia(t, "rotate-secret", res, viaAdmin)
	s.remember(k.Key, rec.Secret)
	if rec.Secret == "" || rec.Secret == k.Secret || !strings.HasPrefix(rec.Secret, "wchat_secret_") || rec.Key != "" || strings.Contains(res.stdout, k.Secret) {
		t.Fatalf("rotate-secret --json printed %s", res.stdout)
	}
	old, renewed := k, k
	renewed.Secret = rec.Secret
	expectLiveSecrets(t, "rotate-secret --json", rec, 2, rotatedAt.Add(grace))

	// Inside the grace: both verify.
	s.accept(t, signed(old, fresh("old secret in grace")))
	s.accept(t, signed(renewed, fresh("new secret")))
	if time.Now().After(rotatedAt.Add(grace)) {
		t.Fatalf("the checks inside the grace took longer than the grace itself (%v): rerun on a less loaded machine", grace)
	}
	listed, _ := s.listJSON(t, "--tenant", k.Tenant)
	if len(listed) != 1 {
		t.Fatalf("list --tenant %s: %d records", k.Tenant, len(listed))
	}
	expectLiveSecrets(t, "list --json inside the grace", listed[0], 2, rotatedAt.Add(grace))

	// After the grace: only the new one.
	poll(t, "the old secret to retire", func() bool {
		return s.send(t, signed(old, fresh("old secret after grace"))).status == http.StatusUnauthorized
	})
	s.reject(t, signed(old, fresh("old secret after grace")), 401, "signature_mismatch")
	s.accept(t, signed(renewed, fresh("new secret after grace")))
	listed, _ = s.listJSON(t, "--tenant", k.Tenant)
	expectLiveSecrets(t, "list --json after the grace", listed[0], 1, time.Time{})

	// --grace 0: the previous secret is refused on the very next request.
	rec, res = s.cliJSON(t, "rotate-secret", k.ID, "--grace", "0")
	s.remember(k.Key, rec.Secret)
	newest := k
	newest.Secret = rec.Secret
	expectLiveSecrets(t, "rotate-secret --grace 0", rec, 1, time.Time{})
	s.reject(t, signed(renewed, fresh("retired at once")), 401, "signature_mismatch")
	s.accept(t, signed(newest, fresh("newest")))

	// rotate-secret of a key without a secret, or of an unknown id, fails and writes nothing.
	plain := s.createKey(t, "tenant-rotate")
	for _, args := range [][]string{{"rotate-secret", plain.ID}, {"rotate-secret", unknownID}, {"rotate-secret", k.ID, "--grace", "soon"}} {
		before := s.storageFiles(t)
		if res := s.cli(t, args...); res.code == 0 || strings.TrimSpace(res.stderr) == "" {
			t.Errorf("%v: exit %d, stderr %q; want a failure with a message", args, res.code, res.stderr)
		}
		if after := s.storageFiles(t); !slices.Equal(before, after) {
			t.Errorf("%v changed the storage", args)
		}
	}
	s.accept(t, unsigned(plain, event))
	s.accept(t, signed(newest, fresh("newest still")))
}

// expectLiveSecrets checks the secrets a record shows: n live ones, every one
// but the newest ending at retire (zero: none ends), and no values.
func expectLiveSecrets(t *testing.T, what string, rec keyRecord, n int, retire time.Time) {
	t.Helper()
	if len(rec.Secrets) != n || !rec.Signing {
		t.Errorf("%s shows %d live secrets (signing %v), want %d: %+v", what, len(rec.Secrets), rec.Signing, n, rec.Secrets)
		return
	}
	for i, s := range rec.Secrets {
		newest := i == len(rec.Secrets)-1
		switch {
		case newest && s.ExpiresAt != nil:
			t.Errorf("%s: the newest secret ends at %v, want no end", what, s.ExpiresAt)
		case !newest && s.ExpiresAt == nil:
			t.Errorf("%s: secret %d has no end, want the end of the grace", what, i)
		case !newest && (s.ExpiresAt.Before(retire.Add(-3*time.Second)) || s.ExpiresAt.After(retire.Add(3*time.Second))):
			t.Errorf("%s: secret %d ends at %v, want about %v", what, i, s.ExpiresAt, retire)
		}
	}
}

// rotate-secret and enable-signing through the admin API, and enable-signing
// through the CLI: a key that gets a secret must sign from the next request on.
func TestRotateAndEnableSigningAPI(t *testing.T) {
	s := start(t, config{CacheTTL: "1h"})
	k := s.apiCreate(t, `{"tenant":"tenant-api-rotate","signing":true}`).issued()
	s.accept(t, signed(k, fresh("before")))

	resp := s.adminDo(t, "POST", "/wappchat/keys/"+k.ID+"/rotate-secret", `{"grace":"1h"}`)
	if resp.status != 200 {
		t.Fatalf("POST rotate-secret: status %d: %s", resp.status, resp.body)
	}
	rec := decodeRecordWithSecret(t, "POST rotate-secret", resp.body)
	s.remember(k.Key, rec.Secret)
	if rec.ID != k.ID || rec.Secret == "" || rec.Secret == k.Secret || rec.Key != "" {
		t.Fatalf("POST rotate-secret answered %s", resp.body)
	}
	expectLiveSecrets(t, "POST rotate-secret", rec, 2, time.Now().Add(time.Hour))
	renewed := k
	renewed.Secret = rec.Secret
	s.accept(t, signed(k, fresh("old, within an hour's grace")))
	s.accept(t, signed(renewed, fresh("new")))
	one := decodeRecord(t, "GET after rotate", s.adminDo(t, "GET", "/wappchat/keys/"+k.ID, "").body)
	expectLiveSecrets(t, "GET after rotate", one, 2, time.Now().Add(time.Hour))

	// With no body, the grace is the default 24h.
	resp = s.adminDo(t, "POST", "/wappchat/keys/"+k.ID+"/rotate-secret", "")
	if resp.status != 200 {
		t.Fatalf("POST rotate-secret without a body: status %d: %s", resp.status, resp.body)
	}
	third := decodeRecordWithSecret(t, "POST rotate-secret", resp.body)
	s.remember(k.Key, third.Secret)
	if len(third.Secrets) != 3 {
		t.Errorf("after a second rotation, %d live secrets, want 3 (two in their grace)", len(third.Secrets))
	}
	s.accept(t, signed(renewed, fresh("second secret in the default grace")))

	// Refusals: JSON with a code, nothing written.
	plain := s.apiCreate(t, `{"tenant":"tenant-api-rotate"}`).issued()
	before := s.storageFiles(t)
	beforeList := s.adminDo(t, "GET", "/wappchat/keys?all=1", "").body
	refusals := []struct {
		path, body string
		status     int
		code       string
	}{
		{"/wappchat/keys/" + plain.ID + "/rotate-secret", `{"grace":"1h"}`, 409, "signing_conflict"},
		{"/wappchat/keys/" + k.ID + "/enable-signing", ``, 409, "signing_conflict"},
		{"/wappchat/keys/" + unknownID + "/rotate-secret", `{"grace":"1h"}`, 404, "key_not_found"},
		{"/wappchat/keys/" + unknownID + "/enable-signing", ``, 404, "key_not_found"},
		{"/wappchat/keys/" + k.ID + "/rotate-secret", `{"grace":"1h","secret":"mine"}`, 400, "invalid_json"},
		{"/wappchat/keys/" + k.ID + "/rotate-secret", `{"grace":`, 400, "invalid_json"},
		{"/wappchat/keys/" + k.ID + "/rotate-secret", `{"grace":"soon"}`, 400, "invalid_request"},
		{"/wappchat/keys/" + k.ID + "/rotate-secret", `{"grace":"-1h"}`, 400, "invalid_request"},
	}
	for _, tc := range refusals {
		expectAPIError(t, "POST "+tc.path+" "+tc.body, s.adminDo(t, "POST", tc.path, tc.body), tc.status, tc.code)
	}
	if after := s.storageFiles(t); !slices.Equal(before, after) {
		t.Errorf("refused requests changed the storage from %q to %q", before, after)
	}
	if after := s.adminDo(t, "GET", "/wappchat/keys?all=1", "").body; !bytes.Equal(after, beforeList) {
		t.Errorf("refused requests changed the records from %s to %s", beforeList, after)
	}

	// enable-signing through the admin API: unsigned refused from the very next request.
	s.accept(t, unsigned(plain, event)) // cached for an hour
	resp = s.adminDo(t, "POST", "/wappchat/keys/"+plain.ID+"/enable-signing", "")
	if resp.status != 200 {
		t.Fatalf("POST enable-signing: status %d: %s", resp.status, resp.body)
	}
	enabled := decodeRecordWithSecret(t, "POST enable-signing", resp.body)
	s.remember(plain.Key, enabled.Secret)
	expectLiveSecrets(t, "POST enable-signing", enabled, 1, time.Time{})
	s.reject(t, unsigned(plain, payload), 401, "signature_required")
	plain.Secret = enabled.Secret
	s.accept(t, signed(plain, fresh("now signing")))

	// enable-signing through the CLI.
	viaCLI := s.createKey(t, "tenant-cli-enable")
	s.accept(t, unsigned(viaCLI, event))
	cliRec, res := s.cliJSON(t, "enable-signing", viaCLI.ID)
	expectVia(t, "enable-signing", res, viaAdmin)
	s.remember(viaCLI.Key, cliRec.Secret)
	if !strings.HasPrefix(cliRec.Secret, "wchat_secret_") {
		t.Fatalf("enable-signing --json printed %s", res.stdout)
	}
	expectLiveSecrets(t, "enable-signing --json", cliRec, 1, time.Time{})
	s.reject(t, unsigned(viaCLI, payload), 401, "signature_required")
	s.reject(t, signed(viaCLI, payload), 401, "signature_mismatch") // viaCLI.Secret is still empty
	viaCLI.Secret = cliRec.Secret
	s.accept(t, signed(viaCLI, fresh("cli signing")))
	if res := s.cli(t, "enable-signing", viaCLI.ID); res.code == 0 {
		t.Errorf("enable-signing of a key that signs: exit 0, want a refusal\n%s", res.stdout)
	}
	listed, _ := s.listJSON(t, "--tenant", viaCLI.Tenant)
	if len(listed) != 1 {
		t.Fatalf("list: %d records", len(listed))
	}
	expectLiveSecrets(t, "list after enable-signing", listed[0], 1, time.Time{})
}

// decodeRecordWithSecret reads a record that carries a new secret once.
func decodeRecordWithSecret(t *testing.T, what string, b []byte) keyRecord {
	t.Helper()
	rec := decodeRecord(t, what, b)
	if !strings.HasPrefix(rec.Secret, "wchat_secret_") {
		t.Fatalf("%s: no new secret in %s", what, b)
	}
	return rec
}

// A claim store full of live claims refuses new signed requests with 503
// replay_capacity (fail closed), logs it and counts it; unsigned requests are
// not affected; once the claims' window has passed, signed requests pass again.
func TestReplayCapacity(t *testing.T) {
	auth := slices.Clone(exampleAuth)
	auth[3] = "tolerance 1s"
	s := start(t, config{App: []string{"replay_capacity 2"}, Auth: auth})
	k := s.createKey(t, "tenant-capacity", "--signing")
	p := s.createKey(t, "tenant-capacity")
	s.accept(t, signed(k, fresh("capacity")))
	s.accept(t, signed(k, fresh("capacity")))
	s.reject(t, signed(k, fresh("capacity")), http.StatusServiceUnavailable, "replay_capacity")
	s.accept(t, unsigned(p, event))
	full := 0
	for _, e := range s.debugLog(t) {
		if e.str("level") == "error" && e.str("logger") == "http.handlers.wappchat_auth" && strings.Contains(e.str("msg"), "replay claim store is full") {
			full++
		}
	}
	if full == 0 {
		t.Errorf("no error log entry for the full claim store")
	}
	var refused float64
	for _, smp := range findSamples(s.metrics(t), "caddy_wappchat_requests_total", map[string]string{"code": "replay_capacity"}) {
		refused += smp.value
	}
	if refused != 1 {
		t.Errorf("caddy_wappchat_requests_total{code=\"replay_capacity\"} is %v, want 1", refused)
	}
	// The two claims expire with their 1s window; a new signed request then fits.
	poll(t, "the claims to expire", func() bool {
		resp := s.send(t, signed(k, fresh("capacity")))
		if resp.status != http.StatusOK && resp.status != http.StatusServiceUnavailable {
			t.Fatalf("a signed request got %d %s; want 200 or 503", resp.status, resp.body)
		}
		return resp.status == http.StatusOK
	})
}
