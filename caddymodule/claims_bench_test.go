package caddymodule

import (
	"context"
	"encoding/binary"
	"runtime"
	"testing"
	"time"
)

// BenchmarkMemoryClaimsBytesPerClaim measures what one live replay claim costs
// in memory: defaultReplayCapacity (600k) claims are inserted into a fresh
// NewMemoryClaims, and the Go heap in use (runtime.MemStats.HeapAlloc, after a
// GC on each side) grows by bytes/claim times that count. Run:
//
//	go test -run='^$' -bench=MemoryClaimsBytesPerClaim -benchtime=3x ./caddymodule/
func BenchmarkMemoryClaimsBytesPerClaim(b *testing.B) {
	const count = defaultReplayCapacity
	ctx := context.Background()
	now := func() time.Time { return testNow }
	lastValid := testNow.Unix() + 300
	var perClaim float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		c := NewMemoryClaims(count, now)
		var id ClaimID
		for i := range count {
			binary.LittleEndian.PutUint64(id[:], uint64(i)*0x9e3779b97f4a7c15)
			binary.LittleEndian.PutUint64(id[8:], uint64(i))
			if err := c.Claim(ctx, id, lastValid); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if c.Len() != count {
			b.Fatalf("%d claims held, want %d", c.Len(), count)
		}
		perClaim = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / count
		runtime.KeepAlive(c)
	}
	b.ReportMetric(perClaim, "bytes/claim")
	b.ReportMetric(perClaim*count/(1<<20), "MiB/600k")
}
