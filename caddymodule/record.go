package caddymodule

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// KeyPrefix starts every key this sidecar issues; imported legacy keys may differ.
const KeyPrefix = "wchat_live_"

const (
	secretPrefix = "wchat_secret_"
	idPrefix     = "key_"
	randomBytes  = 32
	maxTenantLen = 128
	maxNameLen   = 200
)

// Record is what the store keeps about one integration key: never the key itself.
type Record struct {
	ID        string     `json:"id"`
	Tenant    string     `json:"tenant"`
	Name      string     `json:"name,omitempty"`
	SHA256    string     `json:"sha256"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	Secrets   []Secret   `json:"secrets,omitempty"`
}

// Secret is an integration secret: the HMAC key is the bytes of Value. At rest,
// with a secrets key configured, Value is empty and Sealed holds it encrypted.
type Secret struct {
	Value     string        `json:"value,omitempty"`
	Sealed    *SealedSecret `json:"sealed,omitempty"`
	CreatedAt time.Time     `json:"created_at"`
	ExpiresAt *time.Time    `json:"expires_at,omitempty"` // set when rotated out: the end of its grace
}

// Check refuses a key that is revoked or past its expiry.
func (r *Record) Check(now time.Time) *Rejection {
	if r.RevokedAt != nil {
		return ErrKeyRevoked
	}
	if r.ExpiresAt != nil && !now.Before(*r.ExpiresAt) {
		return ErrKeyExpired
	}
	return nil
}

func (r *Record) liveSecrets(now time.Time) []Secret {
	var live []Secret
	for _, s := range r.Secrets {
		if s.ExpiresAt == nil || now.Before(*s.ExpiresAt) {
			live = append(live, s)
		}
	}
	return live
}

// AddSecret adds a new secret to r and returns its value. Secrets already live
// stay valid until now+grace (or their own earlier end); expired ones are dropped.
func (r *Record) AddSecret(now time.Time, grace time.Duration) string {
	retire := now.Add(grace).UTC()
	live := r.liveSecrets(now)
	for i := range live {
		if live[i].ExpiresAt == nil || live[i].ExpiresAt.After(retire) {
			live[i].ExpiresAt = &retire
		}
	}
	if grace <= 0 {
		live = nil
	}
	value := newSecret()
	r.Secrets = append(live, Secret{Value: value, CreatedAt: now.UTC()})
	return value
}

func newSecret() string {
	return secretPrefix + randomToken(randomBytes, base64.RawURLEncoding.EncodeToString)
}

// Key is a record prepared for the request path: one SecretMAC per secret,
// built once while the record is cached.
type Key struct {
	*Record
	macs []*SecretMAC // macs[i] verifies Record.Secrets[i]
	// ID and Tenant boxed once for the replacer, which stores values as any:
	// boxing a string there allocates on every request.
	idValue, tenantValue any
}

// NewKey prepares rec for verifying requests.
func NewKey(rec *Record) *Key {
	k := &Key{Record: rec, macs: make([]*SecretMAC, len(rec.Secrets)), idValue: rec.ID, tenantValue: rec.Tenant}
	for i, s := range rec.Secrets {
		k.macs[i] = NewSecretMAC([]byte(s.Value))
	}
	return k
}

// Signing reports whether the key must sign: it has, or had, a secret. A key
// whose secrets all expired is refused, never treated as unsigned.
func (k *Key) Signing() bool { return len(k.Secrets) > 0 }

// VerifySignature checks a signature against the secrets live at now.
func (k *Key) VerifySignature(now time.Time, signed SignedHeaders, body []byte) *Rejection {
	var live [4]*SecretMAC // rotation keeps a handful at most; more spill to the heap
	macs := live[:0]
	for i, s := range k.Secrets {
		if s.ExpiresAt == nil || now.Before(*s.ExpiresAt) {
			macs = append(macs, k.macs[i])
		}
	}
	return VerifySignature(macs, signed, body)
}

// Summary is a record as shown to operators: no secret values.
type Summary struct {
	ID        string     `json:"id"`
	Tenant    string     `json:"tenant"`
	Name      string     `json:"name,omitempty"`
	SHA256    string     `json:"sha256"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	Signing   bool       `json:"signing"` // must sign: has (or had) a secret
	// Secrets are the live secrets' dates, never their values.
	Secrets []SecretInfo `json:"secrets"`
}

// SecretInfo describes a live secret without its value.
type SecretInfo struct {
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// Summary describes r without its secrets' values.
func (r *Record) Summary() Summary {
	secrets := []SecretInfo{}
	for _, s := range r.liveSecrets(time.Now()) {
		secrets = append(secrets, SecretInfo{CreatedAt: s.CreatedAt, ExpiresAt: s.ExpiresAt})
	}
	return Summary{
		ID: r.ID, Tenant: r.Tenant, Name: r.Name, SHA256: r.SHA256,
		CreatedAt: r.CreatedAt, RevokedAt: r.RevokedAt, ExpiresAt: r.ExpiresAt,
		Signing: len(r.Secrets) > 0, Secrets: secrets,
	}
}

// Issued is a freshly created key: the only moment its raw key and secret exist.
type Issued struct {
	Record *Record
	Key    string
	Secret string
}

// NewRecordSpec describes a key to create or import.
type NewRecordSpec struct {
	Tenant  string
	Name    string
	Signing bool
	Expires time.Duration // 0: never
	SHA256  string        // import only: hex SHA-256 of a key issued elsewhere
	Secret  string        // import only: an existing integration secret
}

// Issue builds a record from spec, generating the key (unless imported) and the secret.
func Issue(spec NewRecordSpec, now time.Time) (*Issued, error) {
	spec.SHA256 = strings.ToLower(spec.SHA256)
	if err := validateSpec(spec); err != nil {
		return nil, err
	}
	issued := &Issued{Record: &Record{
		ID:        idPrefix + randomToken(12, hex.EncodeToString),
		Tenant:    spec.Tenant,
		Name:      spec.Name,
		CreatedAt: now.UTC(),
	}}
	if spec.SHA256 == "" {
		issued.Key = KeyPrefix + randomToken(randomBytes, base64.RawURLEncoding.EncodeToString)
		issued.Record.SHA256 = HashKey(issued.Key)
	} else {
		issued.Record.SHA256 = spec.SHA256
	}
	secret := spec.Secret
	if secret == "" && spec.Signing {
		secret = newSecret()
		issued.Secret = secret
	}
	if secret != "" {
		issued.Record.Secrets = []Secret{{Value: secret, CreatedAt: now.UTC()}}
	}
	if spec.Expires > 0 {
		expires := now.Add(spec.Expires).UTC()
		issued.Record.ExpiresAt = &expires
	}
	return issued, nil
}

// InvalidSpecError is a key spec refused before anything is written.
type InvalidSpecError struct{ reason string }

func (e *InvalidSpecError) Error() string { return e.reason }

func validateSpec(spec NewRecordSpec) error {
	if spec.Tenant == "" || len(spec.Tenant) > maxTenantLen || !visibleASCII(spec.Tenant) {
		return &InvalidSpecError{fmt.Sprintf("tenant must be 1 to %d visible ASCII characters (it is sent as a header value)", maxTenantLen)}
	}
	if len(spec.Name) > maxNameLen || hasControl(spec.Name) {
		return &InvalidSpecError{fmt.Sprintf("name must be at most %d characters without control characters", maxNameLen)}
	}
	if spec.Expires < 0 {
		return &InvalidSpecError{"expiry must be a positive duration"}
	}
	if spec.SHA256 != "" {
		if b, err := hex.DecodeString(spec.SHA256); err != nil || len(b) != sha256.Size {
			return &InvalidSpecError{"sha256 must be 64 hex digits"}
		}
	}
	if hasControl(spec.Secret) {
		return &InvalidSpecError{"secret must not contain control characters"}
	}
	return nil
}

// HashKey is the lookup handle of a raw key: hex SHA-256.
func HashKey(key string) string {
	// []byte(key) on the heap for keys over 32 bytes; a stack copy for real-sized keys.
	var in [128]byte
	var sum [sha256.Size]byte
	if len(key) <= len(in) {
		sum = sha256.Sum256(in[:copy(in[:], key)])
	} else {
		sum = sha256.Sum256([]byte(key))
	}
	var out [2 * sha256.Size]byte // on the stack: one allocation (the string), not two
	hex.Encode(out[:], sum[:])
	return string(out[:])
}

func randomToken(n int, encode func([]byte) string) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error()) // rand.Read never fails on supported platforms
	}
	return encode(b)
}

func visibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}

// Status is how a key stands at now: active, revoked or expired.
func (s Summary) Status(now time.Time) string {
	switch {
	case s.RevokedAt != nil:
		return "revoked"
	case s.ExpiresAt != nil && !now.Before(*s.ExpiresAt):
		return "expired"
	}
	return "active"
}
