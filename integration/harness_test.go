package integration

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// eventsPath is the seed's endpoint; every request in these tests goes there.
const eventsPath = "/api/whatsapp/automation/events"

// waitLimit bounds every wait (readiness, polling, process exit) so a broken
// build fails the test instead of hanging it; nothing asserts on durations.
const waitLimit = 15 * time.Second

// config is what varies between the sidecars of different tests.
type config struct {
	CacheTTL string   // wappchat cache_ttl; default 5s, as in Caddyfile.example
	Auth     []string // lines of the wappchat_auth block; default those of Caddyfile.example
	Servers  []string // lines of a global servers block, if any
	App      []string // more lines of the wappchat app block (secrets_key, store redis {...}, ...)
	Env      []string // more environment for Caddy and the CLI, as KEY=VALUE
}

var exampleAuth = []string{
	"tenant_header X-Tenant-ID",
	"key_id_header X-WappChat-Key-ID",
	"signatures optional",
	"tolerance 5m",
	"max_body 1MiB",
}

// caddyfileTemplate is Caddyfile.example's site, with loopback ports, files for
// both logs, and the auth placeholders copied into headers the upstream records.
var caddyfileTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	auto_https off
	persist_config off
	log {
		output file {{.Dir}}/debug.log
		level DEBUG
		format filter {
			wrap json
			request>headers>X-Wappchat-Key delete
		}
	}
	wappchat {
		cache_ttl {{.CacheTTL}}
{{- range .App}}
		{{.}}
{{- end}}
	}
{{- if .Servers}}
	servers {
{{- range .Servers}}
		{{.}}
{{- end}}
	}
{{- end}}
}

http://{{.Addr}} {
	log {
		output file {{.Dir}}/access.log
		format filter {
			request>headers>X-Wappchat-Key delete
		}
	}
	wappchat_auth {
{{- range .Auth}}
		{{.}}
{{- end}}
	}
	reverse_proxy {{.Upstream}} {
		header_up X-Seen-User-Id {http.auth.user.id}
		header_up X-Seen-Tenant-Id {http.auth.user.tenant_id}
	}
}
`))

// sidecar is one Caddy process with the plugin in front of one upstream
// process, with its own storage, config and logs, all under dir.
type sidecar struct {
	t         *testing.T
	dir       string
	caddyfile string
	env       []string
	addr      string // where Caddy serves
	url       string // the events endpoint on addr
	upstream  string // the upstream's JSONL log
	caddy     *process
	sent      int          // requests sent so far
	issued    []credential // every raw key and secret handed out
}

// credential is a raw key or secret that must never be written anywhere.
type credential struct {
	kind   string // "key" or "secret"
	value  string
	sha256 string // of the key it belongs to: its record is the one place a secret may be stored
}

// start runs an upstream and a Caddy in front of it; both stop when the test
// ends, and then every file they wrote is searched for leaked credentials.
func start(t *testing.T, cfg config) *sidecar {
	t.Helper()
	s := &sidecar{t: t, dir: t.TempDir()}
	t.Cleanup(s.checkNoLeaks) // registered first, so it runs after both processes stopped
	for _, d := range []string{"data", "config", "home"} {
		if err := os.Mkdir(filepath.Join(s.dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	s.env = append(os.Environ(),
		"XDG_DATA_HOME="+filepath.Join(s.dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(s.dir, "config"),
		"HOME="+filepath.Join(s.dir, "home"),
	)
	s.env = append(s.env, cfg.Env...)
	upstreamAddr := freeAddr(t)
	s.upstream = filepath.Join(s.dir, "upstream.jsonl")
	up := s.launch(t, "upstream", upstreamBin, "-listen", upstreamAddr, "-log", s.upstream)
	t.Cleanup(up.stop)
	up.waitListening(t, upstreamAddr)

	if cfg.CacheTTL == "" {
		cfg.CacheTTL = "5s"
	}
	if cfg.Auth == nil {
		cfg.Auth = exampleAuth
	}
	s.addr = freeAddr(t)
	s.url = "http://" + s.addr + eventsPath
	var caddyfile bytes.Buffer
	err := caddyfileTemplate.Execute(&caddyfile, map[string]any{
		"Admin": freeAddr(t), "Dir": s.dir, "Addr": s.addr, "Upstream": upstreamAddr,
		"CacheTTL": cfg.CacheTTL, "Auth": cfg.Auth, "Servers": cfg.Servers, "App": cfg.App,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.caddyfile = filepath.Join(s.dir, "Caddyfile")
	if err := os.WriteFile(s.caddyfile, caddyfile.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	s.startCaddy(t)
	t.Cleanup(func() { s.caddy.stop() })
	return s
}

func (s *sidecar) startCaddy(t *testing.T) {
	t.Helper()
	s.caddy = s.launch(t, "caddy", caddyBin, "run", "--config", s.caddyfile)
	s.caddy.waitListening(t, s.addr)
}

// restart stops Caddy and starts it again on the same config, storage and logs.
func (s *sidecar) restart(t *testing.T) {
	t.Helper()
	s.caddy.stop()
	s.startCaddy(t)
}

// freeAddr returns a loopback address nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// process is a child whose stdout and stderr are appended to files in the sidecar's dir.
type process struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

func (s *sidecar) launch(t *testing.T, name, bin string, args ...string) *process {
	t.Helper()
	p := &process{t: s.t, name: name, cmd: exec.Command(bin, args...), exited: make(chan struct{})}
	p.cmd.Env = s.env
	p.cmd.Dir = s.dir
	stdout, stderr := s.appendFile(t, name+".stdout"), s.appendFile(t, name+".stderr")
	defer stdout.Close() // the child has its own copies
	defer stderr.Close()
	p.cmd.Stdout, p.cmd.Stderr = stdout, stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	return p
}

func (s *sidecar) appendFile(t *testing.T, name string) *os.File {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(s.dir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// waitListening polls until addr accepts connections, failing if the process dies first.
func (p *process) waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			t.Fatalf("%s exited before listening on %s: %v\n%s", p.name, addr, p.err, p.output())
		default:
		}
		if conn, err := net.Dial("tcp", addr); err == nil {
			conn.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s is not listening on %s\n%s", p.name, addr, p.output())
}

// stop asks the process to quit with SIGINT and kills it if it does not.
func (p *process) stop() { p.stopWith(syscall.SIGINT) }

// stopWith asks the process to quit with sig and kills it if it does not.
func (p *process) stopWith(sig syscall.Signal) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(waitLimit):
		_ = p.cmd.Process.Kill()
		<-p.exited
		p.t.Errorf("%s ignored %v and was killed", p.name, sig)
	}
}

func (p *process) output() string {
	b, _ := os.ReadFile(filepath.Join(p.cmd.Dir, p.name+".stderr"))
	return string(b)
}

// cliResult is one run of `caddy wappchat-keys`.
type cliResult struct {
	stdout, stderr string
	code           int
}

// cli runs `caddy wappchat-keys <args> --config <this Caddyfile>` with the
// sidecar's environment, so it sees exactly the server's storage. Its output
// stays in memory: it is the one place raw keys and secrets may appear.
func (s *sidecar) cli(t *testing.T, args ...string) cliResult {
	t.Helper()
	return s.cliWithInput(t, "", args...)
}

func (s *sidecar) cliWithInput(t *testing.T, stdin string, args ...string) cliResult {
	t.Helper()
	res, err := runCLI(s, stdin, nil, args...)
	if err != nil {
		t.Fatalf("running wappchat-keys %v: %v", args, err)
	}
	return res
}

// runCLI runs `caddy wappchat-keys <args> --config <Caddyfile>` with stdin, as
// user (nil: as this process), from any goroutine; it returns an error only
// when the process could not run.
func runCLI(s *sidecar, stdin string, user *syscall.Credential, args ...string) (cliResult, error) {
	cmd := exec.Command(caddyBin, append(append([]string{"wappchat-keys"}, args...), "--config", s.caddyfile)...)
	cmd.Env = s.env
	cmd.Stdin = strings.NewReader(stdin)
	if user != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: user}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		return cliResult{}, err
	}
	return cliResult{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}, nil
}

// issuedKey is what `wappchat-keys create --json` prints.
type issuedKey struct {
	ID     string `json:"id"`
	Key    string `json:"key"`
	Secret string `json:"secret"`
	Tenant string `json:"tenant"`
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

// createKey creates a key for tenant with the CLI; flags may add --signing,
// --expires and so on.
func (s *sidecar) createKey(t *testing.T, tenant string, flags ...string) issuedKey {
	t.Helper()
	res := s.cli(t, append([]string{"create", "--tenant", tenant, "--json"}, flags...)...)
	if res.code != 0 {
		t.Fatalf("create %v: exit %d\n%s", flags, res.code, res.stderr)
	}
	var k issuedKey
	if err := json.Unmarshal([]byte(res.stdout), &k); err != nil {
		t.Fatalf("create --json printed %q: %v", res.stdout, err)
	}
	if k.ID == "" || k.Key == "" || k.Tenant != tenant || k.SHA256 != sha256Hex(k.Key) {
		t.Fatalf("create --json printed an incomplete key: %s", res.stdout)
	}
	s.remember(k.Key, k.Secret)
	return k
}

// remember records a raw key and its secret (if any) for the leak check.
func (s *sidecar) remember(key, secret string) {
	s.issued = append(s.issued, credential{"key", key, sha256Hex(key)})
	if secret != "" {
		s.issued = append(s.issued, credential{"secret", secret, sha256Hex(key)})
	}
}

// revoke revokes a key with the CLI.
func (s *sidecar) revoke(t *testing.T, id string) {
	t.Helper()
	if res := s.cli(t, "revoke", id); res.code != 0 {
		t.Fatalf("revoke %s: exit %d\n%s", id, res.code, res.stderr)
	}
}

// storageFiles lists the files of the wappchat store, relative to the storage root.
func (s *sidecar) storageFiles(t *testing.T) []string {
	t.Helper()
	root := filepath.Join(s.dir, "data", "caddy")
	var files []string
	err := filepath.WalkDir(filepath.Join(root, "wappchat"), func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(root, path)
			files = append(files, rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// recordPath is the file a key's record lives in.
func (s *sidecar) recordPath(keySHA256 string) string {
	return filepath.Join(s.dir, "data", "caddy", "wappchat", "keys", keySHA256+".json")
}

// checkNoLeaks searches every file the processes wrote (storage, debug log,
// access log, upstream log, stdout, stderr) for every raw key and secret. A
// secret may be in its own key's record only: verifying HMACs needs it.
func (s *sidecar) checkNoLeaks() {
	err := filepath.WalkDir(s.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		content, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, c := range s.issued {
			if bytes.Contains(content, []byte(c.value)) && !(c.kind == "secret" && path == s.recordPath(c.sha256)) {
				s.t.Errorf("a raw %s issued by the test appears in %s", c.kind, path)
			}
		}
		return nil
	})
	if err != nil {
		s.t.Error(err)
	}
}

// request is what a client sends to the events endpoint.
type request struct {
	header http.Header // names exactly as written, repeats allowed
	body   []byte
	// chunked sends the body without Content-Length.
	chunked bool
}

// response is what came back to the request with X-Test-Id id.
type response struct {
	id     string
	status int
	header http.Header
	body   []byte
}

func (s *sidecar) send(t *testing.T, req request) response {
	t.Helper()
	r, err := http.NewRequest(http.MethodPost, s.url, bytes.NewReader(req.body))
	if err != nil {
		t.Fatal(err)
	}
	if req.chunked {
		r.Body = io.NopCloser(bytes.NewReader(req.body))
		r.ContentLength = -1
		r.GetBody = nil
	}
	for name, values := range req.header {
		r.Header[name] = values
	}
	s.sent++
	id := strconv.Itoa(s.sent)
	r.Header.Set("X-Test-Id", id) // finds the request's access log entry
	client := http.Client{Timeout: waitLimit}
	resp, err := client.Do(r)
	if err != nil {
		t.Fatalf("POST %s: %v", s.url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{id, resp.StatusCode, resp.Header, body}
}

// seen is one request as the upstream logged it.
type seen struct {
	Method           string              `json:"method"`
	Path             string              `json:"path"`
	Headers          map[string][]string `json:"headers"`
	BodyBase64       string              `json:"body_base64"`
	ContentLength    int64               `json:"content_length"`
	TransferEncoding []string            `json:"transfer_encoding"`
	Trailers         map[string][]string `json:"trailers"`
}

func (r seen) body() []byte {
	b, _ := base64.StdEncoding.DecodeString(r.BodyBase64)
	return b
}

// header returns the values of every header the upstream got whose name is
// name ignoring case, with '_' read as '-': what a CGI-style backend would merge.
func (r seen) header(name string) []string {
	var values []string
	for k, v := range r.Headers {
		if foldHeader(k) == foldHeader(name) {
			values = append(values, v...)
		}
	}
	return values
}

func foldHeader(name string) string {
	return strings.ReplaceAll(strings.ToLower(name), "_", "-")
}

// upstreamRequests reads the upstream's log: every request that got through.
func (s *sidecar) upstreamRequests(t *testing.T) []seen {
	t.Helper()
	var requests []seen
	for _, line := range readLines(t, s.upstream) {
		var r seen
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("upstream log line %q: %v", line, err)
		}
		requests = append(requests, r)
	}
	return requests
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	complete := b[:bytes.LastIndexByte(b, '\n')+1] // a line being written is not there yet
	if len(complete) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(complete), "\n"), "\n")
}

// accept sends req, which must get 200 from the upstream, and returns what
// the upstream saw.
func (s *sidecar) accept(t *testing.T, req request) seen {
	t.Helper()
	before := len(s.upstreamRequests(t))
	resp := s.send(t, req)
	if resp.status != http.StatusOK {
		t.Fatalf("status %d, want 200: %s", resp.status, resp.body)
	}
	got := s.upstreamRequests(t)
	if len(got) != before+1 {
		t.Fatalf("the upstream logged %d requests, want 1", len(got)-before)
	}
	return got[len(got)-1]
}

// reject sends req, which must be refused with status and code without
// reaching the upstream, and logged once with the code and no credential. It
// returns the request's access log entry.
func (s *sidecar) reject(t *testing.T, req request, status int, code string) map[string]any {
	t.Helper()
	return s.refuse(t, req, status, code, readsBody[code]).entry
}

// rejectAfterReadingBody is reject for a refusal that came after the signed
// body was read whatever its code (a claim that could not be recorded).
func (s *sidecar) rejectAfterReadingBody(t *testing.T, req request, status int, code string) {
	t.Helper()
	s.refuse(t, req, status, code, true)
}

// refusal is what a refused request left: its access log entry and the message the client got.
type refusal struct {
	entry   map[string]any
	message string
}

// refuse does the checks of reject; mayReadBody allows body bytes to have been read.
func (s *sidecar) refuse(t *testing.T, req request, status int, code string, mayReadBody bool) refusal {
	t.Helper()
	upstreamBefore := len(s.upstreamRequests(t))
	logBefore := len(s.rejectionLog(t, code))
	resp := s.send(t, req)
	if resp.status != status {
		t.Errorf("status %d, want %d: %s", resp.status, status, resp.body)
	}
	var body struct{ Error, Message string }
	if err := json.Unmarshal(resp.body, &body); err != nil || body.Error != code || body.Message == "" {
		t.Errorf("body %q, want JSON with error %q and a message", resp.body, code)
	}
	if ct := resp.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if auth := resp.header.Get("WWW-Authenticate"); status == http.StatusUnauthorized && auth != `Bearer realm="wappchat"` {
		t.Errorf("WWW-Authenticate %q on a 401", auth)
	}
	if n := len(s.upstreamRequests(t)) - upstreamBefore; n != 0 {
		t.Errorf("a rejected request reached the upstream %d times", n)
	}
	entry := s.accessEntry(t, resp.id)
	// Caddy counts in bytes_read what handlers read of the body; refusals
	// decided from the headers must not have read any of it.
	if read := entry["bytes_read"]; !mayReadBody && read != 0.0 {
		t.Errorf("the sidecar read %v body bytes before refusing with %s", read, code)
	}
	entries := s.rejectionLog(t, code)
	if len(entries) != logBefore+1 {
		t.Errorf("%d log entries with code %q, want 1", len(entries)-logBefore, code)
		return refusal{entry, body.Message}
	}
	for _, name := range []string{"X-Wappchat-Key", "Authorization", "X-Wappchat-Signature"} {
		for _, v := range headerValues(req.header, name) {
			if len(v) >= 16 && strings.Contains(entries[len(entries)-1], v) {
				t.Errorf("the rejection log entry contains the %s value: %s", name, entries[len(entries)-1])
			}
		}
	}
	return refusal{entry, body.Message}
}

// readsBody are the refusals that may only be decided by reading the body.
var readsBody = map[string]bool{
	"body_too_large": true, "signature_mismatch": true, "invalid_body": true,
	"signature_replayed": true, "replay_capacity": true,
}

func headerValues(h http.Header, name string) []string {
	var values []string
	for k, v := range h {
		if strings.EqualFold(k, name) {
			values = append(values, v...)
		}
	}
	return values
}

// rejectionLog returns the handler's "rejected" debug log lines with code.
// The handler logs before it answers, so the line is there once the client has
// the response.
func (s *sidecar) rejectionLog(t *testing.T, code string) []string {
	t.Helper()
	var lines []string
	for _, line := range readLines(t, filepath.Join(s.dir, "debug.log")) {
		var entry struct{ Logger, Msg, Code string }
		if json.Unmarshal([]byte(line), &entry) == nil &&
			entry.Logger == "http.handlers.wappchat_auth" && entry.Msg == "rejected" && entry.Code == code {
			lines = append(lines, line)
		}
	}
	return lines
}

// accessEntry returns the access log entry of the request with X-Test-Id id,
// polling for it: Caddy writes it after the response has gone out.
func (s *sidecar) accessEntry(t *testing.T, id string) map[string]any {
	t.Helper()
	var found map[string]any
	poll(t, "the access log entry of request "+id, func() bool {
		for _, line := range readLines(t, filepath.Join(s.dir, "access.log")) {
			var entry struct {
				Request struct{ Headers map[string][]string }
			}
			if json.Unmarshal([]byte(line), &entry) == nil && slices.Equal(entry.Request.Headers["X-Test-Id"], []string{id}) {
				return json.Unmarshal([]byte(line), &found) == nil
			}
		}
		return false
	})
	return found
}

// poll calls done until it returns true, failing the test after waitLimit.
func poll(t *testing.T, what string, done func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !done() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// signature is the x-wappchat-signature value for body signed at timestamp.
func signature(secret, timestamp string, body []byte) string {
	return mac(secret, append([]byte(timestamp+"."), body...))
}

// mac is "sha256=" and the hex HMAC-SHA256 of payload.
func mac(secret string, payload []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(payload)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func now() string { return strconv.FormatInt(time.Now().Unix(), 10) }

// signed is a request with key's credential and a valid signature of body.
func signed(k issuedKey, body []byte) request {
	ts := now()
	return request{header: http.Header{
		"X-Wappchat-Key":       {k.Key},
		"X-Wappchat-Timestamp": {ts},
		"X-Wappchat-Signature": {signature(k.Secret, ts, body)},
	}, body: body}
}

// unsigned is a request with only key's credential.
func unsigned(k issuedKey, body []byte) request {
	return request{header: http.Header{"X-Wappchat-Key": {k.Key}}, body: body}
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
