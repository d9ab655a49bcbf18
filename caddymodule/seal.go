package caddymodule

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// SecretsKey encrypts integration secrets at rest with AES-256-GCM, the record
// id as associated data, so a sealed secret moved to another record fails to open.
type SecretsKey struct {
	aead cipher.AEAD
	// Fingerprint names the key in stored records without revealing it.
	Fingerprint string
}

// ParseSecretsKey reads a base64 (standard or URL, padded or not) 32-byte key.
func ParseSecretsKey(encoded string) (*SecretsKey, error) {
	encoded = strings.TrimSpace(encoded)
	var raw []byte
	var err error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if raw, err = enc.DecodeString(encoded); err == nil {
			break
		}
	}
	if err != nil || len(raw) != 32 {
		return nil, errors.New("secrets_key must be 32 bytes, base64-encoded (e.g. `openssl rand -base64 32`)")
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(append([]byte("wappchat secrets key fingerprint\x00"), raw...))
	return &SecretsKey{aead: aead, Fingerprint: hex.EncodeToString(sum[:8])}, nil
}

// SealedSecret is a secret value as stored when a secrets key is configured.
type SealedSecret struct {
	Key  string `json:"key"`  // fingerprint of the key that sealed it
	Data string `json:"data"` // base64(nonce || ciphertext)
}

func (k *SecretsKey) seal(value, recordID string) *SealedSecret {
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	data := k.aead.Seal(nonce, nonce, []byte(value), []byte(recordID))
	return &SealedSecret{Key: k.Fingerprint, Data: base64.StdEncoding.EncodeToString(data)}
}

func (k *SecretsKey) open(sealed *SealedSecret, recordID string) (string, error) {
	data, err := base64.StdEncoding.DecodeString(sealed.Data)
	if err != nil || len(data) < k.aead.NonceSize() {
		return "", errors.New("sealed secret is malformed")
	}
	n := k.aead.NonceSize()
	plain, err := k.aead.Open(nil, data[:n], data[n:], []byte(recordID))
	if err != nil {
		return "", errors.New("sealed secret does not open with its key (tampered or moved)")
	}
	return string(plain), nil
}

// Sealer turns records into their stored form and back. Current seals (nil:
// secrets are stored as they are); Others only open, during a reencrypt.
type Sealer struct {
	Current *SecretsKey
	Others  []*SecretsKey
}

// encode is a record's stored form: JSON with its secrets sealed.
func (s Sealer) encode(rec *Record) ([]byte, error) {
	return json.Marshal(s.sealed(rec))
}

// decode reads a stored record, checks it is the one asked for, and opens its secrets.
func (s Sealer) decode(b []byte, sha256Hex string) (*Record, error) {
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil || rec.SHA256 != sha256Hex || rec.ID == "" {
		return nil, fmt.Errorf("key record %s is corrupted", sha256Hex)
	}
	if err := s.open(&rec); err != nil {
		return nil, err
	}
	return &rec, nil
}

// sealed returns a copy of rec with every secret value replaced by its sealed form.
func (s Sealer) sealed(rec *Record) *Record {
	out := *rec
	out.Secrets = make([]Secret, len(rec.Secrets))
	for i, secret := range rec.Secrets {
		if s.Current != nil {
			secret.Sealed, secret.Value = s.Current.seal(secret.Value, rec.ID), ""
		}
		out.Secrets[i] = secret
	}
	return &out
}

// open replaces sealed secrets of a freshly loaded record with their values.
func (s Sealer) open(rec *Record) error {
	for i, secret := range rec.Secrets {
		if secret.Sealed == nil {
			continue
		}
		key := s.key(secret.Sealed.Key)
		if key == nil {
			return fmt.Errorf("record %s has a secret sealed under secrets key %s, which is not configured", rec.ID, secret.Sealed.Key)
		}
		value, err := key.open(secret.Sealed, rec.ID)
		if err != nil {
			return fmt.Errorf("record %s: %v", rec.ID, err)
		}
		rec.Secrets[i].Value, rec.Secrets[i].Sealed = value, nil
	}
	return nil
}

func (s Sealer) key(fingerprint string) *SecretsKey {
	for _, k := range append([]*SecretsKey{s.Current}, s.Others...) {
		if k != nil && k.Fingerprint == fingerprint {
			return k
		}
	}
	return nil
}
