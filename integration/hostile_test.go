package integration

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"
)

// hostileCase is one line of testdata/hostile.json. Strings are Go templates
// over hostileData, with the functions of hostileFuncs.
type hostileCase struct {
	Name    string   `json:"name"`
	Proto   string   `json:"proto"`   // "" (HTTP/1.1 on a raw socket), "1.0", or "h2c" (net/http, HTTP/2 prior knowledge)
	Method  string   `json:"method"`  // default POST
	Target  string   `json:"target"`  // default the events path
	Headers []string `json:"headers"` // written exactly as given, in order ("Name: value")
	Body    *string  `json:"body"`    // default: an event body of the case's own
	Gzip    bool     `json:"gzip"`    // gzip the body; signatures are over the gzip bytes
	// Framing: "" adds Content-Length (none for a bodiless GET/HEAD/DELETE/OPTIONS),
	// "chunked" sends the body in 1000-byte chunks, "none" adds nothing (the
	// case's headers and body carry their own framing), "stall" declares 100
	// bytes more than it sends, pauses, then half-closes, "close" does the same
	// but closes the connection without reading an answer.
	Framing string `json:"framing"`
	NoHost  bool   `json:"nohost"` // omit the Host header
	Status  int    `json:"status"`
	Code    string `json:"code"` // the plugin's JSON error code; "" with status 200 for a pass
	// Layer "http": refused by Go's HTTP server or Caddy before the plugin runs:
	// a plain answer, no plugin log entry. Layer "nosite": no Caddy site matches.
	Layer string `json:"layer"`
	// Pass names the key the upstream must see the request as: "plain" or "signing".
	Pass     string              `json:"pass"`
	Upstream map[string][]string `json:"upstream"` // headers the upstream must get, beyond the identity (null: none)
	Wire     *string             `json:"wire"`     // the body the upstream must get, when not the bytes sent
	// KeepAlive leaves out Connection: close; After is written right after the
	// request (a pipelined or smuggled second request); Rest are the error
	// codes the plugin must answer to what follows the first response.
	KeepAlive bool     `json:"keepalive"`
	After     string   `json:"after"`
	Rest      []string `json:"rest"`
	// Boundary cases are retried until the client's clock read the same second
	// before sending and after the answer, so the server's second is known.
	Boundary bool `json:"boundary"`
}

// hostileData is what the templates see.
type hostileData struct {
	Plain, Signing, Other, Revoked, Unknown, Burnt string
	Host, Path, TS                                 string
	Body                                           string // the case's body as sent
	secret                                         string // the signing key's, for the signature functions
}

// TestHostileCorpus sends every request of testdata/hostile.json to one
// sidecar (max_body 64KiB, tolerance 5m, h1 and h2c) and checks each: refused
// with the status and code given and the upstream untouched, or, for the few
// that legitimately pass, exactly what the upstream got.
func TestHostileCorpus(t *testing.T) {
	auth := slices.Clone(exampleAuth)
	auth[4] = "max_body 64KiB"
	s := start(t, config{Auth: auth, Servers: []string{"protocols h1 h2c"}})
	if d := os.Getenv("HOSTILE_KEEP"); d != "" {
		t.Cleanup(func() { _ = exec.Command("cp", "-r", s.dir, d).Run() })
	}
	plain := s.createKey(t, "tenant-plain")
	signing := s.createKey(t, "tenant-signing", "--signing")
	other := s.createKey(t, "tenant-other")
	revoked := s.createKey(t, "tenant-plain")
	s.revoke(t, revoked.ID)
	// A key sent in a query string is written to Caddy's access log with the
	// URI: it is burnt by the client. It is kept out of the leak check.
	res := s.cli(t, "create", "--tenant", "tenant-burnt", "--json")
	var burnt issuedKey
	if res.code != 0 || json.Unmarshal([]byte(res.stdout), &burnt) != nil {
		t.Fatalf("create: %d %s", res.code, res.stderr)
	}

	raw, err := os.ReadFile("testdata/hostile.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []hostileCase
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatalf("testdata/hostile.json: %v", err)
	}
	if len(cases) < 80 {
		t.Errorf("the corpus has %d cases, want at least 80", len(cases))
	}
	names := map[string]bool{}
	for _, c := range cases {
		if names[c.Name] {
			t.Errorf("case %q appears twice", c.Name)
		}
		names[c.Name] = true
	}
	keys := map[string]issuedKey{"plain": plain, "signing": signing}
	data := hostileData{Plain: plain.Key, Signing: signing.Key, Other: other.Key, Revoked: revoked.Key,
		Unknown: "wchat_live_" + strings.Repeat("Q", 43), Burnt: burnt.Key, Host: s.addr, Path: eventsPath, secret: signing.Secret}

	upstreamStart := upstreamCount(t, s)
	passes := 0
	for i, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			for attempt := 1; ; attempt++ {
				before := time.Now().Unix()
				passed, settled := runHostile(t, s, c, i, attempt, data, keys, before)
				passes += passed
				if settled || !c.Boundary {
					return
				}
				if attempt == 5 {
					t.Fatal("the clock's second changed during every one of 5 attempts")
				}
				t.Logf("attempt %d straddled a second: retrying", attempt)
			}
		})
	}

	// Whatever any case did, everything that reached the upstream was
	// authenticated: one identity of a real key, no credential.
	got := s.upstreamRequests(t)[upstreamStart:]
	if len(got) != passes {
		t.Errorf("the upstream got %d requests, the corpus passed %d", len(got), passes)
	}
	known := map[string]string{plain.ID: plain.Tenant, signing.ID: signing.Tenant}
	for i, r := range got {
		ids, tenants := r.header("X-WappChat-Key-ID"), r.header("X-Tenant-ID")
		if len(ids) != 1 || len(tenants) != 1 || known[ids[0]] != tenants[0] || r.header("X-Wappchat-Key") != nil {
			t.Errorf("upstream request %d is not one authenticated identity: key id %q, tenant %q, credential %q", i, ids, tenants, r.header("X-Wappchat-Key"))
		}
	}
	t.Logf("%d hostile cases, %d passed to the upstream by design", len(cases), passes)
}

// runHostile sends one case and checks the outcome. It returns how many
// requests reached the upstream, and false when a boundary case's answer
// cannot be judged because the second changed.
func runHostile(t *testing.T, s *sidecar, c hostileCase, index, attempt int, data hostileData, keys map[string]issuedKey, now int64) (int, bool) {
	t.Helper()
	data.TS = strconv.FormatInt(now, 10)
	method := c.Method
	if method == "" {
		method = http.MethodPost
	}
	body := []byte(fmt.Sprintf(`{"event":"hostile","case":%d,"attempt":%d}`, index, attempt))
	if c.Body != nil {
		body = []byte(render(t, *c.Body, data, now, nil))
	}
	if c.Gzip {
		var zb bytes.Buffer
		zw := gzip.NewWriter(&zb)
		_, _ = zw.Write(body)
		_ = zw.Close()
		body = zb.Bytes()
	}
	data.Body = string(body)
	target := eventsPath
	if c.Target != "" {
		target = render(t, c.Target, data, now, body)
	}
	var headers []string
	for _, h := range c.Headers {
		headers = append(headers, render(t, h, data, now, body))
	}
	testID := fmt.Sprintf("hostile-%d-%d", index, attempt)
	after := ""
	if c.After != "" {
		after = render(t, c.After, data, now, body)
	}

	upBefore := upstreamCount(t, s)
	rejBefore := rejectedCounts(t, s)
	var status int
	var respHeader http.Header
	var respBody []byte
	if c.Proto == "h2c" {
		status, respHeader, respBody = sendH2C(t, s, method, target, headers, body, c.Framing == "chunked", testID)
	} else {
		payload := append(buildRaw(c, method, target, headers, body, s.addr, testID), after...)
		mode, pause := "", time.Duration(0)
		if c.Framing == "stall" || c.Framing == "close" {
			mode, pause = c.Framing, time.Second
		}
		reply := rawExchange(s.addr, payload, method, mode, pause)
		switch {
		case mode == "close":
			// The client left without an answer: the refusal shows in the log only.
			poll(t, "the "+c.Code+" log entry", func() bool { return rejectedCounts(t, s)[c.Code] > rejBefore[c.Code] })
		case reply.err != nil:
			t.Fatalf("%v", reply.err)
		default:
			status, respHeader, respBody = reply.resp.StatusCode, reply.resp.Header, reply.body
			checkRest(t, reply.rest, c.Rest)
		}
	}
	if c.Boundary && time.Now().Unix() != now {
		return upstreamCount(t, s) - upBefore, false
	}

	upDelta := upstreamCount(t, s) - upBefore
	rejAfter := rejectedCounts(t, s)
	for _, code := range c.Rest { // answered to what followed: checked by checkRest
		rejBefore[code]++
	}
	if c.Framing != "close" && status != c.Status {
		t.Errorf("status %d, want %d: %q", status, c.Status, respBody)
	}
	switch {
	case c.Pass != "":
		k := keys[c.Pass]
		if upDelta != 1 {
			t.Fatalf("the upstream logged %d requests, want 1", upDelta)
		}
		got := s.upstreamRequests(t)[upBefore]
		expectIdentity(t, got, "X-Tenant-ID", k.Tenant, "X-WappChat-Key-ID", k.ID)
		if got.Method != method {
			t.Errorf("the upstream got method %s, want %s", got.Method, method)
		}
		want := body
		if c.Wire != nil {
			want = []byte(*c.Wire)
		}
		if !bytes.Equal(got.body(), want) {
			t.Errorf("the upstream got body %q, want the %d bytes %q", got.body(), len(want), want)
		}
		if v := got.header("X-Wappchat-Key"); v != nil {
			t.Errorf("the credential reached the upstream: %q", v)
		}
		if v := got.header("Authorization"); !slices.Equal(v, c.Upstream["Authorization"]) {
			t.Errorf("the upstream got Authorization %q, want %q", v, c.Upstream["Authorization"])
		}
		for name, want := range c.Upstream {
			if v := got.header(name); !slices.Equal(v, want) {
				t.Errorf("the upstream got %s %q, want %q", name, v, want)
			}
		}
		for name, values := range got.Headers {
			for _, v := range values {
				if strings.Contains(v, "evil") {
					t.Errorf("a spoofed value reached the upstream as %s: %q", name, v)
				}
			}
		}
		if total(rejAfter) != total(rejBefore) {
			t.Errorf("a passed request was also logged as rejected: %v -> %v", rejBefore, rejAfter)
		}
		return 1, true
	case c.Layer != "":
		if upDelta != 0 {
			t.Errorf("a request refused before the plugin reached the upstream %d times", upDelta)
		}
		if total(rejAfter) != total(rejBefore) {
			t.Errorf("the plugin logged a rejection (%v -> %v) for a request %s should refuse first", rejBefore, rejAfter, c.Layer)
		}
		var e struct{ Error string }
		if json.Unmarshal(respBody, &e) == nil && e.Error != "" {
			t.Errorf("answered by the plugin (%s), not the %s layer", e.Error, c.Layer)
		}
		t.Logf("answer: %d %q", status, firstLine(respBody))
		return 0, true
	}
	// Refused by the plugin.
	if upDelta != 0 {
		t.Errorf("a rejected request reached the upstream %d times", upDelta)
	}
	if rejAfter[c.Code] != rejBefore[c.Code]+1 || total(rejAfter) != total(rejBefore)+1 {
		t.Errorf("rejection log went from %v to %v, want one more %q", rejBefore, rejAfter, c.Code)
	}
	if c.Framing != "close" && method != http.MethodHead {
		var e struct{ Error, Message string }
		if err := json.Unmarshal(respBody, &e); err != nil || e.Error != c.Code || e.Message == "" {
			t.Errorf("body %q, want JSON with error %q and a message", respBody, c.Code)
		}
	}
	if c.Framing != "close" {
		if ct := respHeader.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q, want application/json", ct)
		}
		if auth := respHeader.Get("WWW-Authenticate"); (status == http.StatusUnauthorized) != (auth == `Bearer realm="wappchat"`) {
			t.Errorf("WWW-Authenticate %q on a %d", auth, status)
		}
	}
	if c.Framing == "" && !readsBody[c.Code] {
		if read := s.accessEntry(t, testID)["bytes_read"]; read != 0.0 {
			t.Errorf("the sidecar read %v body bytes before refusing with %s", read, c.Code)
		}
	}
	// No credential of the request in the log entry.
	lines := s.rejectionLog(t, c.Code)
	if len(lines) > 0 {
		last := lines[len(lines)-1]
		for _, secretish := range []string{data.Plain, data.Signing, data.Other, data.Revoked, data.Burnt} {
			if strings.Contains(last, secretish) {
				t.Errorf("the rejection log entry contains a raw key: %s", last)
			}
		}
	}
	return 0, true
}

// checkRest reads the responses that followed the first on the connection:
// one per code in want, each the plugin's refusal with that code.
func checkRest(t *testing.T, rest []byte, want []string) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(rest))
	for i, code := range want {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Errorf("response %d after the first: %v (want %s)", i+2, err, code)
			return
		}
		b, _ := io.ReadAll(resp.Body)
		var e struct{ Error string }
		if json.Unmarshal(b, &e) != nil || e.Error != code {
			t.Errorf("response %d after the first: %d %q, want %s", i+2, resp.StatusCode, b, code)
		}
	}
	if extra, _ := io.ReadAll(br); len(extra) > 0 && len(want) == 0 {
		t.Logf("the server also answered: %q", firstLine(extra))
	}
}

func firstLine(b []byte) string {
	line, _, _ := strings.Cut(string(b), "\n")
	return line
}

// buildRaw writes an HTTP/1.x request exactly as the case says.
func buildRaw(c hostileCase, method, target string, headers []string, body []byte, host, testID string) []byte {
	proto := "HTTP/1.1"
	if c.Proto == "1.0" {
		proto = "HTTP/1.0"
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s %s\r\n", method, target, proto)
	if !c.NoHost {
		fmt.Fprintf(&b, "Host: %s\r\n", host)
	}
	fmt.Fprintf(&b, "X-Test-Id: %s\r\n", testID)
	if c.Proto != "1.0" && !c.KeepAlive {
		b.WriteString("Connection: close\r\n")
	}
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	bodiless := method == http.MethodGet || method == http.MethodHead || method == http.MethodDelete || method == http.MethodOptions
	switch c.Framing {
	case "":
		if len(body) > 0 || !bodiless {
			fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
		}
		b.WriteString("\r\n")
		b.Write(body)
	case "chunked":
		b.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		for rest := body; len(rest) > 0; {
			n := min(len(rest), 1000)
			fmt.Fprintf(&b, "%x\r\n%s\r\n", n, rest[:n])
			rest = rest[n:]
		}
		b.WriteString("0\r\n\r\n")
	case "stall", "close":
		fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(body)+100)
		b.Write(body)
	case "none":
		b.WriteString("\r\n")
		b.Write(body)
	}
	return b.Bytes()
}

// sendH2C sends the case over HTTP/2 without TLS, with Go's client.
func sendH2C(t *testing.T, s *sidecar, method, target string, headers []string, body []byte, streamed bool, testID string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+s.addr+target, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if streamed {
		req.Body, req.ContentLength, req.GetBody = io.NopCloser(bytes.NewReader(body)), -1, nil
	}
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ": ")
		req.Header[name] = append(req.Header[name], value)
	}
	req.Header.Set("X-Test-Id", testID)
	resp, err := h2cClient().Do(req)
	if err != nil {
		t.Fatalf("h2c %s: %v", method, err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("the answer came over %s, not HTTP/2", resp.Proto)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// render expands a case template. body is what signatures are computed over.
func render(t *testing.T, text string, data hostileData, now int64, body []byte) string {
	t.Helper()
	signingSecret := data.secret
	funcs := template.FuncMap{
		// ts is the current unix time plus offset seconds.
		"ts": func(offset int) string { return strconv.FormatInt(now+int64(offset), 10) },
		// sig is the valid signature header of the case's body at timestamp ts.
		"sig": func(ts string) string { return signature(signingSecret, ts, body) },
		// sigOf signs another payload than the case's body.
		"sigOf": func(ts, payload string) string { return signature(signingSecret, ts, []byte(payload)) },
		// hexsig is sig without its "sha256=" prefix; b64sig is the MAC in base64.
		"hexsig": func(ts string) string { return strings.TrimPrefix(signature(signingSecret, ts, body), "sha256=") },
		"b64sig": func(ts string) string {
			m := hmac.New(sha256.New, []byte(signingSecret))
			m.Write(append([]byte(ts+"."), body...))
			return base64.StdEncoding.EncodeToString(m.Sum(nil))
		},
		"repeat": strings.Repeat,
		"upper":  strings.ToUpper,
		"b64":    func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) },
		// mid inserts sep in the middle of s.
		"mid": func(s, sep string) string { return s[:len(s)/2] + sep + s[len(s)/2:] },
		// byte is one raw byte, for values that are not UTF-8.
		"byte": func(b int) string { return string([]byte{byte(b)}) },
		"drop": func(n int, s string) string { return s[:len(s)-n] },
	}
	tmpl, err := template.New("case").Funcs(funcs).Parse(text)
	if err != nil {
		t.Fatalf("template %q: %v", text, err)
	}
	var out bytes.Buffer
	if err := tmpl.Execute(&out, data); err != nil {
		t.Fatalf("template %q: %v", text, err)
	}
	return out.String()
}

// A request whose Host matches no site is logged by Caddy's default access
// logger with every header, outside the site's log filter: with the
// documented configuration a valid key sent with a wrong Host (or HTTP/1.0
// without one) is written in clear to the server log.
func TestHostileKeyNotLoggedForUnmatchedHost(t *testing.T) {
	s := start(t, config{})
	k := s.createKey(t, "tenant-host")
	for _, req := range []string{
		"POST " + eventsPath + " HTTP/1.1\r\nHost: other.example\r\nX-Wappchat-Key: " + k.Key + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
		"POST " + eventsPath + " HTTP/1.0\r\nX-Wappchat-Key: " + k.Key + "\r\nContent-Length: 0\r\n\r\n",
	} {
		reply := rawExchange(s.addr, []byte(req), http.MethodPost, "", 0)
		if reply.err != nil {
			t.Fatal(reply.err)
		}
		t.Logf("%q: %d %q", firstLine([]byte(req)), reply.resp.StatusCode, reply.body)
	}
	if n := upstreamCount(t, s); n != 0 {
		t.Errorf("the upstream got %d requests", n)
	}
	for _, name := range []string{"debug.log", "access.log"} {
		b, _ := os.ReadFile(s.dir + "/" + name)
		if bytes.Contains(b, []byte(k.Key)) {
			t.Errorf("%s holds the raw key of a request whose Host matched no site (Caddy's default access logger, outside the site's filter)", name)
		}
	}
}

// A refusal decided from the headers is answered at once, without waiting for
// a promised body the client never sends, and the connection is closed.
func TestHostileRefusalDoesNotWaitForTheBody(t *testing.T) {
	s := start(t, config{})
	for _, header := range []string{"Content-Length: 1048576", "Transfer-Encoding: chunked"} {
		req := "POST " + eventsPath + " HTTP/1.1\r\nHost: " + s.addr + "\r\nX-Wappchat-Key: wchat_live_unknown\r\n" + header + "\r\n\r\n"
		reply := rawExchange(s.addr, []byte(req), http.MethodPost, "", 0)
		if reply.err != nil {
			t.Fatalf("%s: %v (the refusal waited for the body)", header, reply.err)
		}
		if reply.resp.StatusCode != http.StatusUnauthorized || !bytes.Contains(reply.body, []byte(`"invalid_key"`)) || !reply.resp.Close {
			t.Errorf("%s: %d %q, close %v; want 401 invalid_key and the connection closed", header, reply.resp.StatusCode, reply.body, reply.resp.Close)
		}
	}
	if n := upstreamCount(t, s); n != 0 {
		t.Errorf("the upstream got %d requests", n)
	}
}

// Declared request trailers arrive after the body: an identity sent there is
// as much a spoof as one in the headers, signed request or not.
func TestHostileIdentityInTrailers(t *testing.T) {
	s := start(t, config{})
	plain, signing := s.createKey(t, "tenant-trailer"), s.createKey(t, "tenant-trailer-signed", "--signing")
	body := []byte(`{"event":"lead.created"}`)
	chunked := fmt.Sprintf("%x\r\n%s\r\n0\r\nX-Tenant-ID: victim\r\nX-Wappchat-Key-Id: key_victim\r\n\r\n", len(body), body)
	for _, tc := range []struct {
		name, tenant string
		headers      []string
	}{
		{"unsigned", "tenant-trailer", []string{"X-Wappchat-Key: " + plain.Key}},
		{"signed", "tenant-trailer-signed", func() []string {
			ts := now()
			return []string{"X-Wappchat-Key: " + signing.Key, "X-Wappchat-Timestamp: " + ts, "X-Wappchat-Signature: " + signature(signing.Secret, ts, body)}
		}()},
	} {
		req := "POST " + eventsPath + " HTTP/1.1\r\nHost: " + s.addr + "\r\nTransfer-Encoding: chunked\r\nTrailer: X-Tenant-ID, X-Wappchat-Key-Id\r\n" +
			strings.Join(tc.headers, "\r\n") + "\r\nConnection: close\r\n\r\n" + chunked
		reply := rawExchange(s.addr, []byte(req), http.MethodPost, "", 0)
		if reply.err != nil || reply.resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %v %v %q", tc.name, reply.err, reply.resp, reply.body)
		}
		got := s.upstreamRequests(t)
		last := got[len(got)-1]
		if len(last.Trailers) != 0 || strings.Contains(fmt.Sprint(last.Headers), "victim") {
			t.Errorf("%s: the upstream got trailers %v, headers %v", tc.name, last.Trailers, last.Headers)
		}
		if tenant := last.header("X-Tenant-ID"); len(tenant) != 1 || tenant[0] != tc.tenant || !bytes.Equal(last.body(), body) {
			t.Errorf("%s: the upstream got tenant %v, body %q", tc.name, tenant, last.body())
		}
	}
}
