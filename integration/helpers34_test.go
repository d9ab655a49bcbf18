package integration

// Helpers for the admin API, audit, metrics, replay, rotation and
// secrets-at-rest tests (issues 3 and 4).

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// adminEndpoint is the admin address the harness wrote into the Caddyfile.
func (s *sidecar) adminEndpoint(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(s.caddyfile)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*admin\s+(\S+)\s*$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no admin address in %s", s.caddyfile)
	}
	return string(m[1])
}

// adminResponse is what the admin endpoint answered.
type adminResponse struct {
	status int
	header http.Header
	body   []byte
}

// admin sends one request to the running server's admin endpoint.
func (s *sidecar) adminDo(t *testing.T, method, path, body string) adminResponse {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+s.adminEndpoint(t)+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	client := http.Client{Timeout: waitLimit}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s on the admin endpoint: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return adminResponse{resp.StatusCode, resp.Header, b}
}

// keyRecord is a record as the admin API and `list --json` show it, plus the
// raw key and secret of a 201 / rotate answer.
type keyRecord struct {
	ID        string       `json:"id"`
	Tenant    string       `json:"tenant"`
	Name      string       `json:"name"`
	SHA256    string       `json:"sha256"`
	CreatedAt time.Time    `json:"created_at"`
	RevokedAt *time.Time   `json:"revoked_at"`
	ExpiresAt *time.Time   `json:"expires_at"`
	Signing   bool         `json:"signing"`
	Secrets   []secretInfo `json:"secrets"`
	Key       string       `json:"key"`
	Secret    string       `json:"secret"`
}

type secretInfo struct {
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at"`
}

func (r keyRecord) issued() issuedKey {
	return issuedKey{ID: r.ID, Key: r.Key, Secret: r.Secret, Tenant: r.Tenant, Name: r.Name, SHA256: r.SHA256}
}

// decodeRecord reads one record, failing if it carries a secret's value in any form.
func decodeRecord(t *testing.T, what string, b []byte) keyRecord {
	t.Helper()
	var rec keyRecord
	if err := json.Unmarshal(b, &rec); err != nil || rec.ID == "" {
		t.Fatalf("%s: not a record (%v): %s", what, err, b)
	}
	expectNoSecretFields(t, what, b)
	return rec
}

// decodeRecords reads a JSON array of records (never null).
func decodeRecords(t *testing.T, what string, b []byte) []keyRecord {
	t.Helper()
	var recs []keyRecord
	if err := json.Unmarshal(b, &recs); err != nil || recs == nil {
		t.Fatalf("%s: not a JSON array of records (%v): %s", what, err, b)
	}
	expectNoSecretFields(t, what, b)
	for _, r := range recs {
		if r.Key != "" || r.Secret != "" {
			t.Errorf("%s: a listed record carries a key or secret", what)
		}
	}
	return recs
}

// expectNoSecretFields fails if any object in b has a field holding a secret's value.
func expectNoSecretFields(t *testing.T, what string, b []byte) {
	t.Helper()
	for _, field := range []string{`"value"`, `"sealed"`} {
		if bytes.Contains(b, []byte(field)) {
			t.Errorf("%s shows a secret's %s: %s", what, field, b)
		}
	}
}

func ids(recs []keyRecord) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.ID)
	}
	sort.Strings(out)
	return out
}

// adminCreate creates a key with POST /wappchat/keys, expecting 201, and remembers it.
func (s *sidecar) apiCreate(t *testing.T, body string) keyRecord {
	t.Helper()
	resp := s.adminDo(t, http.MethodPost, "/wappchat/keys", body)
	if resp.status != http.StatusCreated {
		t.Fatalf("POST /wappchat/keys %s: status %d, want 201: %s", body, resp.status, resp.body)
	}
	var rec keyRecord
	if err := json.Unmarshal(resp.body, &rec); err != nil || rec.ID == "" {
		t.Fatalf("POST /wappchat/keys answered %s: %v", resp.body, err)
	}
	if rec.Key != "" {
		s.remember(rec.Key, rec.Secret)
	}
	return rec
}

// expectAPIError checks a JSON error answer of the admin API.
func expectAPIError(t *testing.T, what string, resp adminResponse, status int, code string) {
	t.Helper()
	var body struct{ Error, Message string }
	if resp.status != status {
		t.Errorf("%s: status %d, want %d: %s", what, resp.status, status, resp.body)
	}
	if err := json.Unmarshal(resp.body, &body); err != nil || body.Error != code || body.Message == "" {
		t.Errorf("%s: body %s, want JSON with error %q and a message", what, resp.body, code)
	}
	if ct := resp.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q, want application/json", what, ct)
	}
}

// listJSON runs `wappchat-keys list --json` with more args and returns the records and stderr.
func (s *sidecar) listJSON(t *testing.T, args ...string) ([]keyRecord, string) {
	t.Helper()
	res := s.cli(t, append([]string{"list", "--json"}, args...)...)
	if res.code != 0 {
		t.Fatalf("list --json %v: exit %d\n%s", args, res.code, res.stderr)
	}
	s.expectNoCredential(t, "list --json", []byte(res.stdout))
	return decodeRecords(t, "list --json", []byte(res.stdout)), res.stderr
}

// cliJSON runs a CLI command that prints one record with --json and remembers its secret.
func (s *sidecar) cliJSON(t *testing.T, args ...string) (keyRecord, cliResult) {
	t.Helper()
	res := s.cli(t, append(args, "--json")...)
	if res.code != 0 {
		t.Fatalf("%v: exit %d\n%s", args, res.code, res.stderr)
	}
	var rec keyRecord
	if err := json.Unmarshal([]byte(res.stdout), &rec); err != nil || rec.ID == "" {
		t.Fatalf("%v --json printed %q: %v", args, res.stdout, err)
	}
	expectNoSecretFields(t, strings.Join(args, " "), []byte(res.stdout))
	return rec, res
}

const (
	viaAdmin = "using the running server's admin API"
	viaStore = "using the key store directly"
)

// expectVia checks which way the CLI said it went.
func expectVia(t *testing.T, what string, res cliResult, want string) {
	t.Helper()
	if !strings.Contains(res.stderr, want) {
		t.Errorf("%s: stderr %q, want it to say %q", what, res.stderr, want)
	}
}

// logEntry is one line of the debug log.
type logEntry map[string]any

func (e logEntry) str(name string) string { s, _ := e[name].(string); return s }

// handlerLog returns the wappchat_auth handler's entries with msg.
func (s *sidecar) handlerLog(t *testing.T, msg string) []logEntry {
	t.Helper()
	var entries []logEntry
	for _, line := range readLines(t, filepath.Join(s.dir, "debug.log")) {
		var e logEntry
		if json.Unmarshal([]byte(line), &e) == nil && e.str("logger") == "http.handlers.wappchat_auth" && e.str("msg") == msg {
			entries = append(entries, e)
		}
	}
	return entries
}

// debugLog returns every entry of the debug log.
func (s *sidecar) debugLog(t *testing.T) []logEntry {
	t.Helper()
	var entries []logEntry
	for _, line := range readLines(t, filepath.Join(s.dir, "debug.log")) {
		var e logEntry
		if json.Unmarshal([]byte(line), &e) == nil {
			entries = append(entries, e)
		}
	}
	return entries
}

// sample is one line of Prometheus' text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$`)
var labelPair = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// metrics reads the admin endpoint's /metrics.
func (s *sidecar) metrics(t *testing.T) []sample {
	t.Helper()
	resp := s.adminDo(t, http.MethodGet, "/metrics", "")
	if resp.status != http.StatusOK {
		t.Fatalf("GET /metrics: status %d: %s", resp.status, resp.body)
	}
	var out []sample
	sc := bufio.NewScanner(bytes.NewReader(resp.body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("unparsable /metrics line %q", line)
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		labels := map[string]string{}
		for _, p := range labelPair.FindAllStringSubmatch(m[2], -1) {
			labels[p[1]] = p[2]
		}
		out = append(out, sample{m[1], labels, v})
	}
	return out
}

// findSamples returns the samples named name whose labels include want.
func findSamples(samples []sample, name string, want map[string]string) []sample {
	var out []sample
	for _, smp := range samples {
		if smp.name != name {
			continue
		}
		ok := true
		for k, v := range want {
			if smp.labels[k] != v {
				ok = false
			}
		}
		if ok {
			out = append(out, smp)
		}
	}
	return out
}

// freshSecretsKey is a fresh secrets_key: 32 random bytes, base64.
func freshSecretsKey() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// rememberSecretsKeys registers secrets keys for the leak check: like raw keys,
// they must not be written anywhere.
func (s *sidecar) rememberSecretsKeys(keys ...string) {
	for _, k := range keys {
		s.issued = append(s.issued, credential{kind: "secrets key", value: k})
	}
}

// setEnv sets (or, with value "", removes) a variable for later launches and CLI runs.
func (s *sidecar) setEnv(name, value string) {
	var env []string
	for _, kv := range s.env {
		if !strings.HasPrefix(kv, name+"=") {
			env = append(env, kv)
		}
	}
	if value != "" {
		env = append(env, name+"="+value)
	}
	s.env = env
}

// startFails starts Caddy on the current config and environment, expecting it
// to exit non-zero without ever serving; it returns what this run printed on
// stderr and stdout and wrote to the debug log (once the config's logging is
// set up, Caddy writes its start-up error there instead of to stderr).
func (s *sidecar) startFails(t *testing.T) string {
	t.Helper()
	stderr := filepath.Join(s.dir, "caddy.stderr")
	stdout := filepath.Join(s.dir, "caddy.stdout")
	debug := filepath.Join(s.dir, "debug.log")
	offErr, offOut, offDebug := fileSize(stderr), fileSize(stdout), fileSize(debug)
	p := s.launch(t, "caddy", caddyBin, "run", "--config", s.caddyfile)
	s.caddy = p
	select {
	case <-p.exited:
	case <-time.After(waitLimit):
		t.Fatalf("caddy kept running; want it to refuse to start")
	}
	out := tail(t, stderr, offErr) + tail(t, stdout, offOut) + tail(t, debug, offDebug)
	if p.cmd.ProcessState.ExitCode() == 0 {
		t.Errorf("caddy exited 0; want a non-zero exit\n%s", out)
	}
	return out
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func tail(t *testing.T, path string, offset int64) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b[offset:])
}

// sealMarker is the store's list of secrets-key fingerprints (README: wappchat/secrets_keys.json).
func (s *sidecar) sealMarker(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, "data", "caddy", "wappchat", "secrets_keys.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var fps []string
	if err := json.Unmarshal(b, &fps); err != nil {
		t.Fatalf("secrets_keys.json is %q: %v", b, err)
	}
	return fps
}

// filesContaining lists the files under dir whose bytes contain value.
func filesContaining(t *testing.T, dir string, value []byte) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, value) {
			found = append(found, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// expectSecretsNotStored fails if any secret, raw or base64/hex-encoded, is
// anywhere under the storage directory (the record included).
func (s *sidecar) expectSecretsNotStored(t *testing.T, secrets ...string) {
	t.Helper()
	storage := filepath.Join(s.dir, "data")
	for _, secret := range secrets {
		for _, form := range []string{secret, base64.StdEncoding.EncodeToString([]byte(secret)), base64.RawURLEncoding.EncodeToString([]byte(secret))} {
			if files := filesContaining(t, storage, []byte(form)); len(files) > 0 {
				t.Errorf("a secret is stored readable (as %.20q...) in %q", form, files)
			}
		}
	}
}

// counter gives request bodies of their own, so no two signed requests repeat.
var counter int

func fresh(name string) []byte {
	counter++
	return variant(name + "-" + strconv.Itoa(counter))
}

// randomHex is n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// rejectReplayed is reject for signature_replayed; it returns the message the client got.
func (s *sidecar) rejectReplayed(t *testing.T, req request) string {
	t.Helper()
	return s.refuse(t, req, http.StatusUnauthorized, "signature_replayed", true).message
}
