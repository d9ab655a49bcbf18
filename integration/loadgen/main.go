// Command loadgen is the load generator of the side-by-side benchmark
// (integration/bench.sh, issue 7). Standard library only.
//
// Load (the default): keeps -conns keep-alive connections busy against a
// loopback URL for -duration (or until -requests are sent), signing every
// request freshly: each body embeds a per-request counter, so every request has
// its own timestamp+body, its own signature and its own replay claim. The
// signing work is the same in every mode, also against plain reverse_proxy, so
// an auth/plain ratio isolates the sidecar:
//
//	-mode signed  sends x-wappchat-key, x-wappchat-timestamp, x-wappchat-signature
//	-mode key     computes the same HMAC but sends only x-wappchat-key
//
// With -rate, the connections together send at most that many requests a
// second (each request waits for its slot), so two arms can be compared at the
// same load: CPU per request then does not depend on how busy each arm ran.
//
// It prints one JSON object: requests/s, p50/p99 latency, errors (non-2xx or
// transport errors). With -pid it also reads that process's CPU seconds
// (utime+stime from /proc/PID/stat) right before and after the run, and its
// resident memory (VmRSS sampled during the run, VmHWM after).
//
// Other roles, so bench.sh needs nothing but Go:
//
//	loadgen -serve 127.0.0.1:9100     the upstream: drains the body, answers 200
//	loadgen -summarize results.jsonl  prints the per-case table from the JSON lines
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	var cfg config
	flag.StringVar(&cfg.url, "url", "", "target URL (loopback hosts only)")
	flag.StringVar(&cfg.mode, "mode", "signed", "signed | key")
	flag.IntVar(&cfg.size, "size", 1024, "body size in bytes (every body is exactly this long, minimum 128)")
	flag.IntVar(&cfg.conns, "conns", 8, "connections kept busy")
	flag.Float64Var(&cfg.rate, "rate", 0, "requests per second over all connections (0: as fast as they answer)")
	flag.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long to run (upper bound, at most 10m)")
	flag.Int64Var(&cfg.requests, "requests", 0, "stop after this many requests (0: run for -duration)")
	flag.StringVar(&cfg.key, "key", "", "integration key (sent in x-wappchat-key)")
	flag.StringVar(&cfg.secret, "secret", "", "integration secret (signed mode; in key mode a placeholder is used if empty)")
	flag.StringVar(&cfg.label, "label", "", "free text copied into the output (case/arm/round)")
	flag.IntVar(&cfg.pid, "pid", 0, "process whose CPU seconds and memory are read around the run")
	flag.Float64Var(&cfg.clkTck, "clk-tck", 100, "clock ticks per second of /proc/PID/stat (getconf CLK_TCK)")
	serve := flag.String("serve", "", "run the benchmark upstream on this loopback address instead")
	summarize := flag.String("summarize", "", "print the summary of a JSONL file of runs instead")
	bare := flag.String("bare-hmac-ns", "", "size=ns/op,... of a bare HMAC-SHA256 (Go benchmark), for -summarize")
	flag.Parse()

	switch {
	case *serve != "":
		log.Fatal(runUpstream(*serve))
	case *summarize != "":
		if err := runSummary(*summarize, *bare); err != nil {
			log.Fatal(err)
		}
	default:
		res, err := runLoad(cfg)
		if err != nil {
			log.Fatal(err)
		}
		out, _ := json.Marshal(res)
		fmt.Println(string(out))
	}
}

type config struct {
	url, mode, key, secret, label string
	size, conns, pid              int
	duration                      time.Duration
	requests                      int64
	clkTck, rate                  float64
}

// Result is one run, one JSON line.
type Result struct {
	Label       string         `json:"label,omitempty"`
	URL         string         `json:"url"`
	Mode        string         `json:"mode"`
	Size        int            `json:"size"`
	Conns       int            `json:"conns"`
	Rate        float64        `json:"rate,omitempty"` // -rate, when paced
	Seconds     float64        `json:"seconds"`
	Requests    int64          `json:"requests"`
	Errors      int64          `json:"errors"`
	RPS         float64        `json:"rps"`
	P50us       float64        `json:"p50_us"`
	P99us       float64        `json:"p99_us"`
	Statuses    map[string]int `json:"statuses"`
	FirstError  string         `json:"first_error,omitempty"`
	CPUSeconds  float64        `json:"cpu_seconds,omitempty"`    // of -pid during the run
	CPUPerReqUs float64        `json:"cpu_per_req_us,omitempty"` // CPUSeconds / Requests
	RSSBeforeKB int64          `json:"rss_before_kb,omitempty"`
	RSSPeakKB   int64          `json:"rss_peak_kb,omitempty"` // highest VmRSS sampled every 10ms during the run
	HWMKB       int64          `json:"hwm_kb,omitempty"`      // VmHWM after the run
}

func checkLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("-url must be an http(s) URL, got %q", raw)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("refusing %q: loopback hosts only (127.0.0.0/8, ::1, localhost)", host)
}

// bodyMaker builds bodies of exactly size bytes, each with its own counter:
// {"event":"lead.created","source":"loadgen","idempotency_key":"w003-000000000042","pad":"xxx..."}
type bodyMaker struct {
	template []byte
	at       int // where the 18-character id starts
}

func newBodyMaker(size int) *bodyMaker {
	head := `{"event":"lead.created","source":"loadgen","idempotency_key":"`
	id := strings.Repeat("0", 18)
	mid := `","pad":"`
	tail := `"}`
	pad := size - len(head) - len(id) - len(mid) - len(tail)
	t := make([]byte, 0, size)
	t = append(t, head...)
	t = append(t, id...)
	t = append(t, mid...)
	t = append(t, bytes.Repeat([]byte("x"), pad)...)
	t = append(t, tail...)
	return &bodyMaker{template: t, at: len(head)}
}

// fill writes the template with worker w's n-th id into dst (len size).
func (m *bodyMaker) fill(dst []byte, w int, n int64) {
	copy(dst, m.template)
	id := fmt.Appendf(nil, "w%03d-%013d", w%1000, n%10_000_000_000_000)
	copy(dst[m.at:], id)
}

func runLoad(cfg config) (*Result, error) {
	if err := checkLoopback(cfg.url); err != nil {
		return nil, err
	}
	if cfg.mode != "signed" && cfg.mode != "key" {
		return nil, fmt.Errorf("-mode must be signed or key")
	}
	if cfg.size < 128 || cfg.size > 64<<20 {
		return nil, fmt.Errorf("-size must be between 128 and 64MiB")
	}
	if cfg.conns < 1 || cfg.conns > 4096 {
		return nil, fmt.Errorf("-conns must be between 1 and 4096")
	}
	if cfg.rate < 0 {
		return nil, fmt.Errorf("-rate must not be negative")
	}
	if cfg.duration <= 0 || cfg.duration > 10*time.Minute {
		return nil, fmt.Errorf("-duration must be in (0, 10m]")
	}
	if cfg.key == "" {
		return nil, fmt.Errorf("-key is required (the same in both arms, so the requests are the same)")
	}
	secret := cfg.secret
	if secret == "" {
		if cfg.mode == "signed" {
			return nil, fmt.Errorf("-secret is required in signed mode")
		}
		secret = "wchat_secret_placeholder_for_the_same_signing_work"
	}

	transport := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxConnsPerHost:     cfg.conns,
		MaxIdleConnsPerHost: cfg.conns,
		MaxIdleConns:        cfg.conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	defer transport.CloseIdleConnections()

	maker := newBodyMaker(cfg.size)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.duration)
	defer cancel()

	res := &Result{Label: cfg.label, URL: cfg.url, Mode: cfg.mode, Size: cfg.size, Conns: cfg.conns, Rate: cfg.rate, Statuses: map[string]int{}}
	var (
		mu        sync.Mutex
		latencies []time.Duration
		sent      atomic.Int64
		slots     atomic.Int64 // with -rate: requests given a send time so far
		errCount  atomic.Int64
		firstErr  atomic.Value
	)
	var stopSampling func()
	if cfg.pid > 0 {
		res.RSSBeforeKB = procStatusKB(cfg.pid, "VmRSS")
		stopSampling = sampleRSS(cfg.pid, &res.RSSPeakKB)
	}
	cpuBefore := procCPUSeconds(cfg.pid, cfg.clkTck)
	// With -requests, every worker waits here so the requests really are concurrent.
	start := make(chan struct{})
	var began time.Time // set before start is closed
	var wg sync.WaitGroup
	for w := 0; w < cfg.conns; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			local := make([]time.Duration, 0, 1024)
			statuses := map[string]int{}
			body := make([]byte, cfg.size)
			var n int64
			<-start
			for ctx.Err() == nil {
				if cfg.requests > 0 && sent.Add(1) > cfg.requests {
					break
				}
				if cfg.rate > 0 {
					slot := began.Add(time.Duration(float64(slots.Add(1)-1) / cfg.rate * float64(time.Second)))
					select {
					case <-ctx.Done():
					case <-time.After(time.Until(slot)):
					}
					if ctx.Err() != nil {
						break
					}
				}
				n++
				maker.fill(body, w, n)
				ts := strconv.FormatInt(time.Now().Unix(), 10)
				mac := hmac.New(sha256.New, []byte(secret))
				mac.Write([]byte(ts))
				mac.Write([]byte{'.'})
				mac.Write(body)
				sig := "sha256=" + hex.EncodeToString(mac.Sum(nil))

				req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.url, bytes.NewReader(body))
				if err != nil {
					log.Fatal(err)
				}
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Wappchat-Key", cfg.key)
				if cfg.mode == "signed" {
					req.Header.Set("X-Wappchat-Timestamp", ts)
					req.Header.Set("X-Wappchat-Signature", sig)
				}
				began := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() != nil {
						break // the run ended while this request was in flight: not counted
					}
					errCount.Add(1)
					statuses["transport_error"]++
					firstErr.CompareAndSwap(nil, err.Error())
					body = make([]byte, cfg.size) // the transport may still hold the old one
					continue
				}
				_, copyErr := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				elapsed := time.Since(began)
				if copyErr != nil && ctx.Err() != nil {
					break
				}
				statuses[strconv.Itoa(resp.StatusCode)]++
				if resp.StatusCode < 200 || resp.StatusCode > 299 || copyErr != nil {
					errCount.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("status %d", resp.StatusCode))
					body = make([]byte, cfg.size) // answered early: the transport may still be writing
				}
				local = append(local, elapsed)
			}
			mu.Lock()
			latencies = append(latencies, local...)
			for k, v := range statuses {
				res.Statuses[k] += v
			}
			mu.Unlock()
		}(w)
	}
	began = time.Now()
	close(start)
	wg.Wait()
	res.Seconds = time.Since(began).Seconds()
	cpuAfter := procCPUSeconds(cfg.pid, cfg.clkTck)
	if stopSampling != nil {
		stopSampling()
		res.HWMKB = procStatusKB(cfg.pid, "VmHWM")
	}

	res.Requests = int64(len(latencies)) + countTransportErrors(res.Statuses)
	res.Errors = errCount.Load()
	if v := firstErr.Load(); v != nil {
		res.FirstError = v.(string)
	}
	res.RPS = float64(len(latencies)) / res.Seconds
	slices.Sort(latencies)
	res.P50us = percentile(latencies, 0.50)
	res.P99us = percentile(latencies, 0.99)
	if cfg.pid > 0 && res.Requests > 0 {
		res.CPUSeconds = cpuAfter - cpuBefore
		res.CPUPerReqUs = res.CPUSeconds / float64(res.Requests) * 1e6
	}
	return res, nil
}

func countTransportErrors(statuses map[string]int) int64 { return int64(statuses["transport_error"]) }

func percentile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	i = max(0, min(i, len(sorted)-1))
	return float64(sorted[i]) / float64(time.Microsecond)
}

// procCPUSeconds is utime+stime of pid (fields 14 and 15 of /proc/PID/stat).
func procCPUSeconds(pid int, clkTck float64) float64 {
	if pid <= 0 {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		log.Fatalf("reading CPU time of pid %d: %v", pid, err)
	}
	// The command name (field 2) may contain spaces; the fields after its ')' are fixed.
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	// fields[0] is field 3 (state), so utime (14) is fields[11], stime (15) fields[12].
	utime, err1 := strconv.ParseFloat(fields[11], 64)
	stime, err2 := strconv.ParseFloat(fields[12], 64)
	if err1 != nil || err2 != nil {
		log.Fatalf("parsing /proc/%d/stat", pid)
	}
	return (utime + stime) / clkTck
}

// procStatusKB reads a "Name:   123 kB" line of /proc/PID/status.
func procStatusKB(pid int, name string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return -1
}

func sampleRSS(pid int, peak *int64) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if v := procStatusKB(pid, "VmRSS"); v > *peak {
				*peak = v
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); <-finished }
}

// runUpstream is the benchmark's upstream, the same for both arms: it reads
// the whole body and answers 200 with a small JSON body.
func runUpstream(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-serve: loopback addresses only")
	}
	reply := []byte(`{"ok":true}`)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(reply)))
		_, _ = w.Write(reply)
	})
	srv := &http.Server{Addr: addr, Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	return srv.ListenAndServe()
}

// runSummary groups runs labelled "case=C arm=A round=R" and prints, per case,
// the median auth/plain throughput ratio with its spread, and CPU per request.
func runSummary(path, bare string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	type arms struct{ auth, plain map[string]*Result }
	cases := map[string]*arms{}
	var order []string
	var totalErrors int64
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return fmt.Errorf("%s: %v", path, err)
		}
		labels := map[string]string{}
		for _, kv := range strings.Fields(r.Label) {
			k, v, _ := strings.Cut(kv, "=")
			labels[k] = v
		}
		c := labels["case"]
		if c == "" || labels["round"] == "" {
			continue
		}
		if cases[c] == nil {
			cases[c] = &arms{auth: map[string]*Result{}, plain: map[string]*Result{}}
			order = append(order, c)
		}
		totalErrors += r.Errors
		rc := r
		if labels["arm"] == "auth" {
			cases[c].auth[labels["round"]] = &rc
		} else {
			cases[c].plain[labels["round"]] = &rc
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	bareNs := map[string]float64{}
	for _, kv := range strings.Split(bare, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			bareNs[k], _ = strconv.ParseFloat(v, 64)
		}
	}

	fmt.Printf("%-12s %6s %22s %11s %11s %11s %11s %13s %9s %9s %7s\n",
		"case", "rounds", "ratio auth/plain", "plain rps", "auth rps", "cpu/req pl", "cpu/req au", "cpu diff (us)",
		"budget", "p99 au", "errors")
	paced := false
	for _, c := range order {
		paced = paced || strings.HasSuffix(c, "/paced")
		a := cases[c]
		var ratios, cpuPlain, cpuAuth, rpsPlain, rpsAuth, p99Auth, diffs []float64
		var errs int64
		var firstErr string
		for round, au := range a.auth {
			pl, ok := a.plain[round]
			if !ok || pl.RPS == 0 {
				continue
			}
			ratios = append(ratios, au.RPS/pl.RPS)
			cpuPlain = append(cpuPlain, pl.CPUPerReqUs)
			cpuAuth = append(cpuAuth, au.CPUPerReqUs)
			diffs = append(diffs, au.CPUPerReqUs-pl.CPUPerReqUs)
			rpsPlain = append(rpsPlain, pl.RPS)
			rpsAuth = append(rpsAuth, au.RPS)
			p99Auth = append(p99Auth, au.P99us)
			errs += au.Errors + pl.Errors
			for _, r := range []*Result{pl, au} {
				if r.Errors > 0 && firstErr == "" {
					firstErr = fmt.Sprintf("%s (statuses %v)", r.FirstError, r.Statuses)
				}
			}
		}
		if len(ratios) == 0 {
			continue
		}
		budget := "-"
		base, _, _ := strings.Cut(c, "/") // "sig64k/paced" has the budget of sig64k
		if ns, ok := bareNs[base]; ok {
			budget = fmt.Sprintf("%.1f", 1.2*ns/1000+20)
		}
		fmt.Printf("%-12s %6d %22s %11.0f %11.0f %11.1f %11.1f %13s %9s %9.0f %7d\n",
			c, len(ratios), fmt.Sprintf("%.3f [%.3f..%.3f]", median(ratios), slices.Min(ratios), slices.Max(ratios)),
			median(rpsPlain), median(rpsAuth), median(cpuPlain), median(cpuAuth),
			fmt.Sprintf("%.1f [%.1f..%.1f]", median(diffs), slices.Min(diffs), slices.Max(diffs)),
			budget, median(p99Auth), errs)
		if firstErr != "" {
			fmt.Printf("%-12s first error: %s\n", "", firstErr)
		}
	}
	fmt.Println("ratio: median [min..max] over rounds of auth rps / plain rps in the same round;")
	fmt.Println("cpu/req: Caddy utime+stime per request (us), median over rounds; cpu diff: auth - plain, median [min..max];")
	fmt.Println("budget: 1.2 x bare HMAC-SHA256 over the body (Go benchmark) + 20 us, for the cpu diff.")
	if paced {
		fmt.Println("CASE/paced: both arms sent at the same fixed rate (-rate): the ratio only shows that both kept")
		fmt.Println("the pace; the cpu diff is the sidecar's cost per request at equal load.")
	}
	if totalErrors > 0 {
		fmt.Printf("ERRORS: %d requests failed (non-2xx or transport)\n", totalErrors)
		return errors.New("errors during the benchmark")
	}
	return nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
