package integration

// Issue 3: the admin API, the CLI following the running server, revocation
// that reaches the running cache, the audit trail and the metrics.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

const unknownID = "key_0123456789abcdef01234567"

// The admin API creates, lists, shows and revokes keys; writes reach the
// running instance's cache at once, even with cache_ttl 1h; refusals are JSON
// with a stable code and write nothing.
func TestAdminAPI(t *testing.T) {
	s := start(t, config{CacheTTL: "1h"})

	// POST: 201, the raw key (and secret) shown this once, and the key works on the next request.
	signer := s.apiCreate(t, `{"tenant":"tenant-admin","name":"CRM","signing":true}`)
	if signer.Tenant != "tenant-admin" || signer.Name != "CRM" || !strings.HasPrefix(signer.Key, "wchat_live_") ||
		!strings.HasPrefix(signer.Secret, "wchat_secret_") || signer.SHA256 != sha256Hex(signer.Key) || !signer.Signing ||
		len(signer.Secrets) != 1 || signer.Secrets[0].ExpiresAt != nil || signer.RevokedAt != nil || signer.ExpiresAt != nil {
		t.Errorf("POST /wappchat/keys with signing answered %+v", signer)
	}
	expectIdentity(t, s.accept(t, signed(signer.issued(), event)), "X-Tenant-ID", "tenant-admin", "X-WappChat-Key-ID", signer.ID)
	s.reject(t, unsigned(signer.issued(), payload), 401, "signature_required")

	plain := s.apiCreate(t, `{"tenant":"tenant-admin"}`)
	if plain.Secret != "" || plain.Signing || len(plain.Secrets) != 0 || plain.SHA256 != sha256Hex(plain.Key) {
		t.Errorf("POST /wappchat/keys without signing answered %+v", plain)
	}
	expectIdentity(t, s.accept(t, unsigned(plain.issued(), event)), "X-Tenant-ID", "tenant-admin", "X-WappChat-Key-ID", plain.ID)

	expiring := s.apiCreate(t, `{"tenant":"tenant-other","name":"temp","expires_in":"1h"}`)
	if expiring.ExpiresAt == nil || expiring.ExpiresAt.Before(time.Now().Add(50*time.Minute)) || expiring.ExpiresAt.After(time.Now().Add(70*time.Minute)) {
		t.Errorf("expires_in 1h gave expires_at %v", expiring.ExpiresAt)
	}
	s.accept(t, unsigned(expiring.issued(), event))

	// Import: a key refused (and so cached as unknown for 1h) works as soon as the API adopts it.
	legacy := issuedKey{Key: "legacy-admin-key-" + randomHex(16), Tenant: "tenant-legacy"}
	s.remember(legacy.Key, "")
	s.reject(t, unsigned(legacy, payload), 401, "invalid_key")
	imported := s.apiCreate(t, fmt.Sprintf(`{"tenant":"tenant-legacy","sha256":%q}`, sha256Hex(legacy.Key)))
	if imported.Key != "" || imported.SHA256 != sha256Hex(legacy.Key) {
		t.Errorf("importing by sha256 answered %+v", imported)
	}
	legacy.ID = imported.ID
	expectIdentity(t, s.accept(t, unsigned(legacy, event)), "X-Tenant-ID", "tenant-legacy", "X-WappChat-Key-ID", imported.ID)
	expectAPIError(t, "importing a hash already stored", s.adminDo(t, "POST", "/wappchat/keys", fmt.Sprintf(`{"tenant":"t","sha256":%q}`, plain.SHA256)), 409, "key_exists")

	// GET: lists and records, never a key or a secret.
	everyID := ids([]keyRecord{signer, plain, expiring, imported})
	lists := []struct {
		query string
		want  []string
	}{
		{"", everyID},
		{"?all=1", everyID},
		{"?tenant=tenant-admin", ids([]keyRecord{signer, plain})},
		{"?tenant=tenant-other", []string{expiring.ID}},
		{"?tenant=nobody", nil},
	}
	for _, tc := range lists {
		resp := s.adminDo(t, "GET", "/wappchat/keys"+tc.query, "")
		if resp.status != 200 {
			t.Errorf("GET /wappchat/keys%s: status %d: %s", tc.query, resp.status, resp.body)
			continue
		}
		if got := ids(decodeRecords(t, "GET /wappchat/keys"+tc.query, resp.body)); !slices.Equal(got, tc.want) {
			t.Errorf("GET /wappchat/keys%s listed %v, want %v", tc.query, got, tc.want)
		}
		s.expectNoCredential(t, "GET /wappchat/keys"+tc.query, resp.body)
	}
	one := s.adminDo(t, "GET", "/wappchat/keys/"+signer.ID, "")
	if one.status != 200 {
		t.Fatalf("GET /wappchat/keys/%s: status %d: %s", signer.ID, one.status, one.body)
	}
	got := decodeRecord(t, "GET /wappchat/keys/{id}", one.body)
	s.expectNoCredential(t, "GET /wappchat/keys/{id}", one.body)
	if got.ID != signer.ID || got.Tenant != signer.Tenant || got.Name != "CRM" || got.SHA256 != signer.SHA256 ||
		!got.CreatedAt.Equal(signer.CreatedAt) || !got.Signing || len(got.Secrets) != 1 || got.Key != "" || got.Secret != "" {
		t.Errorf("GET /wappchat/keys/%s answered %+v, want the record created", signer.ID, got)
	}
	expectAPIError(t, "GET of an unknown id", s.adminDo(t, "GET", "/wappchat/keys/"+unknownID, ""), 404, "key_not_found")

	// DELETE: revoked at once although both keys are cached for an hour; the records stay.
	for _, k := range []keyRecord{plain, signer} {
		resp := s.adminDo(t, "DELETE", "/wappchat/keys/"+k.ID, "")
		if resp.status != 200 {
			t.Fatalf("DELETE /wappchat/keys/%s: status %d: %s", k.ID, resp.status, resp.body)
		}
		if rec := decodeRecord(t, "DELETE answer", resp.body); rec.ID != k.ID || rec.RevokedAt == nil {
			t.Errorf("DELETE /wappchat/keys/%s answered %s, want the revoked record", k.ID, resp.body)
		}
	}
	s.reject(t, unsigned(plain.issued(), payload), 401, "key_revoked")
	s.reject(t, signed(signer.issued(), payload), 401, "key_revoked")
	for _, k := range []keyRecord{plain, signer} {
		resp := s.adminDo(t, "GET", "/wappchat/keys/"+k.ID, "")
		if rec := decodeRecord(t, "GET of a revoked key", resp.body); resp.status != 200 || rec.RevokedAt == nil {
			t.Errorf("GET /wappchat/keys/%s after DELETE: %d %s, want the record with revoked_at", k.ID, resp.status, resp.body)
		}
		if _, err := os.Stat(s.recordPath(k.SHA256)); err != nil {
			t.Errorf("the record of a revoked key is gone: %v", err)
		}
	}
	revokedLists := []struct {
		query string
		want  []string
	}{
		{"", ids([]keyRecord{expiring, imported})},
		{"?all=1", everyID},
		{"?tenant=tenant-admin", nil},
		{"?tenant=tenant-admin&all=1", ids([]keyRecord{signer, plain})},
	}
	for _, tc := range revokedLists {
		resp := s.adminDo(t, "GET", "/wappchat/keys"+tc.query, "")
		if got := ids(decodeRecords(t, "GET /wappchat/keys"+tc.query, resp.body)); resp.status != 200 || !slices.Equal(got, tc.want) {
			t.Errorf("after revoking, GET /wappchat/keys%s: %d, listed %v, want %v", tc.query, resp.status, got, tc.want)
		}
	}
	cliAll, _ := s.listJSON(t, "--all")
	if got := ids(cliAll); !slices.Equal(got, everyID) {
		t.Errorf("list --all --json listed %v, want %v", got, everyID)
	}
	expectAPIError(t, "DELETE of an unknown id", s.adminDo(t, "DELETE", "/wappchat/keys/"+unknownID, ""), 404, "key_not_found")

	// 400: bad JSON, unknown fields, empty tenant, ... and nothing written.
	filesBefore := s.storageFiles(t)
	listBefore := s.adminDo(t, "GET", "/wappchat/keys?all=1", "").body
	bad := []struct{ name, body, code string }{
		{"bad JSON", `{"tenant":`, "invalid_json"},
		{"not JSON", `tenant=acme`, "invalid_json"},
		{"an array", `["tenant-x"]`, "invalid_json"},
		{"two objects", `{"tenant":"tenant-x"}{"tenant":"tenant-y"}`, "invalid_json"},
		{"no body", ``, "invalid_json"},
		{"unknown field", `{"tenant":"tenant-x","colour":"red"}`, "invalid_json"},
		{"misspelt field", `{"tenant":"tenant-x","expires":"1h"}`, "invalid_json"},
		{"tenant not a string", `{"tenant":42}`, "invalid_json"},
		{"empty tenant", `{"tenant":""}`, "invalid_request"},
		{"no tenant", `{"name":"CRM","signing":true}`, "invalid_request"},
		{"tenant with a space", `{"tenant":"a b"}`, "invalid_request"},
		{"expires_in not a duration", `{"tenant":"tenant-x","expires_in":"soon"}`, "invalid_request"},
		{"negative expires_in", `{"tenant":"tenant-x","expires_in":"-1h"}`, "invalid_request"},
		{"sha256 not hex", `{"tenant":"tenant-x","sha256":"` + strings.Repeat("z", 64) + `"}`, "invalid_request"},
	}
	for _, tc := range bad {
		t.Run("POST "+tc.name, func(t *testing.T) {
			expectAPIError(t, "POST /wappchat/keys "+tc.body, s.adminDo(t, "POST", "/wappchat/keys", tc.body), 400, tc.code)
			if after := s.storageFiles(t); !slices.Equal(after, filesBefore) {
				t.Errorf("storage changed from %q to %q", filesBefore, after)
			}
			if after := s.adminDo(t, "GET", "/wappchat/keys?all=1", "").body; string(after) != string(listBefore) {
				t.Errorf("the list changed from %s to %s", listBefore, after)
			}
		})
	}

	// 405 for methods a resource does not have.
	for _, tc := range []struct{ method, path string }{
		{"PUT", "/wappchat/keys"},
		{"DELETE", "/wappchat/keys"},
		{"PATCH", "/wappchat/keys"},
		{"PUT", "/wappchat/keys/" + expiring.ID},
		{"PATCH", "/wappchat/keys/" + expiring.ID},
		{"POST", "/wappchat/keys/" + expiring.ID},
		{"GET", "/wappchat/keys/" + expiring.ID + "/rotate-secret"},
	} {
		expectAPIError(t, tc.method+" "+tc.path, s.adminDo(t, tc.method, tc.path, ""), 405, "method_not_allowed")
	}
	if after := s.storageFiles(t); !slices.Equal(after, filesBefore) {
		t.Errorf("refused requests changed the storage from %q to %q", filesBefore, after)
	}
	// The keys nobody revoked still work.
	s.accept(t, unsigned(expiring.issued(), event))
	s.accept(t, unsigned(legacy, event))
}

// expectNoCredential fails if b holds any raw key or secret issued so far.
func (s *sidecar) expectNoCredential(t *testing.T, what string, b []byte) {
	t.Helper()
	for _, c := range s.issued {
		if strings.Contains(string(b), c.value) {
			t.Errorf("%s shows a raw %s", what, c.kind)
		}
	}
}

// The CLI goes through the running server's admin API (so a revocation is
// refused on the very next request, cache_ttl 1h notwithstanding) and through
// the store only when no server answers; it says which, and either way shows
// the same records.
func TestCLIFollowsTheServer(t *testing.T) {
	s := start(t, config{CacheTTL: "1h"})
	admin := s.adminEndpoint(t)

	create := func(t *testing.T, via string, flags ...string) issuedKey {
		t.Helper()
		rec, res := s.cliJSON(t, append([]string{"create", "--tenant", "tenant-cli"}, flags...)...)
		expectVia(t, "create", res, via)
		s.remember(rec.Key, rec.Secret)
		if rec.Key == "" || rec.SHA256 != sha256Hex(rec.Key) {
			t.Fatalf("create printed %s", res.stdout)
		}
		return rec.issued()
	}
	k := create(t, viaAdmin)
	signer := create(t, viaAdmin, "--signing")
	other := create(t, viaAdmin)
	if res := s.cli(t, "list"); !strings.Contains(res.stderr, admin) {
		t.Errorf("list: stderr %q does not name the admin address %s", res.stderr, admin)
	}
	s.accept(t, unsigned(k, event)) // cached for an hour from now
	s.accept(t, signed(signer, event))
	s.accept(t, unsigned(other, event))

	res := s.cli(t, "revoke", k.ID)
	if res.code != 0 {
		t.Fatalf("revoke: exit %d\n%s", res.code, res.stderr)
	}
	expectVia(t, "revoke", res, viaAdmin)
	s.reject(t, unsigned(k, payload), 401, "key_revoked")
	s.accept(t, unsigned(other, event))

	listings := [][]string{{"--all"}, {}, {"--tenant", "tenant-cli"}, {"--tenant", "nobody", "--all"}}
	running := map[string]string{}
	for _, args := range listings {
		res := s.cli(t, append([]string{"list", "--json"}, args...)...)
		expectVia(t, fmt.Sprint("list ", args), res, viaAdmin)
		decodeRecords(t, "list --json", []byte(res.stdout))
		running[strings.Join(args, " ")] = res.stdout
	}
	allRunning := decodeRecords(t, "list --all", []byte(running["--all"]))
	if got, want := ids(allRunning), ids([]keyRecord{{ID: k.ID}, {ID: signer.ID}, {ID: other.ID}}); !slices.Equal(got, want) {
		t.Errorf("list --all through the admin API listed %v, want %v", got, want)
	}

	s.caddy.stop()
	for _, args := range listings {
		res := s.cli(t, append([]string{"list", "--json"}, args...)...)
		if res.code != 0 {
			t.Fatalf("list %v with the server stopped: exit %d\n%s", args, res.code, res.stderr)
		}
		expectVia(t, fmt.Sprint("list ", args, " with the server stopped"), res, viaStore)
		if want := running[strings.Join(args, " ")]; res.stdout != want {
			t.Errorf("list --json %v: the store directly gives\n%s\nthe admin API gave\n%s", args, res.stdout, want)
		}
	}
	res = s.cli(t, "revoke", other.ID)
	if res.code != 0 {
		t.Fatalf("revoke with the server stopped: exit %d\n%s", res.code, res.stderr)
	}
	expectVia(t, "revoke with the server stopped", res, viaStore)
	offline := create(t, viaStore, "--signing")

	s.startCaddy(t)
	s.reject(t, unsigned(k, payload), 401, "key_revoked")
	s.reject(t, unsigned(other, payload), 401, "key_revoked")
	s.accept(t, signed(offline, event))
	s.accept(t, signed(signer, fresh("after restart")))
	after, stderr := s.listJSON(t, "--all")
	if !strings.Contains(stderr, viaAdmin) || len(after) != 4 {
		t.Errorf("after the restart, list --all went %q and listed %d records, want the admin API and 4", stderr, len(after))
	}
}

// A revocation written to the store behind the running server's back (by
// hand, or by the CLI told of an admin address where nothing answers) is
// refused within cache_ttl.
func TestRevocationBehindTheServersBack(t *testing.T) {
	s := start(t, config{CacheTTL: "1s"})
	edited := s.createKey(t, "tenant-behind")
	bypassed := s.createKey(t, "tenant-behind")
	s.accept(t, unsigned(edited, event))
	s.accept(t, unsigned(bypassed, event))

	path := s.recordPath(edited.SHA256)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(raw, &rec); err != nil {
		t.Fatal(err)
	}
	rec["revoked_at"] = time.Now().UTC().Format(time.RFC3339Nano)
	raw, _ = json.Marshal(rec)
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	poll(t, "the hand-written revocation to pass the cache", func() bool {
		return s.send(t, unsigned(edited, event)).status == http.StatusUnauthorized
	})
	s.reject(t, unsigned(edited, payload), 401, "key_revoked")

	res := s.cli(t, "revoke", bypassed.ID, "--address", freeAddr(t))
	if res.code != 0 {
		t.Fatalf("revoke --address <closed port>: exit %d\n%s", res.code, res.stderr)
	}
	expectVia(t, "revoke --address <closed port>", res, viaStore)
	poll(t, "the store-only revocation to pass the cache", func() bool {
		return s.send(t, unsigned(bypassed, event)).status == http.StatusUnauthorized
	})
	s.reject(t, unsigned(bypassed, payload), 401, "key_revoked")
}

// One audit entry per decision: accepted (info) with key id, tenant and the
// event fields of a signed JSON object; rejected (warn) with the code, the
// client address and the key id when the key was known. Every logged key id
// stays listable. Rejections never reach Caddy's error log.
func TestAuditTrail(t *testing.T) {
	s := start(t, config{})
	k := s.createKey(t, "tenant-audit", "--signing")
	p := s.createKey(t, "tenant-audit-plain")
	r := s.createKey(t, "tenant-audit")
	s.revoke(t, r.ID)

	s.accept(t, signed(k, []byte(seedBody)))
	s.accept(t, unsigned(p, []byte(seedBody)))
	s.accept(t, signed(k, []byte(`["lead.created","my-crm"]`)))
	s.accept(t, signed(k, []byte(`{"amount":3,"event":"order.paid","source":{"name":"not a string"}}`)))
	wantAccepted := []struct {
		key                           issuedKey
		event, source, idempotencyKey string
	}{
		{k, "lead.created", "my-crm", "lead.created:lead_123"},
		{p, "", "", ""}, // unsigned: the body streams, unread
		{k, "", "", ""}, // not an object
		{k, "order.paid", "", ""},
	}

	unknown := "wchat_live_" + randomHex(20)
	s.reject(t, request{header: http.Header{"X-Wappchat-Key": {unknown}}, body: payload}, 401, "invalid_key")
	s.reject(t, request{body: payload}, 401, "missing_key")
	s.reject(t, unsigned(r, payload), 401, "key_revoked")
	forged := signed(k, event)
	forged.body = variant("forged")
	s.reject(t, forged, 401, "signature_mismatch")
	s.reject(t, unsigned(k, payload), 401, "signature_required")
	wantRejected := []struct {
		code string
		key  *issuedKey
	}{
		{"invalid_key", nil}, {"missing_key", nil}, {"key_revoked", &r}, {"signature_mismatch", &k}, {"signature_required", &k},
	}

	accepted := s.handlerLog(t, "accepted")
	if len(accepted) != len(wantAccepted) {
		t.Fatalf("%d accepted entries, want %d: %v", len(accepted), len(wantAccepted), accepted)
	}
	for i, want := range wantAccepted {
		e := accepted[i]
		fields := map[string]string{"level": "info", "key_id": want.key.ID, "tenant": want.key.Tenant,
			"event": want.event, "source": want.source, "idempotency_key": want.idempotencyKey}
		for name, value := range fields {
			if _, present := e[name]; e.str(name) != value || value == "" && present {
				t.Errorf("accepted entry %d has %s %v, want %q: %v", i, name, e[name], value, e)
			}
		}
	}
	rejected := s.handlerLog(t, "rejected")
	if len(rejected) != len(wantRejected) {
		t.Fatalf("%d rejected entries, want %d: %v", len(rejected), len(wantRejected), rejected)
	}
	for i, want := range wantRejected {
		e := rejected[i]
		if e.str("level") != "warn" || e.str("code") != want.code || !strings.HasPrefix(e.str("remote_addr"), "127.0.0.1:") {
			t.Errorf("rejected entry %d is %v, want a warn with code %s and remote_addr 127.0.0.1:port", i, e, want.code)
		}
		wantID, wantTenant := "", ""
		if want.key != nil {
			wantID, wantTenant = want.key.ID, want.key.Tenant
		}
		if _, present := e["key_id"]; e.str("key_id") != wantID || wantID == "" && present {
			t.Errorf("rejected entry %d (%s) has key_id %v, want %q", i, want.code, e["key_id"], wantID)
		}
		if _, present := e["tenant"]; e.str("tenant") != wantTenant || wantTenant == "" && present {
			t.Errorf("rejected entry %d (%s) has tenant %v, want %q", i, want.code, e["tenant"], wantTenant)
		}
	}

	// Every key id in the audit trail is attributable, the revoked one included.
	all, _ := s.listJSON(t, "--all")
	listed := ids(all)
	for _, e := range append(accepted, rejected...) {
		if id := e.str("key_id"); id != "" && !slices.Contains(listed, id) {
			t.Errorf("logged key id %s is not in list --all %v", id, listed)
		}
	}
	// Rejections return no handler error, so Caddy's error log has none of them.
	for _, e := range s.debugLog(t) {
		if strings.HasPrefix(e.str("logger"), "http.log.error") {
			t.Errorf("Caddy's error log has an entry: %v", e)
		}
	}
	s.remember(unknown, "")
}

// /metrics on the admin endpoint counts exactly the decisions made, by result
// and code, and times each of them with the body read excluded and included.
func TestMetrics(t *testing.T) {
	s := start(t, config{})
	k := s.createKey(t, "tenant-metrics", "--signing")
	p := s.createKey(t, "tenant-metrics")
	r := s.createKey(t, "tenant-metrics")
	s.revoke(t, r.ID)

	want := map[[2]string]float64{}
	accept := func(req request) { s.accept(t, req); want[[2]string{"accepted", "ok"}]++ }
	reject := func(req request, status int, code string) {
		s.reject(t, req, status, code)
		want[[2]string{"rejected", code}]++
	}
	accept(unsigned(p, event))
	accept(unsigned(p, event))
	replayed := signed(k, fresh("metrics"))
	accept(replayed)
	accept(signed(k, fresh("metrics")))
	accept(request{header: http.Header{"Authorization": {"Bearer " + p.Key}}, body: event})
	reject(request{body: payload}, 401, "missing_key")
	reject(request{header: http.Header{"X-Wappchat-Key": {"wchat_live_" + randomHex(20)}}, body: payload}, 401, "invalid_key")
	reject(request{header: http.Header{"X-Wappchat-Key": {"wchat_live_" + randomHex(20)}}, body: payload}, 401, "invalid_key")
	reject(unsigned(r, payload), 401, "key_revoked")
	reject(unsigned(k, payload), 401, "signature_required")
	s.rejectReplayed(t, replayed)
	want[[2]string{"rejected", "signature_replayed"}]++
	mismatch := signed(k, event)
	mismatch.body = variant("tampered")
	reject(mismatch, 401, "signature_mismatch")
	reject(request{header: http.Header{"X-Wappchat-Key": {p.Key}, "Authorization": {"Bearer " + k.Key}}, body: payload}, 400, "ambiguous_key")

	var decisions float64
	for _, n := range want {
		decisions += n
	}
	samples := s.metrics(t)
	got := map[[2]string]float64{}
	for _, smp := range findSamples(samples, "caddy_wappchat_requests_total", nil) {
		got[[2]string{smp.labels["result"], smp.labels["code"]}] += smp.value
	}
	for key, n := range want {
		if got[key] != n {
			t.Errorf("caddy_wappchat_requests_total{result=%q,code=%q} is %v, want %v", key[0], key[1], got[key], n)
		}
	}
	for key, n := range got {
		if _, ok := want[key]; !ok && n != 0 {
			t.Errorf("caddy_wappchat_requests_total{result=%q,code=%q} is %v, want no such requests", key[0], key[1], n)
		}
	}
	sums := map[string]float64{}
	for _, body := range []string{"excluded", "included"} {
		count := findSamples(samples, "caddy_wappchat_auth_duration_seconds_count", map[string]string{"body": body})
		inf := findSamples(samples, "caddy_wappchat_auth_duration_seconds_bucket", map[string]string{"body": body, "le": "+Inf"})
		sum := findSamples(samples, "caddy_wappchat_auth_duration_seconds_sum", map[string]string{"body": body})
		if len(count) != 1 || count[0].value != decisions || len(inf) != 1 || inf[0].value != decisions || len(sum) != 1 {
			t.Errorf("caddy_wappchat_auth_duration_seconds{body=%q}: count %v, +Inf bucket %v, sum %v; want %v decisions", body, count, inf, sum, decisions)
			continue
		}
		sums[body] = sum[0].value
	}
	if sums["excluded"] > sums["included"] {
		t.Errorf("time with the body read excluded (%v) exceeds the time with it included (%v)", sums["excluded"], sums["included"])
	}
	if t.Failed() {
		var lines []string
		for _, smp := range samples {
			if strings.HasPrefix(smp.name, "caddy_wappchat") {
				lines = append(lines, fmt.Sprint(smp))
			}
		}
		t.Logf("wappchat metrics:\n%s", strings.Join(lines, "\n"))
	}
}
