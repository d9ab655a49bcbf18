package integration

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// redisPrefix is the prefix every sidecar of these tests gives the Redis store.
const redisPrefix = "t:"

// redisServer is a redis-server from Debian's package, on a loopback port of
// its own, with no persistence but an explicit SAVE, so a restart on the same
// port and dir can find the data again.
type redisServer struct {
	t    *testing.T
	dir  string
	port string
	addr string // 127.0.0.1:port
	proc *process
}

// startRedis runs redis-server for the test and stops it when the test ends.
// A missing redis-server fails the test: CI installs it (.ci/run).
func startRedis(t *testing.T) *redisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server is not installed (Debian package redis-server; .ci/run installs it): %v", err)
	}
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	r := &redisServer{t: t, dir: t.TempDir(), port: port, addr: addr}
	r.start(t)
	t.Cleanup(r.stop)
	return r
}

func (r *redisServer) start(t *testing.T) {
	t.Helper()
	// launch is a sidecar method only for its dir and env; this one is Redis's.
	host := &sidecar{t: r.t, dir: r.dir, env: os.Environ()}
	r.proc = host.launch(t, "redis", "redis-server",
		"--port", r.port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", r.dir)
	deadline := time.Now().Add(waitLimit)
	for {
		select {
		case <-r.proc.exited:
			out, _ := os.ReadFile(filepath.Join(r.dir, "redis.stdout"))
			t.Fatalf("redis-server exited before answering on %s: %v\n%s", r.addr, r.proc.err, out)
		default:
		}
		if v, err := r.try("PING"); err == nil && v == "PONG" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server does not answer PING on %s", r.addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends redis-server (SIGTERM: with --save ” it writes nothing) and waits for it.
func (r *redisServer) stop() { r.proc.stopWith(syscall.SIGTERM) }

// restart snapshots the data (SAVE), stops redis-server, calls down while
// nothing answers on the port, and starts it again on the same port and dir.
func (r *redisServer) restart(t *testing.T, down func()) {
	t.Helper()
	if v := r.do(t, "SAVE"); v != "OK" {
		t.Fatalf("SAVE answered %v", v)
	}
	r.stop()
	if conn, err := net.Dial("tcp", r.addr); err == nil {
		conn.Close()
		t.Fatalf("something still answers on %s after redis-server stopped", r.addr)
	}
	down()
	r.start(t)
}

// appConfig is the wappchat app lines that point a sidecar at this server.
func (r *redisServer) appConfig(more ...string) []string {
	return append([]string{"store redis {", "address " + r.addr, "prefix " + redisPrefix, "}"}, more...)
}

// do runs one command, failing the test if Redis cannot answer it.
func (r *redisServer) do(t *testing.T, args ...string) any {
	t.Helper()
	v, err := r.try(args...)
	if err != nil {
		t.Fatalf("redis %v: %v", args, err)
	}
	return v
}

// try runs one command on a connection of its own, with a tiny RESP client.
func (r *redisServer) try(args ...string) (any, error) {
	conn, err := net.DialTimeout("tcp", r.addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(waitLimit))
	var cmd bytes.Buffer
	fmt.Fprintf(&cmd, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&cmd, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write(cmd.Bytes()); err != nil {
		return nil, err
	}
	return readRESP(bufio.NewReader(conn))
}

// readRESP reads one RESP2 reply: string, error, integer, bulk (nil when
// absent) or array of those.
func readRESP(br *bufio.Reader) (any, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty RESP line")
	}
	switch line[0] {
	case '+':
		return line[1:], nil
	case '-':
		return nil, fmt.Errorf("redis error: %s", line[1:])
	case ':':
		return strconv.ParseInt(line[1:], 10, 64)
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return nil, err
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(br, b); err != nil {
			return nil, err
		}
		return string(b[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return nil, err
		}
		items := make([]any, n)
		for i := range items {
			if items[i], err = readRESP(br); err != nil {
				return nil, err
			}
		}
		return items, nil
	}
	return nil, fmt.Errorf("unexpected RESP line %q", line)
}

// dump returns every key in Redis with its values (a string's value, a set's
// members), found with SCAN.
func (r *redisServer) dump(t *testing.T) map[string][]string {
	t.Helper()
	all := map[string][]string{}
	cursor := "0"
	for {
		reply, ok := r.do(t, "SCAN", cursor, "COUNT", "1000").([]any)
		if !ok || len(reply) != 2 {
			t.Fatalf("SCAN answered %v", reply)
		}
		cursor = reply[0].(string)
		for _, k := range reply[1].([]any) {
			key := k.(string)
			switch typ := r.do(t, "TYPE", key); typ {
			case "string":
				v, _ := r.do(t, "GET", key).(string)
				all[key] = []string{v}
			case "set":
				members, _ := r.do(t, "SMEMBERS", key).([]any)
				all[key] = []string{}
				for _, m := range members {
					all[key] = append(all[key], m.(string))
				}
			case "none": // expired between SCAN and TYPE
			default:
				t.Errorf("redis key %q has type %v, which the store does not write", key, typ)
			}
		}
		if cursor == "0" {
			return all
		}
	}
}

// records returns the key hashes of every record in Redis.
func (r *redisServer) records(t *testing.T) []string {
	t.Helper()
	var hashes []string
	for key := range r.dump(t) {
		if h, ok := strings.CutPrefix(key, redisPrefix+"key:"); ok {
			hashes = append(hashes, h)
		}
	}
	return hashes
}

// checkLeaksAtEnd searches all of Redis, when the test ends and while Redis
// still runs, for the raw keys and secrets the sidecars handed out: a raw key
// may be nowhere, a secret only in its own key's record, and there only when
// sealed is false (no secrets_key). Every key must carry the prefix.
func (r *redisServer) checkLeaksAtEnd(t *testing.T, sealed bool, sidecars ...*sidecar) {
	t.Cleanup(func() {
		if _, err := r.try("PING"); err != nil {
			if !t.Failed() {
				t.Errorf("redis-server is not running at the end of the test: %v", err)
			}
			return
		}
		for key, values := range r.dump(t) {
			if !strings.HasPrefix(key, redisPrefix) {
				t.Errorf("redis key %q lacks the configured prefix %q", key, redisPrefix)
			}
			for _, s := range sidecars {
				for _, c := range s.issued {
					for _, text := range append([]string{key}, values...) {
						if !strings.Contains(text, c.value) {
							continue
						}
						if c.kind == "secret" && !sealed && key == redisPrefix+"key:"+c.sha256 {
							continue
						}
						t.Errorf("a raw %s issued by the test appears in redis key %q", c.kind, key)
					}
				}
			}
		}
	})
}

// caddyfileAdmin is the admin address the harness wrote into the sidecar's Caddyfile.
func (s *sidecar) caddyfileAdmin(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(s.caddyfile)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\tadmin (\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no admin address in %s", s.caddyfile)
	}
	return string(m[1])
}

// callAdmin is one request to an admin API; safe from any goroutine.
func callAdmin(addr, method, path string, body any) (int, []byte, error) {
	var in io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		in = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+addr+path, in)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	client := http.Client{Timeout: waitLimit}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// createViaAdmin creates a key through the admin API at addr; safe from any goroutine.
func createViaAdmin(addr string, req map[string]any) (issuedKey, error) {
	status, out, err := callAdmin(addr, http.MethodPost, "/wappchat/keys", req)
	if err != nil {
		return issuedKey{}, err
	}
	if status != http.StatusCreated {
		return issuedKey{}, fmt.Errorf("POST /wappchat/keys %v: status %d: %s", req, status, out)
	}
	var k issuedKey
	if err := json.Unmarshal(out, &k); err != nil {
		return issuedKey{}, fmt.Errorf("POST /wappchat/keys answered %q: %v", out, err)
	}
	return k, nil
}

// revokeViaAdmin revokes a key through the admin API at addr; safe from any goroutine.
func revokeViaAdmin(addr, id string) error {
	status, out, err := callAdmin(addr, http.MethodDelete, "/wappchat/keys/"+id, nil)
	if err != nil {
		return err
	}
	var rec struct {
		ID        string     `json:"id"`
		RevokedAt *time.Time `json:"revoked_at"`
	}
	if status != http.StatusOK || json.Unmarshal(out, &rec) != nil || rec.ID != id || rec.RevokedAt == nil {
		return fmt.Errorf("DELETE /wappchat/keys/%s: status %d: %s", id, status, out)
	}
	return nil
}

// rememberEverywhere makes every sidecar's leak check look for the key and secret.
func rememberEverywhere(k issuedKey, sidecars ...*sidecar) {
	for _, s := range sidecars {
		s.remember(k.Key, k.Secret)
	}
}

// guardSecretsKey makes the leak checks (files and Redis) look for a
// secrets_key value too: it may be nowhere, not even in a record.
func guardSecretsKey(value string, sidecars ...*sidecar) {
	for _, s := range sidecars {
		s.issued = append(s.issued, credential{"secrets_key", value, ""})
	}
}

// keySummary is one entry of `wappchat-keys list --json`.
type keySummary struct {
	ID        string     `json:"id"`
	Tenant    string     `json:"tenant"`
	SHA256    string     `json:"sha256"`
	RevokedAt *time.Time `json:"revoked_at"`
	Signing   bool       `json:"signing"`
}

// listAllKeys is `wappchat-keys list --all --json` run against the sidecar.
func (s *sidecar) listAllKeys(t *testing.T) []keySummary {
	t.Helper()
	res := s.cli(t, "list", "--all", "--json")
	if res.code != 0 {
		t.Fatalf("list --all --json: exit %d\n%s", res.code, res.stderr)
	}
	var out []keySummary
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatalf("list --all --json printed %q: %v", res.stdout, err)
	}
	return out
}

// status sends req and returns the status and the error code of a refusal.
func (s *sidecar) statusOf(t *testing.T, req request) (int, string) {
	t.Helper()
	resp := s.send(t, req)
	var body struct{ Error string }
	_ = json.Unmarshal(resp.body, &body)
	return resp.status, body.Error
}

// pollWithin is poll with a bound of its own, for what the issue bounds
// (a revocation reaches every instance within one second).
func pollWithin(t *testing.T, limit time.Duration, what string, done func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !done() {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen within %v", what, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// loggerMessages returns the msg of every debug log line of the sidecar
// whose logger is logger, in order.
func (s *sidecar) loggerMessages(t *testing.T, logger string) []string {
	t.Helper()
	var msgs []string
	for _, line := range readLines(t, filepath.Join(s.dir, "debug.log")) {
		var entry struct{ Logger, Msg string }
		if json.Unmarshal([]byte(line), &entry) == nil && entry.Logger == logger {
			msgs = append(msgs, entry.Msg)
		}
	}
	return msgs
}

// newRawKey is a key in the format the CLI issues, made by the test, for import.
func newRawKey(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "wchat_live_" + base64.RawURLEncoding.EncodeToString(b)
}

// secretsKey is a fresh secrets_key value.
func redisSecretsKey(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}
