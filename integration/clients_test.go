package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// seedBody is what the seed's Node example sends: its JSON.stringify output.
const seedBody = `{"event":"lead.created","source":"my-crm","idempotency_key":"lead.created:lead_123","contact":{"name":"Alex","phone":"919999999999"},"payload":{"service":"demo"}}`

// Real clients sign the way the product doc says, and get through: the seed's
// Node example unchanged but for URL, key and secret; a Python hmac client; curl.
func TestRealClients(t *testing.T) {
	s := start(t, config{})
	k := s.createKey(t, "tenant-clients", "--signing")
	body := func(client string) string { return `{"event":"order.paid","amount":"12.50","client":"` + client + `"}` }
	clients := []struct {
		tool    string
		args    func() []string
		body    string
		printed string // what it must print; the Node example prints nothing
	}{
		{"node", func() []string { return []string{seedExample(t, s.url, k)} }, seedBody, ""},
		{"python3", func() []string { return []string{"testdata/sign.py", s.url, k.Key, k.Secret, body("python")} }, body("python"), "200"},
		{"curl", func() []string {
			ts := now()
			return []string{"-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
				"-H", "Content-Type: application/json",
				"-H", "x-wappchat-key: " + k.Key,
				"-H", "x-wappchat-timestamp: " + ts,
				"-H", "x-wappchat-signature: " + signature(k.Secret, ts, []byte(body("curl"))),
				"--data-binary", body("curl"), s.url}
		}, body("curl"), "200"},
	}
	for _, c := range clients {
		t.Run(c.tool, func(t *testing.T) {
			if _, err := exec.LookPath(c.tool); err != nil {
				t.Fatalf("%s is needed to run this test: %v", c.tool, err)
			}
			before := len(s.upstreamRequests(t))
			out, err := exec.Command(c.tool, c.args()...).CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != c.printed {
				t.Fatalf("%s: %v, printed %q, want %q", c.tool, err, out, c.printed)
			}
			got := s.upstreamRequests(t)
			if len(got) != before+1 {
				t.Fatalf("the upstream got %d requests from %s, want 1", len(got)-before, c.tool)
			}
			last := got[len(got)-1]
			if last.Method != "POST" || last.Path != eventsPath || !bytes.Equal(last.body(), []byte(c.body)) {
				t.Errorf("the upstream got %s %s %q", last.Method, last.Path, last.body())
			}
			expectIdentity(t, last, "X-Tenant-ID", k.Tenant, "X-WappChat-Key-ID", k.ID)
		})
	}
}

// seedExample writes testdata/seed_example.mjs, which is the product doc's
// Node example verbatim, with only its URL, key and secret replaced, to a
// directory outside the sidecar's (the copy holds the raw key), and returns its path.
func seedExample(t *testing.T, url string, k issuedKey) string {
	t.Helper()
	src, err := os.ReadFile("testdata/seed_example.mjs")
	if err != nil {
		t.Fatal(err)
	}
	script := string(src)
	for placeholder, value := range map[string]string{
		"https://wapp.chat/api/whatsapp/automation/events": url,
		"<integration-api-key>":                            k.Key,
		"<integration-secret>":                             k.Secret,
	} {
		if strings.Count(script, placeholder) != 1 {
			t.Fatalf("the seed example should contain %q once", placeholder)
		}
		script = strings.Replace(script, placeholder, value, 1)
	}
	path := filepath.Join(t.TempDir(), "seed_example.mjs")
	if err := os.WriteFile(path, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
