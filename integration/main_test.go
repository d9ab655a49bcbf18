// Package integration runs the sidecar as users do: Caddy built with the plugin
// by xcaddy.sh, keys made with its CLI, a real upstream process behind it, and
// real clients (Go, curl, Python, the seed's Node example) in front of it.
package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

var (
	// caddyBin is Caddy with the plugin: built from the working tree unless
	// WAPPCHAT_CADDY_BIN names a binary already built (relative to integration/).
	caddyBin string
	// upstreamBin is ./upstream, the stand-in for the unmodified backend.
	upstreamBin string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	bin, err := buildCaddy()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if _, err := os.Stat(bin); err != nil {
		fmt.Fprintln(os.Stderr, "no caddy binary:", err)
		return 1
	}
	caddyBin = bin
	tmp, err := os.MkdirTemp("", "wappchat-upstream-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	upstreamBin = filepath.Join(tmp, "upstream")
	if out, err := exec.Command("go", "build", "-o", upstreamBin, "./upstream").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the upstream: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

func buildCaddy() (string, error) {
	if bin := os.Getenv("WAPPCHAT_CADDY_BIN"); bin != "" {
		return filepath.Abs(bin)
	}
	if out, err := exec.Command("../xcaddy.sh").CombinedOutput(); err != nil {
		return "", fmt.Errorf("building caddy with ../xcaddy.sh: %v\n%s", err, out)
	}
	return filepath.Abs("../caddy")
}
