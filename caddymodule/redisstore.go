package caddymodule

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Redis{})
}

// Redis keeps key records, replay claims and change notices in Redis, so
// several sidecars share one set of keys.
type Redis struct {
	// host:port of the server; several for a cluster, or sentinels with MasterName.
	Addresses  []string `json:"addresses,omitempty"`
	MasterName string   `json:"master_name,omitempty"`
	Username   string   `json:"username,omitempty"`
	Password   string   `json:"password,omitempty"`
	DB         int      `json:"db,omitempty"`
	TLS        bool     `json:"tls,omitempty"`
	// Prefix of every key and of the change channel. Default "wappchat:".
	Prefix string `json:"prefix,omitempty"`

	client redis.UniversalClient
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Redis) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "wappchat.stores.redis",
		New: func() caddy.Module { return new(Redis) },
	}
}

// Provision connects lazily: Redis may be down at start and come back later.
func (r *Redis) Provision(ctx caddy.Context) error {
	r.logger = ctx.Logger()
	repl := caddy.NewReplacer()
	if r.Prefix == "" {
		r.Prefix = "wappchat:"
	}
	if len(r.Addresses) == 0 {
		r.Addresses = []string{"127.0.0.1:6379"}
	}
	if len(r.Addresses) > 1 && r.MasterName == "" && !strings.Contains(r.Prefix, "{") {
		return fmt.Errorf("in cluster mode the prefix must hold a hash tag, such as {wappchat}:, so each write stays in one slot")
	}
	opts := &redis.UniversalOptions{
		Addrs:      r.Addresses,
		MasterName: r.MasterName,
		Username:   repl.ReplaceKnown(r.Username, ""),
		Password:   repl.ReplaceKnown(r.Password, ""),
		DB:         r.DB,
		// Fail fast: a refusal (503) is better than holding every request while Redis is down.
		MaxRetries:  1,
		DialTimeout: time.Second,
	}
	if r.TLS {
		opts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	r.client = redis.NewUniversalClient(opts)
	return nil
}

// Cleanup closes the connections.
func (r *Redis) Cleanup() error {
	return r.client.Close()
}

func (r *Redis) recordKey(sha256Hex string) string { return r.Prefix + "key:" + sha256Hex }
func (r *Redis) idKey(id string) string            { return r.Prefix + "id:" + id }
func (r *Redis) tenantKey(tenant string) string    { return r.Prefix + "tenant:" + tenant }
func (r *Redis) allIDsKey() string                 { return r.Prefix + "ids" }
func (r *Redis) sealedWithKey() string             { return r.Prefix + "sealed_with" }
func (r *Redis) channel() string                   { return r.Prefix + "changes" }

// KeyStore implements Backend.
func (r *Redis) KeyStore(sealer Sealer) Store { return &redisKeys{r: r, sealer: sealer} }

// Claims implements Backend: SET NX with an expiry at the window's end, so
// exactly one instance accepts a signed request.
func (r *Redis) Claims() Claims { return redisClaims{r} }

type redisClaims struct{ r *Redis }

func (c redisClaims) Claim(ctx context.Context, id ClaimID, lastValid int64) error {
	// A relative expiry from this sidecar's clock, so Redis's clock cannot shorten it.
	ttl := time.Until(time.Unix(lastValid+1, 0))
	if ttl <= 0 {
		return ErrClaimed // a window already over cannot be claimed: never accept it
	}
	err := c.r.client.SetArgs(ctx, c.r.Prefix+"claim:"+hex.EncodeToString(id[:]), 1, redis.SetArgs{
		Mode: "NX",
		TTL:  ttl,
	}).Err()
	if errors.Is(err, redis.Nil) {
		return ErrClaimed
	}
	return err
}

// Watch implements Backend. It resubscribes after any interruption and says so;
// while unsubscribed, cached records live at most cache_ttl.
func (r *Redis) Watch(ctx context.Context, changed func(string), resync func()) {
	const retry = time.Second
	interrupted := false
	for ctx.Err() == nil {
		if err := r.watchOnce(ctx, changed, resync, interrupted); err != nil && ctx.Err() == nil {
			r.logger.Warn("redis change notices interrupted: cached records now expire by cache_ttl alone; resubscribing", zap.Error(err))
			interrupted = true
			select {
			case <-ctx.Done():
			case <-time.After(retry):
			}
		}
	}
}

func (r *Redis) watchOnce(ctx context.Context, changed func(string), resync func(), interrupted bool) error {
	ps := r.client.Subscribe(ctx, r.channel())
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		return err
	}
	resync()
	if interrupted {
		r.logger.Info("redis change notices resumed; cached records dropped")
	}
	for {
		msg, err := ps.ReceiveTimeout(ctx, 10*time.Second)
		var timeout interface{ Timeout() bool }
		switch {
		case errors.As(err, &timeout) && timeout.Timeout():
			if err := ps.Ping(ctx); err != nil {
				return err
			}
		case err != nil:
			return err
		}
		if m, ok := msg.(*redis.Message); ok {
			changed(m.Payload)
		}
	}
}

// redisKeys is the Store over Redis: one GET per lookup, a set of ids per
// tenant for listing, and writes that are atomic and announced.
type redisKeys struct {
	r      *Redis
	sealer Sealer
}

// writeRecord stores a record and its indexes and announces it; with
// mustBeNew it writes nothing if the hash or id is taken.
var writeRecord = redis.NewScript(`
if ARGV[4] == "1" and (redis.call("EXISTS", KEYS[1]) == 1 or redis.call("EXISTS", KEYS[2]) == 1) then
	return 0
end
redis.call("SET", KEYS[1], ARGV[1])
redis.call("SET", KEYS[2], ARGV[2])
redis.call("SADD", KEYS[3], ARGV[3])
redis.call("SADD", KEYS[4], ARGV[3])
redis.call("PUBLISH", ARGV[5], ARGV[2])
return 1
`)

// Open does nothing: Redis may be down at start and come back; requests then
// get store_unavailable until it does.
func (s *redisKeys) Open(context.Context) error { return nil }

func (s *redisKeys) Lookup(ctx context.Context, sha256Hex string) (*Record, error) {
	if !isHexHash(sha256Hex) {
		return nil, ErrNotFound
	}
	b, err := s.r.client.Get(ctx, s.r.recordKey(sha256Hex)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading key record: %w", err)
	}
	return s.sealer.decode(b, sha256Hex)
}

func (s *redisKeys) Get(ctx context.Context, id string) (*Record, error) {
	sha256Hex, err := s.hashOf(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.Lookup(ctx, sha256Hex)
}

func (s *redisKeys) Create(ctx context.Context, rec *Record) error {
	return s.write(ctx, rec, true)
}

func (s *redisKeys) Put(ctx context.Context, rec *Record) error {
	return s.write(ctx, rec, false)
}

func (s *redisKeys) write(ctx context.Context, rec *Record, mustBeNew bool) error {
	if !isHexHash(rec.SHA256) || !validID(rec.ID) {
		return fmt.Errorf("record has a malformed id or hash")
	}
	b, err := s.sealer.encode(rec)
	if err != nil {
		return err
	}
	flag := "0"
	if mustBeNew {
		flag = "1"
	}
	keys := []string{s.r.recordKey(rec.SHA256), s.r.idKey(rec.ID), s.r.tenantKey(rec.Tenant), s.r.allIDsKey()}
	written, err := writeRecord.Run(ctx, s.r.client, keys, b, rec.SHA256, rec.ID, flag, s.r.channel()).Int()
	if err != nil {
		return fmt.Errorf("writing key record: %w", err)
	}
	if written == 0 {
		return ErrExists
	}
	return nil
}

// Update changes a record under WATCH, retrying when another writer got there first.
func (s *redisKeys) Update(ctx context.Context, id string, change func(*Record) error) (*Record, error) {
	sha256Hex, err := s.hashOf(ctx, id)
	if err != nil {
		return nil, err
	}
	key := s.r.recordKey(sha256Hex)
	for attempt := 0; attempt < 20; attempt++ {
		var updated *Record
		err := s.r.client.Watch(ctx, func(tx *redis.Tx) error {
			b, err := tx.Get(ctx, key).Bytes()
			if errors.Is(err, redis.Nil) {
				return ErrNotFound
			}
			if err != nil {
				return err
			}
			rec, err := s.sealer.decode(b, sha256Hex)
			if err != nil {
				return err
			}
			if err := change(rec); err != nil {
				return err
			}
			encoded, err := s.sealer.encode(rec)
			if err != nil {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, key, encoded, 0)
				p.Publish(ctx, s.r.channel(), sha256Hex)
				return nil
			})
			updated = rec
			return err
		}, key)
		if !errors.Is(err, redis.TxFailedErr) {
			return updated, err
		}
	}
	return nil, fmt.Errorf("updating %s: too many concurrent writers", id)
}

func (s *redisKeys) List(ctx context.Context, tenant string) ([]*Record, error) {
	set := s.r.allIDsKey()
	if tenant != "" {
		set = s.r.tenantKey(tenant)
	}
	ids, err := s.r.client.SMembers(ctx, set).Result()
	if err != nil {
		return nil, fmt.Errorf("listing keys: %w", err)
	}
	records := make([]*Record, 0, len(ids))
	for _, id := range ids {
		rec, err := s.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // an index entry whose record is gone
		}
		if err != nil {
			return nil, err
		}
		records = append(records, rec)
	}
	return records, nil
}

func (s *redisKeys) SealedWith(ctx context.Context) ([]string, error) {
	b, err := s.r.client.Get(ctx, s.r.sealedWithKey()).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var fingerprints []string
	if err := json.Unmarshal(b, &fingerprints); err != nil {
		return nil, fmt.Errorf("%s is corrupted", s.r.sealedWithKey())
	}
	return fingerprints, nil
}

func (s *redisKeys) SetSealedWith(ctx context.Context, fingerprints []string) error {
	b, err := json.Marshal(fingerprints)
	if err != nil {
		return err
	}
	return s.r.client.Set(ctx, s.r.sealedWithKey(), b, 0).Err()
}

func (s *redisKeys) hashOf(ctx context.Context, id string) (string, error) {
	if !validID(id) {
		return "", ErrNotFound
	}
	sha256Hex, err := s.r.client.Get(ctx, s.r.idKey(id)).Result()
	if errors.Is(err, redis.Nil) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("reading key index: %w", err)
	}
	return sha256Hex, nil
}

// Interface guards
var (
	_ caddy.Provisioner  = (*Redis)(nil)
	_ caddy.CleanerUpper = (*Redis)(nil)
	_ Backend            = (*Redis)(nil)
	_ Store              = (*redisKeys)(nil)
	_ Claims             = redisClaims{}
)
