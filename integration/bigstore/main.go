// Command bigstore builds and measures a large file-system key store (issue 7:
// "a store holding 1,000,000 keys: start-up time and memory do not depend on
// the count; a cold lookup p99 under 1 ms with the file-system store").
//
//	bigstore -gen -dir /tmp/big -n 1000000
//	    writes n records the way StorageStore does over Caddy's file_system
//	    storage: <dir>/wappchat/keys/<sha256>.json (the JSON of a Record, as
//	    Sealer.encode writes it without a secrets key) and <dir>/wappchat/ids/<id>
//	    (the hash), plus the store marker wappchat/store.json. Record i belongs to
//	    the raw key RawKey(i) ("wchat_live_bigstore" + 12 digits), so a client can
//	    use any of them; every record has one secret, "wchat_secret_bigstore" + i.
//	    Files are written in parallel directly (no locks, no Exists checks):
//	    a million StorageStore.Create calls would take much longer.
//
//	bigstore -lookup -dir /tmp/big -n 1000000 -samples 20000 [-drop-caches]
//	    times StorageStore.Lookup (read + JSON decode, no cache) on random existing
//	    keys and random unknown hashes, one at a time, and prints p50/p99/p99.9/max.
//	    -drop-caches writes 3 to /proc/sys/vm/drop_caches first (root only), so
//	    the lookups start with a cold page cache (dentries, inodes, blocks).
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/wappchat/caddy-wappchat-auth/caddymodule"
)

// RawKey is the integration key of record i.
func RawKey(i int) string { return fmt.Sprintf("wchat_live_bigstore%012d", i) }

func recordID(i int) string {
	sum := sha256.Sum256([]byte("bigstore id " + strconv.Itoa(i)))
	return "key_" + hex.EncodeToString(sum[:12])
}

func main() {
	gen := flag.Bool("gen", false, "write the records")
	lookup := flag.Bool("lookup", false, "time StorageStore.Lookup")
	dir := flag.String("dir", "", "storage root (Caddy's `storage file_system <dir>`)")
	n := flag.Int("n", 1_000_000, "number of records")
	workers := flag.Int("workers", 2*runtime.NumCPU(), "parallel writers (-gen)")
	samples := flag.Int("samples", 20000, "lookups per class (-lookup)")
	drop := flag.Bool("drop-caches", false, "drop the page cache before the lookups (root)")
	flag.Parse()
	if *dir == "" {
		log.Fatal("-dir is required")
	}
	switch {
	case *gen:
		if err := generate(*dir, *n, *workers); err != nil {
			log.Fatal(err)
		}
	case *lookup:
		if err := measure(*dir, *n, *samples, *drop); err != nil {
			log.Fatal(err)
		}
	default:
		log.Fatal("one of -gen or -lookup")
	}
}

func generate(dir string, n, workers int) error {
	keys := filepath.Join(dir, "wappchat", "keys")
	ids := filepath.Join(dir, "wappchat", "ids")
	for _, d := range []string{keys, ids} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "wappchat", "store.json"), []byte(`{"wappchat":"key store"}`), 0o600); err != nil {
		return err
	}
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	start := time.Now()
	var next, done atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				rec := caddymodule.Record{
					ID:        recordID(i),
					Tenant:    "tenant-" + strconv.Itoa(i%1000),
					Name:      "bigstore " + strconv.Itoa(i),
					SHA256:    caddymodule.HashKey(RawKey(i)),
					CreatedAt: created,
					Secrets:   []caddymodule.Secret{{Value: "wchat_secret_bigstore" + strconv.Itoa(i), CreatedAt: created}},
				}
				b, err := json.Marshal(&rec)
				if err == nil {
					err = os.WriteFile(filepath.Join(ids, rec.ID), []byte(rec.SHA256), 0o600)
				}
				if err == nil {
					err = os.WriteFile(filepath.Join(keys, rec.SHA256+".json"), b, 0o600)
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				if d := done.Add(1); d%100000 == 0 {
					log.Printf("%d records, %.0f/s", d, float64(d)/time.Since(start).Seconds())
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	log.Printf("wrote %d records in %s", n, time.Since(start).Round(time.Millisecond))
	return nil
}

func measure(dir string, n, samples int, drop bool) error {
	store := caddymodule.NewStorageStore(&certmagic.FileStorage{Path: dir}, caddymodule.Sealer{})
	ctx := context.Background()
	if err := store.Open(ctx); err != nil {
		return err
	}
	if drop {
		if err := dropCaches(); err != nil {
			return fmt.Errorf("dropping the page cache: %w", err)
		}
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	// Interleave existing and unknown lookups so both see the same cache state.
	var existing, unknown []time.Duration
	for range samples {
		i := rng.IntN(n)
		h := caddymodule.HashKey(RawKey(i))
		t := time.Now()
		rec, err := store.Lookup(ctx, h)
		existing = append(existing, time.Since(t))
		if err != nil || rec.ID != recordID(i) {
			return fmt.Errorf("lookup of record %d: %v", i, err)
		}
		var b [32]byte
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		h = hex.EncodeToString(b[:])
		t = time.Now()
		_, err = store.Lookup(ctx, h)
		unknown = append(unknown, time.Since(t))
		if !errors.Is(err, caddymodule.ErrNotFound) {
			return fmt.Errorf("lookup of an unknown hash: %v", err)
		}
	}
	report := func(name string, d []time.Duration) {
		slices.Sort(d)
		q := func(p float64) float64 {
			return float64(d[min(len(d)-1, int(p*float64(len(d))))].Microseconds())
		}
		fmt.Printf("%-8s n=%d p50 %.0f us  p90 %.0f us  p99 %.0f us  p99.9 %.0f us  max %.0f us\n",
			name, len(d), q(0.50), q(0.90), q(0.99), q(0.999), float64(d[len(d)-1].Microseconds()))
	}
	fmt.Printf("StorageStore.Lookup over %d records in %s (page cache dropped first: %v)\n", n, dir, drop)
	report("existing", existing)
	report("unknown", unknown)
	return nil
}

func dropCaches() error {
	f, err := os.OpenFile("/proc/sys/vm/drop_caches", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString("3\n")
	return err
}
