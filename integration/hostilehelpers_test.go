package integration

// Helpers of hostile_test.go and faults_test.go: raw sockets, h2c, the admin
// endpoint's /metrics, goroutine-safe CLI and admin calls, log counters.
// Everything here is safe to call from goroutines other than the test's
// unless it takes a *testing.T.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// adminHostPort is the admin address written into the sidecar's Caddyfile.
func adminHostPort(t *testing.T, s *sidecar) string {
	t.Helper()
	b, err := os.ReadFile(s.caddyfile)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*admin (\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no admin address in %s", s.caddyfile)
	}
	return string(m[1])
}

// gauges reads the named unlabelled samples from the admin endpoint's /metrics.
func gauges(admin string, names ...string) (map[string]float64, error) {
	resp, err := (&http.Client{Timeout: waitLimit}).Get("http://" + admin + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		for _, n := range names {
			if name == n {
				if v, err := strconv.ParseFloat(value, 64); err == nil {
					out[n] = v
				}
			}
		}
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			return nil, fmt.Errorf("/metrics has no %s", n)
		}
	}
	return out, sc.Err()
}

const (
	goroutinesMetric = "go_goroutines"
	rssMetric        = "process_resident_memory_bytes"
	heapMetric       = "go_memstats_heap_inuse_bytes"
	buffersMetric    = "caddy_wappchat_body_buffers_in_use"
)

func mustGauges(t *testing.T, s *sidecar) map[string]float64 {
	t.Helper()
	g, err := gauges(adminHostPort(t, s), goroutinesMetric, rssMetric, heapMetric, buffersMetric)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// collectGarbage has the server run two full garbage collections (the admin
// endpoint's /debug/pprof/heap?gc=1): the second empties sync.Pool's victim
// cache, so heap in use afterwards holds only what is still referenced.
func collectGarbage(t *testing.T, s *sidecar) {
	t.Helper()
	for range 2 {
		resp, err := (&http.Client{Timeout: waitLimit}).Get("http://" + adminHostPort(t, s) + "/debug/pprof/heap?gc=1")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// settleGoroutines polls go_goroutines until it is at most baseline+slack,
// failing after limit. It returns the last value seen.
func settleGoroutines(t *testing.T, s *sidecar, baseline, slack float64, limit time.Duration) float64 {
	t.Helper()
	deadline := time.Now().Add(limit)
	var last float64
	for {
		last = mustGauges(t, s)[goroutinesMetric]
		if last <= baseline+slack {
			return last
		}
		if time.Now().After(deadline) {
			t.Errorf("go_goroutines still %v after %v, baseline %v (+%v allowed): a goroutine leak", last, limit, baseline, slack)
			logGoroutines(t, adminHostPort(t, s))
			return last
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// logGoroutines logs the biggest groups of the server's goroutines, from the
// admin endpoint's /debug/pprof/goroutine?debug=1.
func logGoroutines(t *testing.T, admin string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: waitLimit}).Get("http://" + admin + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Logf("goroutine profile: %v", err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	groups := strings.Split(string(b), "\n\n")
	shown := 0
	for _, g := range groups[1:] { // the first is the header
		var n int
		if _, err := fmt.Sscanf(g, "%d @", &n); err != nil || n < 2 {
			continue
		}
		var frames []string
		for _, line := range strings.Split(g, "\n") {
			if strings.HasPrefix(line, "#\t") {
				fields := strings.Fields(line)
				if len(fields) >= 3 {
					frames = append(frames, fields[2])
				}
			}
		}
		t.Logf("%d goroutines in %s", n, strings.Join(frames[:min(len(frames), 6)], " < "))
		if shown++; shown == 8 {
			break
		}
	}
}

// serverGoroutines counts the server's goroutines from its goroutine profile,
// and separately those of the reverse proxy's keep-alive connections to the
// upstream (net/http persistConn read and write loops). Caddy's HTTP transport
// has no Cleanup: a replaced config's idle upstream connections live until
// their idle timeout (2 minutes by default), whatever the plugin does.
func serverGoroutines(admin string) (total, upstreamConns int, err error) {
	resp, err := (&http.Client{Timeout: waitLimit}).Get("http://" + admin + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, err
	}
	for _, g := range strings.Split(string(b), "\n\n") {
		var n int
		if _, err := fmt.Sscanf(g, "%d @", &n); err != nil {
			continue
		}
		total += n
		if strings.Contains(g, "net/http.(*persistConn).readLoop") || strings.Contains(g, "net/http.(*persistConn).writeLoop") {
			upstreamConns += n
		}
	}
	return total, upstreamConns, nil
}

// settleOwnGoroutines polls until the server's goroutines, not counting
// upstream keep-alive connections, are at most baseline+slack.
func settleOwnGoroutines(t *testing.T, s *sidecar, baseline, slack int, limit time.Duration) (own, conns int) {
	t.Helper()
	admin := adminHostPort(t, s)
	deadline := time.Now().Add(limit)
	for {
		total, c, err := serverGoroutines(admin)
		if err != nil {
			t.Fatal(err)
		}
		own, conns = total-c, c
		if own <= baseline+slack {
			return own, conns
		}
		if time.Now().After(deadline) {
			t.Errorf("%d goroutines (besides %d of upstream connections) after %v, baseline %d (+%d allowed): a goroutine leak", own, conns, limit, baseline, slack)
			logGoroutines(t, admin)
			return own, conns
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// rawReply is what came back on a raw connection.
type rawReply struct {
	resp *http.Response // nil when nothing parseable came back
	body []byte
	rest []byte // whatever followed the first response (pipelining)
	err  error
}

// rawExchange writes payload to addr, optionally pauses, and reads one HTTP
// response. afterWrite decides what the client does once payload is written:
// "" waits for the answer, "stall" pauses then half-closes, "close" pauses
// then closes the connection without reading anything.
func rawExchange(addr string, payload []byte, method, afterWrite string, pause time.Duration) rawReply {
	conn, err := net.DialTimeout("tcp", addr, waitLimit)
	if err != nil {
		return rawReply{err: err}
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(waitLimit))
	if _, err := conn.Write(payload); err != nil {
		return rawReply{err: fmt.Errorf("writing: %w", err)}
	}
	switch afterWrite {
	case "stall":
		time.Sleep(pause)
		_ = conn.(*net.TCPConn).CloseWrite()
	case "close":
		time.Sleep(pause)
		return rawReply{}
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		return rawReply{err: fmt.Errorf("reading the response: %w", err)}
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return rawReply{resp: resp, err: fmt.Errorf("reading the response body: %w", err)}
	}
	// Anything after the first response: read briefly, for the record.
	_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	rest, _ := io.ReadAll(br)
	return rawReply{resp: resp, body: body, rest: rest}
}

// h2cClient speaks HTTP/2 without TLS (prior knowledge) and nothing else.
func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Timeout: waitLimit, Transport: &http.Transport{Protocols: &p}}
}

// upstreamCount is how many requests the upstream has logged.
func upstreamCount(t *testing.T, s *sidecar) int {
	t.Helper()
	return len(s.upstreamRequests(t))
}

// rejectedCounts counts the handler's "rejected" entries by code.
func rejectedCounts(t *testing.T, s *sidecar) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for _, line := range readLines(t, filepath.Join(s.dir, "debug.log")) {
		var entry struct{ Logger, Msg, Code string }
		if json.Unmarshal([]byte(line), &entry) == nil && entry.Logger == "http.handlers.wappchat_auth" && entry.Msg == "rejected" {
			counts[entry.Code]++
		}
	}
	return counts
}

func total(counts map[string]int) int {
	n := 0
	for _, c := range counts {
		n += c
	}
	return n
}

// adminJSON sends a JSON request to the admin endpoint from any goroutine.
func adminJSON(admin, method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+admin+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: waitLimit}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// adminCreateKey creates a key through the admin API from any goroutine.
func adminCreateKey(admin, tenant string, signing bool) (issuedKey, error) {
	status, body, err := adminJSON(admin, http.MethodPost, "/wappchat/keys", map[string]any{"tenant": tenant, "signing": signing})
	if err != nil {
		return issuedKey{}, err
	}
	if status != http.StatusCreated {
		return issuedKey{}, fmt.Errorf("POST /wappchat/keys: %d %s", status, body)
	}
	var k issuedKey
	if err := json.Unmarshal(body, &k); err != nil || k.ID == "" || k.Key == "" {
		return issuedKey{}, fmt.Errorf("POST /wappchat/keys printed %q: %v", body, err)
	}
	return k, nil
}

// statusOf sends req (POST to the events endpoint) from any goroutine and
// returns the status and the JSON error code, if any.
func statusOf(client *http.Client, url string, req request) (int, string, error) {
	r, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(req.body))
	if err != nil {
		return 0, "", err
	}
	for name, values := range req.header {
		r.Header[name] = values
	}
	resp, err := client.Do(r)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, "", err
	}
	var e struct{ Error string }
	_ = json.Unmarshal(body, &e)
	return resp.StatusCode, e.Error, nil
}

// signedAt is signed(k, body) with a timestamp of its own.
func signedAt(k issuedKey, ts string, body []byte) request {
	return request{header: http.Header{
		"X-Wappchat-Key":       {k.Key},
		"X-Wappchat-Timestamp": {ts},
		"X-Wappchat-Signature": {signature(k.Secret, ts, body)},
	}, body: body}
}
