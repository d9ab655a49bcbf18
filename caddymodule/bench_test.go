package caddymodule

// Benchmarks of the request path (issue 7). Run:
//
//	go test -run='^$' -bench=. -benchmem ./caddymodule/
//
// Targets: VerifySignature/1KiB/key within 1.3x of VerifySignature/1KiB/bare
// with at most 2 allocs/op; VerifySignature/1MiB/key within 1.1x of .../1MiB/bare.
// "bare" is hmac.New(sha256.New, secret) + Write + Sum over the same bytes
// ("{timestamp}.{body}"), which is what a verifier without pooled states costs.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

var benchSizes = []struct {
	name string
	n    int
}{{"1KiB", 1 << 10}, {"64KiB", 64 << 10}, {"1MiB", 1 << 20}}

// newBenchEnv is the handler test environment made production-like: keys
// cached (cache_ttl 1h), replay claims at the default capacity, and the
// handler's log encoded as JSON at info level into io.Discard, so the cost of
// the audit entry is measured but the entries are not kept in memory.
func newBenchEnv(b *testing.B, configure func(*Handler)) *handlerEnv {
	b.Helper()
	env := newHandlerEnv(b, configure)
	cache, err := newLookupCache(time.Hour, defaultCacheSize, defaultNegativeCacheSize, time.Now)
	if err != nil {
		b.Fatal(err)
	}
	env.app.cache = cache
	env.app.claims = NewMemoryClaims(defaultReplayCapacity, func() time.Time { return testNow })
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	env.h.logger = zap.New(zapcore.NewCore(enc, zapcore.AddSync(io.Discard), zap.InfoLevel))
	return env
}

func BenchmarkExtractKey(b *testing.B) {
	const key = "wchat_live_0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJK"
	for _, tc := range []struct {
		name   string
		header http.Header
	}{
		{"x-wappchat-key", http.Header{KeyHeader: {key}, "Content-Type": {"application/json"}}},
		{"bearer", http.Header{"Authorization": {"Bearer " + key}, "Content-Type": {"application/json"}}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, rej := ExtractKey(tc.header); rej != nil {
					b.Fatal(rej)
				}
			}
		})
	}
}

// BenchmarkAppLookup is what the handler does with an extracted key: hash it
// and ask the app. cached: the record is in the LRU. cold: cache_ttl 0, so
// every lookup reads and decodes (and unseals) the record from a FileStorage.
func BenchmarkAppLookup(b *testing.B) {
	ctx := context.Background()
	b.Run("cached", func(b *testing.B) {
		env := newBenchEnv(b, nil)
		raw := env.signing.Key
		if _, err := env.app.Lookup(ctx, HashKey(raw)); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := env.app.Lookup(ctx, HashKey(raw)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cold", func(b *testing.B) {
		env := newHandlerEnv(b, nil) // cache_ttl 0 over a FileStorage in b.TempDir()
		raw := env.signing.Key
		b.ReportAllocs()
		for b.Loop() {
			if _, err := env.app.Lookup(ctx, HashKey(raw)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkVerifySignature compares Key.VerifySignature (pooled keyed HMAC
// states) with a bare crypto/hmac over the same bytes. Read the ratio as
// VerifySignature/<size>/key ns/op divided by VerifySignature/<size>/bare ns/op.
func BenchmarkVerifySignature(b *testing.B) {
	env := newBenchEnv(b, nil)
	key, err := env.app.Lookup(context.Background(), HashKey(env.signing.Key))
	if err != nil {
		b.Fatal(err)
	}
	secret := []byte(env.signing.Secret)
	for _, size := range benchSizes {
		body := bytes.Repeat([]byte("a"), size.n)
		signed := SignedHeaders{Timestamp: testTS, Unix: testNow.Unix(), Signature: Sign(secret, testTS, body)}
		b.Run(size.name+"/bare", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size.n))
			var sum [sha256.Size]byte
			for b.Loop() {
				mac := hmac.New(sha256.New, secret)
				mac.Write([]byte(testTS + "."))
				mac.Write(body)
				if !hmac.Equal(mac.Sum(sum[:0]), signed.Signature[:]) {
					b.Fatal("mismatch")
				}
			}
		})
		b.Run(size.name+"/key", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size.n))
			for b.Loop() {
				if rej := key.VerifySignature(testNow, signed, body); rej != nil {
					b.Fatal(rej)
				}
			}
		})
	}
}

// benchRequests are distinct signed requests (a counter in the JSON body, so
// each has its own signature and replay claim) prepared outside the timer.
type benchRequests struct {
	bodies [][]byte
	sigs   [][]string
}

func newBenchRequests(secret string, size, count int) *benchRequests {
	rs := &benchRequests{}
	for i := range count {
		body := fmt.Appendf(nil, `{"event":"lead.created","source":"bench","idempotency_key":"req-%09d","pad":"`, i)
		body = append(body, bytes.Repeat([]byte("x"), max(0, size-len(body)-2))...)
		body = append(body, `"}`...)
		rs.bodies = append(rs.bodies, body)
		rs.sigs = append(rs.sigs, []string{signHeader(secret, testTS, body)})
	}
	return rs
}

// benchServe runs Handler.ServeHTTP with a next handler that drains and closes
// the body, as the proxy transport does. One *http.Request is reused: its
// header map is refilled from shared, precomputed values each iteration, so
// the allocations reported are the handler's own (see ServeHTTP/baseline).
// Replay protection stays on: every request is signed freshly, and the claim
// store is replaced (timer stopped) each time the prepared requests run out.
func benchServe(b *testing.B, env *handlerEnv, issued *Issued, rs *benchRequests) {
	keyVals := []string{issued.Key}
	tsVals := []string{testTS}
	ctVals := []string{"application/json"}
	var clVals []string
	var bodyLen int
	if rs != nil {
		bodyLen = len(rs.bodies[0])
		clVals = []string{strconv.Itoa(bodyLen)}
	}
	r := httptest.NewRequest(http.MethodPost, "/api/whatsapp/automation/events", nil)
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	reader := bytes.NewReader(nil)
	body := io.NopCloser(reader)
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return err
		}
		return r.Body.Close()
	})
	w := httptest.NewRecorder()
	b.ReportAllocs()
	if bodyLen > 0 {
		b.SetBytes(int64(bodyLen))
	}
	i := 0
	for b.Loop() {
		clear(r.Header)
		r.Header["Content-Type"] = ctVals
		r.Header[KeyHeader] = keyVals
		r.Body = http.NoBody
		r.ContentLength = 0
		if rs != nil {
			idx := i % len(rs.bodies)
			if idx == 0 && i > 0 {
				b.StopTimer()
				env.app.claims = NewMemoryClaims(defaultReplayCapacity, func() time.Time { return testNow })
				b.StartTimer()
			}
			r.Header["Content-Length"] = clVals
			r.Header[TimestampHeader] = tsVals
			r.Header[SignatureHeader] = rs.sigs[idx]
			reader.Reset(rs.bodies[idx])
			r.Body = body
			r.ContentLength = int64(bodyLen)
		}
		i++
		if err := env.h.ServeHTTP(w, r, next); err != nil {
			b.Fatal(err)
		}
		if w.Code != http.StatusOK {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
}

// BenchmarkServeHTTP is the whole handler with a cached key: key-only, and
// signed at each size (replay protection on, every request distinct).
// baseline is the harness alone (header refill, next draining the body), to
// subtract.
func BenchmarkServeHTTP(b *testing.B) {
	b.Run("baseline", func(b *testing.B) {
		env := newBenchEnv(b, nil)
		rs := newBenchRequests(env.signing.Secret, 1<<10, 64)
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		reader := bytes.NewReader(nil)
		body := io.NopCloser(reader)
		keyVals := []string{env.signing.Key}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			clear(r.Header)
			r.Header[KeyHeader] = keyVals
			r.Header[SignatureHeader] = rs.sigs[i%len(rs.sigs)]
			reader.Reset(rs.bodies[i%len(rs.bodies)])
			r.Body = body
			io.Copy(io.Discard, r.Body)
			r.Body.Close()
			i++
		}
	})
	b.Run("key-only", func(b *testing.B) {
		env := newBenchEnv(b, nil)
		benchServe(b, env, env.plain, nil)
	})
	for _, size := range benchSizes {
		b.Run("signed/"+size.name, func(b *testing.B) {
			env := newBenchEnv(b, nil)
			count := min(4096, max(16, (16<<20)/size.n))
			benchServe(b, env, env.signing, newBenchRequests(env.signing.Secret, size.n, count))
		})
	}
}
