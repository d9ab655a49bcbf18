package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The issue bounds how long a revocation may take to reach another instance.
const revocationBound = time.Second

// Two sidecars sharing one Redis: keys, revocations and replay claims are
// shared, and concurrent writers on both lose nothing. Both cache records for
// an hour, so only Redis's change notices can explain what B learns from A.
func TestRedisSharedInstances(t *testing.T) {
	r := startRedis(t)
	sealing := redisSecretsKey(t)
	cfg := config{
		CacheTTL: "1h",
		App:      r.appConfig("secrets_key {env.WAPPCHAT_SECRETS_KEY}"),
		Env:      []string{"WAPPCHAT_SECRETS_KEY=" + sealing},
	}
	a, b := start(t, cfg), start(t, cfg)
	guardSecretsKey(sealing, a, b)
	r.checkLeaksAtEnd(t, true, a, b) // secrets are sealed: not even records hold them
	adminA := a.caddyfileAdmin(t)

	t.Run("a key created through A works on B at once", func(t *testing.T) {
		k := a.createKey(t, "tenant-shared") // the CLI, through A's admin API
		rememberEverywhere(k, b)
		expectIdentity(t, b.accept(t, unsigned(k, event)), "X-Tenant-ID", k.Tenant, "X-WappChat-Key-ID", k.ID)

		sk, err := createViaAdmin(adminA, map[string]any{"tenant": "tenant-shared", "signing": true})
		if err != nil {
			t.Fatal(err)
		}
		rememberEverywhere(sk, a, b)
		expectIdentity(t, b.accept(t, signed(sk, variant("created on A"))), "X-Tenant-ID", sk.Tenant, "X-WappChat-Key-ID", sk.ID)
	})

	t.Run("a key B refused as unknown works on B once A imports it", func(t *testing.T) {
		raw := newRawKey(t)
		a.remember(raw, "")
		b.remember(raw, "")
		b.reject(t, request{header: http.Header{"X-Wappchat-Key": {raw}}, body: payload}, 401, "invalid_key") // cached as unknown for 1h
		imported, err := createViaAdmin(adminA, map[string]any{"tenant": "tenant-imported", "sha256": sha256Hex(raw)})
		if err != nil {
			t.Fatal(err)
		}
		pollWithin(t, revocationBound, "B accepting the key A imported", func() bool {
			st, _ := b.statusOf(t, request{header: http.Header{"X-Wappchat-Key": {raw}}, body: event})
			return st == http.StatusOK
		})
		expectIdentity(t, b.accept(t, request{header: http.Header{"X-Wappchat-Key": {raw}}, body: event}),
			"X-Tenant-ID", "tenant-imported", "X-WappChat-Key-ID", imported.ID)
	})

	t.Run("a revocation through A is refused by B within a second", func(t *testing.T) {
		k := a.createKey(t, "tenant-revoked")
		rememberEverywhere(k, b)
		a.accept(t, unsigned(k, event))
		b.accept(t, unsigned(k, event)) // now cached by both for 1h
		a.revoke(t, k.ID)               // the CLI, through A's admin API
		pollWithin(t, revocationBound, "B refusing the key A revoked", func() bool {
			st, _ := b.statusOf(t, unsigned(k, event))
			return st == http.StatusUnauthorized
		})
		b.reject(t, unsigned(k, payload), 401, "key_revoked")
		a.reject(t, unsigned(k, payload), 401, "key_revoked")
	})

	t.Run("a signed request accepted by A is refused by B", func(t *testing.T) {
		k := a.createKey(t, "tenant-replay", "--signing")
		rememberEverywhere(k, b)
		req := signed(k, variant("replayed to B"))
		a.accept(t, req)
		bSaw := len(b.upstreamRequests(t))
		b.reject(t, req, 401, "signature_replayed")
		a.reject(t, req, 401, "signature_replayed")
		for _, got := range b.upstreamRequests(t)[bSaw:] {
			t.Errorf("B's upstream got a request after the replay: %s", got.body())
		}
		// B knows the key: it was the claim that refused the replay.
		b.accept(t, signed(k, variant("signed afresh for B")))
		// Claims expire with the window (tolerance 5m, plus the second they
		// were made in): Redis does not keep them forever.
		for key := range r.dump(t) {
			if strings.HasPrefix(key, redisPrefix+"claim:") {
				if ttl, _ := r.do(t, "TTL", key).(int64); ttl < 1 || ttl > 302 {
					t.Errorf("claim %s has TTL %d, want the rest of the 5m window", key, ttl)
				}
			}
		}
	})

	t.Run("the same signed request sent to both at once is accepted once", func(t *testing.T) {
		k := a.createKey(t, "tenant-race", "--signing")
		rememberEverywhere(k, b)
		upstreamBefore := len(a.upstreamRequests(t)) + len(b.upstreamRequests(t))
		const rounds = 20
		for i := range rounds {
			req := signed(k, variant("race "+strconv.Itoa(i)))
			var wg sync.WaitGroup
			statuses := make([]int, 2)
			codes := make([]string, 2)
			for j, s := range []*sidecar{a, b} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					statuses[j], codes[j] = postFrom(t, s.url, req)
				}()
			}
			wg.Wait()
			slices.Sort(statuses)
			if statuses[0] != 200 || statuses[1] != 401 || !slices.Contains(codes, "signature_replayed") {
				t.Errorf("round %d: statuses %v codes %q, want one 200 and one 401 signature_replayed", i, statuses, codes)
			}
		}
		if n := len(a.upstreamRequests(t)) + len(b.upstreamRequests(t)) - upstreamBefore; n != rounds {
			t.Errorf("the upstreams got %d requests for %d distinct signed requests", n, rounds)
		}
	})

	t.Run("concurrent creates and revokes on both leave exactly the expected records", func(t *testing.T) {
		testConcurrentWriters(t, r, a, b)
	})
}

func testConcurrentWriters(t *testing.T, r *redisServer, a, b *sidecar) {
	sidecars := []*sidecar{a, b}
	admins := []string{a.caddyfileAdmin(t), b.caddyfileAdmin(t)}
	tenants := []string{"tenant-c0", "tenant-c1", "tenant-c2", "tenant-c3"}
	before := a.listAllKeys(t)

	// Keys that exist and are cached by both before the burst; half of them
	// are revoked during it, ten of those from both instances at once.
	const preexisting = 40
	pre := make([]issuedKey, preexisting)
	var wg sync.WaitGroup
	for i := range pre {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if pre[i], err = createViaAdmin(admins[i%2], map[string]any{"tenant": tenants[i%4], "name": fmt.Sprintf("pre %d", i)}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, k := range pre {
		rememberEverywhere(k, a, b)
		for _, s := range sidecars {
			if st, code := s.statusOf(t, unsigned(k, event)); st != 200 {
				t.Fatalf("pre-existing key %s: status %d %s before the burst", k.ID, st, code)
			}
		}
	}

	// The burst: 200 creates split across A and B, every third key revoked
	// through the other instance as soon as it exists, and 20 revocations of
	// the cached keys, all at once.
	const creates = 200
	created := make([]issuedKey, creates)
	revoked := map[string]bool{} // id -> revoked, for every key of this subtest
	for i := range creates {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := createViaAdmin(admins[i%2], map[string]any{"tenant": tenants[i%4], "name": fmt.Sprintf("burst %d", i)})
			if err != nil {
				t.Error(err)
				return
			}
			created[i] = k
			if i%3 == 0 {
				if err := revokeViaAdmin(admins[(i+1)%2], k.ID); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	for j := range preexisting / 2 {
		for _, via := range []int{j % 2, (j + 1) % 2}[:1+countIf(j < 10)] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := revokeViaAdmin(admins[via], pre[j].ID); err != nil {
					t.Error(err)
				}
			}()
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for i, k := range pre {
		revoked[k.ID] = i < preexisting/2
	}
	for i, k := range created {
		rememberEverywhere(k, a, b)
		if _, dup := revoked[k.ID]; dup {
			t.Fatalf("two creates returned id %s", k.ID)
		}
		revoked[k.ID] = i%3 == 0
	}

	// The cached keys revoked from either instance are refused by both.
	pollWithin(t, revocationBound, "both instances refusing the cached keys revoked during the burst", func() bool {
		for _, k := range pre[:preexisting/2] {
			for _, s := range sidecars {
				if st, _ := s.statusOf(t, unsigned(k, event)); st != http.StatusUnauthorized {
					return false
				}
			}
		}
		return true
	})

	// Both instances list the same records: every one created, revoked exactly
	// the ones revoked.
	for _, s := range sidecars {
		got := map[string]bool{}
		for _, sum := range s.listAllKeys(t) {
			if _, dup := got[sum.ID]; dup {
				t.Errorf("%s listed twice", sum.ID)
			}
			got[sum.ID] = sum.RevokedAt != nil
		}
		for _, sum := range before {
			delete(got, sum.ID)
		}
		if len(got) != len(revoked) {
			t.Errorf("list --all --json shows %d records of the burst, want %d", len(got), len(revoked))
		}
		for id, want := range revoked {
			if is, ok := got[id]; !ok {
				t.Errorf("%s is missing from list --all --json", id)
			} else if is != want {
				t.Errorf("%s: revoked %v, want %v", id, is, want)
			}
		}
	}
	// Each tenant's listing holds exactly its keys.
	for ti, tenant := range tenants {
		res := b.cli(t, "list", "--tenant", tenant, "--all", "--json")
		var listed []keySummary
		if res.code != 0 || json.Unmarshal([]byte(res.stdout), &listed) != nil {
			t.Fatalf("list --tenant %s: exit %d\n%s", tenant, res.code, res.stderr)
		}
		want := 0
		for i := range pre {
			want += countIf(i%4 == ti)
		}
		for i := range created {
			want += countIf(i%4 == ti)
		}
		if len(listed) != want {
			t.Errorf("list --tenant %s shows %d keys, want %d", tenant, len(listed), want)
		}
		for _, sum := range listed {
			if sum.Tenant != tenant {
				t.Errorf("list --tenant %s shows %s of tenant %s", tenant, sum.ID, sum.Tenant)
			}
		}
	}
	if n := len(r.records(t)); n != len(before)+len(revoked) {
		t.Errorf("redis holds %d records, want %d", n, len(before)+len(revoked))
	}
	if n := r.do(t, "SCARD", redisPrefix+"ids"); n != int64(len(before)+len(revoked)) {
		t.Errorf("redis's id set has %v members, want %d", n, len(before)+len(revoked))
	}

	// Every revoked key is refused and every live key accepted, by both.
	for _, s := range sidecars {
		upstreamBefore := len(s.upstreamRequests(t))
		live := 0
		for _, k := range append(slices.Clone(pre), created...) {
			st, code := s.statusOf(t, unsigned(k, event))
			switch {
			case revoked[k.ID] && (st != 401 || code != "key_revoked"):
				t.Errorf("revoked key %s: status %d %q, want 401 key_revoked", k.ID, st, code)
			case !revoked[k.ID] && st != 200:
				t.Errorf("live key %s: status %d %q, want 200", k.ID, st, code)
			}
			live += countIf(!revoked[k.ID])
		}
		if n := len(s.upstreamRequests(t)) - upstreamBefore; n != live {
			t.Errorf("the upstream got %d requests, want %d (one per live key)", n, live)
		}
	}
}

// Redis stopped mid-traffic: nothing uncached or signed passes while it is
// down, and service comes back by itself when it returns on the same port.
func TestRedisOutage(t *testing.T) {
	r := startRedis(t)
	s := start(t, config{CacheTTL: "1h", App: r.appConfig()})
	r.checkLeaksAtEnd(t, false, s) // no secrets_key: a secret may be in its own record
	cached := s.createKey(t, "tenant-outage")
	signing := s.createKey(t, "tenant-outage", "--signing")
	uncached := s.createKey(t, "tenant-outage") // never used before the outage
	s.accept(t, unsigned(cached, event))
	s.accept(t, signed(signing, variant("before the outage")))
	caddyPID := s.caddy.cmd.Process.Pid

	// Traffic from another goroutine the whole time: fresh signed requests
	// and keys nobody ever cached. phase tells which requests were sent and
	// answered entirely while Redis was down.
	const (
		up = iota
		down
		restarting
		back
	)
	var phase atomic.Int32
	type outcome struct {
		kind       string
		status     int
		code       string
		whileDown  bool
		unknownKey string
	}
	var (
		outcomes  []outcome
		downCount atomic.Int32
		// signed requests of the traffic accepted after redis returned
		acceptedAfter atomic.Int32
		// held by each request of the traffic, and by the checks that count log lines
		gate sync.Mutex
		stop = make(chan struct{})
		done = make(chan struct{})
	)
	var stopOnce sync.Once
	stopTraffic := func() { stopOnce.Do(func() { close(stop) }); <-done }
	t.Cleanup(stopTraffic) // before Caddy stops, even when the test fails early
	go func() {
		defer close(done)
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			o := outcome{kind: "signed"}
			req := signed(signing, variant("traffic "+strconv.Itoa(n)))
			if n%2 == 1 {
				o.kind, o.unknownKey = "unknown key", newRawKey(t)
				req = request{header: http.Header{"X-Wappchat-Key": {o.unknownKey}}, body: event}
			}
			before := phase.Load()
			gate.Lock()
			o.status, o.code = postFrom(t, s.url, req)
			gate.Unlock()
			if o.status == 0 {
				return
			}
			o.whileDown = before == down && phase.Load() == down
			if o.whileDown {
				downCount.Add(1)
			}
			if before == back && o.kind == "signed" && o.status == http.StatusOK {
				acceptedAfter.Add(1)
			}
			outcomes = append(outcomes, o)
		}
	}()

	r.restart(t, func() {
		phase.Store(down)
		defer phase.Store(restarting)
		poll(t, "traffic while redis is down", func() bool { return downCount.Load() >= 6 })
		gate.Lock()
		defer gate.Unlock()
		s.reject(t, unsigned(uncached, payload), 503, "store_unavailable")
		s.reject(t, request{header: http.Header{"X-Wappchat-Key": {newRawKey(t)}}, body: payload}, 503, "store_unavailable")
		s.rejectAfterReadingBody(t, signed(signing, variant("while down")), 503, "store_unavailable")
		// Documented: a cached key that does not sign works until cache_ttl runs out.
		s.accept(t, unsigned(cached, event))
		// Nothing can be written either.
		st, out, err := callAdmin(s.caddyfileAdmin(t), http.MethodPost, "/wappchat/keys", map[string]any{"tenant": "tenant-outage"})
		if err != nil || st != http.StatusServiceUnavailable || !bytes.Contains(out, []byte(`"store_unavailable"`)) {
			t.Errorf("creating a key while redis is down: status %d %s (%v), want 503 store_unavailable", st, out, err)
		}
	})

	// Service resumes with no restart of Caddy, for the traffic and for keys
	// that were never cached.
	phase.Store(back)
	poll(t, "the traffic's signed requests to be accepted again", func() bool { return acceptedAfter.Load() >= 5 })
	stopTraffic()
	poll(t, "the uncached key to be accepted after redis returned", func() bool {
		st, _ := s.statusOf(t, unsigned(uncached, event))
		return st == http.StatusOK
	})
	s.accept(t, unsigned(uncached, event))
	s.accept(t, signed(signing, variant("after the outage")))
	select {
	case <-s.caddy.exited:
		t.Fatalf("caddy exited: %v", s.caddy.err)
	default:
	}
	if s.caddy.cmd.Process.Pid != caddyPID {
		t.Fatalf("caddy was restarted")
	}

	for _, o := range outcomes {
		if o.unknownKey != "" {
			s.remember(o.unknownKey, "")
		}
		if o.whileDown && (o.status != http.StatusServiceUnavailable || o.code != "store_unavailable") {
			t.Errorf("%s request while redis was down: status %d %q, want 503 store_unavailable", o.kind, o.status, o.code)
		}
		if o.status/100 == 2 && o.kind == "unknown key" {
			t.Errorf("a key that never existed was accepted")
		}
	}

	// The log says notices were interrupted, then resumed.
	poll(t, "the debug log to say change notices were interrupted and resumed", func() bool {
		msgs := s.loggerMessages(t, "wappchat.stores.redis")
		i := slices.IndexFunc(msgs, func(m string) bool { return strings.Contains(m, "redis change notices interrupted") })
		return i >= 0 && slices.ContainsFunc(msgs[i:], func(m string) bool { return strings.Contains(m, "redis change notices resumed") })
	})

	// Notices flow again: a revocation written straight to Redis (the CLI
	// with no server on its --address) reaches the cache within a second.
	s.accept(t, unsigned(cached, event))
	if res := s.cli(t, "revoke", cached.ID, "--address", freeAddr(t)); res.code != 0 || !strings.Contains(res.stderr, "using the key store directly") {
		t.Fatalf("revoke on the store directly: exit %d\n%s", res.code, res.stderr)
	}
	pollWithin(t, revocationBound, "the revocation written to redis to reach the cache", func() bool {
		st, _ := s.statusOf(t, unsigned(cached, event))
		return st == http.StatusUnauthorized
	})
	s.reject(t, unsigned(cached, payload), 401, "key_revoked")
}

// migrate --to redis copies every record from Caddy's storage to Redis and
// --to storage copies back, idempotently, with their sealing.
func TestRedisMigrate(t *testing.T) {
	r := startRedis(t)
	sealing := redisSecretsKey(t)
	s := start(t, config{
		CacheTTL: "1h",
		App:      []string{"secrets_key {env.WAPPCHAT_SECRETS_KEY}"},
		Env:      []string{"WAPPCHAT_SECRETS_KEY=" + sealing},
	})
	guardSecretsKey(sealing, s)
	r.checkLeaksAtEnd(t, true, s)
	plain := s.createKey(t, "tenant-m1")
	other := s.createKey(t, "tenant-m2", "--name", "other")
	signing := s.createKey(t, "tenant-m1", "--signing")
	expiring := s.createKey(t, "tenant-m2", "--expires", "30d")
	gone := s.createKey(t, "tenant-m1")
	s.revoke(t, gone.ID)
	inStorage := s.listAllKeys(t)
	storageFiles := len(s.storageFiles(t))

	if res := s.cli(t, "migrate", "--to", "redis"); res.code == 0 {
		t.Errorf("migrate --to redis succeeded with a config that has no redis store:\n%s", res.stdout)
	}
	if n := len(r.records(t)); n != 0 {
		t.Fatalf("redis holds %d records before the migration", n)
	}

	s.setRedisStore(t, r, true)
	for run := range 2 { // twice: the second run changes nothing
		res := s.cli(t, "migrate", "--to", "redis")
		if res.code != 0 || strings.TrimSpace(res.stdout) != "5 records copied to redis." {
			t.Fatalf("migrate --to redis, run %d: exit %d\n%s%s", run+1, res.code, res.stdout, res.stderr)
		}
		hashes := r.records(t)
		slices.Sort(hashes)
		want := []string{plain.SHA256, other.SHA256, signing.SHA256, expiring.SHA256, gone.SHA256}
		slices.Sort(want)
		if !slices.Equal(hashes, want) {
			t.Errorf("after run %d redis holds records %q, want %q", run+1, hashes, want)
		}
		if n := r.do(t, "SCARD", redisPrefix+"ids"); n != int64(5) {
			t.Errorf("after run %d redis's id set has %v members, want 5", run+1, n)
		}
		if fp, _ := r.do(t, "GET", redisPrefix+"sealed_with").(string); !regexp.MustCompile(`^\["[^"]+"\]$`).MatchString(fp) {
			t.Errorf("after run %d redis's sealed_with is %q, want the one fingerprint", run+1, fp)
		}
	}

	// Caddy on the Redis store: every key as it was.
	s.restart(t)
	if got := s.listAllKeys(t); !sameSummaries(got, inStorage) {
		t.Errorf("on redis, list --all --json shows\n%v\nwant\n%v", got, inStorage)
	}
	for _, k := range []issuedKey{plain, other, expiring} {
		expectIdentity(t, s.accept(t, unsigned(k, event)), "X-Tenant-ID", k.Tenant, "X-WappChat-Key-ID", k.ID)
	}
	s.reject(t, unsigned(signing, payload), 401, "signature_required")
	s.accept(t, signed(signing, variant("migrated")))
	s.reject(t, unsigned(gone, payload), 401, "key_revoked")

	// Changes made on Redis go back to storage.
	added := s.createKey(t, "tenant-m3", "--signing")
	s.revoke(t, other.ID)
	if n := len(s.storageFiles(t)); n != storageFiles {
		t.Fatalf("caddy on the redis store wrote to its storage: %d files, had %d", n, storageFiles)
	}
	onRedis := s.listAllKeys(t)
	for run := range 2 {
		res := s.cli(t, "migrate", "--to", "storage")
		if res.code != 0 || strings.TrimSpace(res.stdout) != "6 records copied to storage." {
			t.Fatalf("migrate --to storage, run %d: exit %d\n%s%s", run+1, res.code, res.stdout, res.stderr)
		}
		if _, err := os.Stat(s.recordPath(added.SHA256)); err != nil {
			t.Errorf("after run %d storage lacks the record created on redis: %v", run+1, err)
		}
	}
	filesAfter := len(s.storageFiles(t))
	s.setRedisStore(t, r, false)
	s.restart(t)
	if got := s.listAllKeys(t); !sameSummaries(got, onRedis) {
		t.Errorf("back on storage, list --all --json shows\n%v\nwant\n%v", got, onRedis)
	}
	if n := len(s.storageFiles(t)); n != filesAfter {
		t.Errorf("storage has %d files after restarting on it, want %d", n, filesAfter)
	}
	s.accept(t, signed(added, variant("created on redis")))
	s.accept(t, unsigned(plain, event))
	s.reject(t, unsigned(other, payload), 401, "key_revoked")
	s.reject(t, unsigned(gone, payload), 401, "key_revoked")
}

// setRedisStore adds the Redis store to the sidecar's Caddyfile, or takes it
// out, keeping everything else (storage dir, ports) as it is.
func (s *sidecar) setRedisStore(t *testing.T, r *redisServer, on bool) {
	t.Helper()
	b, err := os.ReadFile(s.caddyfile)
	if err != nil {
		t.Fatal(err)
	}
	block := "\t\t" + strings.Join(r.appConfig(), "\n\t\t") + "\n"
	anchor := regexp.MustCompile(`(?m)^\t\tcache_ttl .*\n`)
	text := string(b)
	if on {
		loc := anchor.FindStringIndex(text)
		if loc == nil || strings.Contains(text, block) {
			t.Fatalf("cannot add the redis store to\n%s", text)
		}
		text = text[:loc[1]] + block + text[loc[1]:]
	} else {
		if !strings.Contains(text, block) {
			t.Fatalf("no redis store to take out of\n%s", text)
		}
		text = strings.Replace(text, block, "", 1)
	}
	if err := os.WriteFile(s.caddyfile, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// sameSummaries compares listings by id, tenant, hash, revocation and signing.
func sameSummaries(got, want []keySummary) bool {
	key := func(l []keySummary) []string {
		var out []string
		for _, s := range l {
			out = append(out, fmt.Sprintf("%s %s %s %v %v", s.ID, s.Tenant, s.SHA256, s.RevokedAt != nil, s.Signing))
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(key(got), key(want))
}

// post sends req from any goroutine and returns the status and error code.
func postFrom(t *testing.T, url string, req request) (int, string) {
	r, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(req.body))
	if err != nil {
		t.Error(err)
		return 0, ""
	}
	for name, values := range req.header {
		r.Header[name] = values
	}
	client := http.Client{Timeout: waitLimit}
	resp, err := client.Do(r)
	if err != nil {
		t.Errorf("POST %s: %v", url, err)
		return 0, ""
	}
	defer resp.Body.Close()
	var body struct{ Error string }
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Error
}

func countIf(b bool) int {
	if b {
		return 1
	}
	return 0
}
