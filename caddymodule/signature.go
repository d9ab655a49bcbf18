package caddymodule

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"net/http"
	"sync"
	"time"
)

const signaturePrefix = "sha256="

// maxTimestampDigits keeps parsed timestamps far from int64 overflow.
const maxTimestampDigits = 18

// SignedHeaders is the signature part of a request, parsed but not yet verified.
type SignedHeaders struct {
	Timestamp string // exactly as sent: it is part of the signed payload
	Unix      int64
	Signature [sha256.Size]byte
}

// SignaturePresent reports whether the request carries either signature header.
func SignaturePresent(h http.Header) bool {
	return len(h.Values(TimestampHeader)) > 0 || len(h.Values(SignatureHeader)) > 0
}

// ParseSignedHeaders checks the signature headers in the contract's order:
// both present, timestamp syntax, timestamp within tolerance of now, signature syntax.
func ParseSignedHeaders(h http.Header, now time.Time, tolerance time.Duration) (SignedHeaders, *Rejection) {
	timestamps, signatures := h.Values(TimestampHeader), h.Values(SignatureHeader)
	if len(timestamps) == 0 || len(signatures) == 0 {
		return SignedHeaders{}, ErrSignatureRequired
	}
	if len(timestamps) > 1 {
		return SignedHeaders{}, ErrInvalidTimestamp
	}
	unix, rej := ParseTimestamp(timestamps[0])
	if rej != nil {
		return SignedHeaders{}, rej
	}
	if rej := CheckTolerance(unix, now, tolerance); rej != nil {
		return SignedHeaders{}, rej
	}
	if len(signatures) > 1 {
		return SignedHeaders{}, ErrInvalidSignature
	}
	sig, rej := ParseSignature(signatures[0])
	if rej != nil {
		return SignedHeaders{}, rej
	}
	return SignedHeaders{Timestamp: timestamps[0], Unix: unix, Signature: sig}, nil
}

// ParseTimestamp accepts only plain decimal unix seconds: no sign, space,
// fraction or exponent, so the value signed is the value checked.
func ParseTimestamp(v string) (int64, *Rejection) {
	if len(v) == 0 || len(v) > maxTimestampDigits {
		return 0, ErrInvalidTimestamp
	}
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, ErrInvalidTimestamp
		}
		n = n*10 + int64(c-'0')
	}
	return n, nil
}

// CheckTolerance accepts timestamps at most tolerance away from now, in either
// direction; the boundary itself is accepted.
func CheckTolerance(unix int64, now time.Time, tolerance time.Duration) *Rejection {
	skew := now.Unix() - unix
	if skew < 0 {
		skew = -skew
	}
	if skew > int64(tolerance/time.Second) {
		return ErrTimestampTolerance
	}
	return nil
}

// ParseSignature accepts "sha256=" (lowercase) followed by exactly 64 hex digits.
func ParseSignature(v string) ([sha256.Size]byte, *Rejection) {
	var sig [sha256.Size]byte
	if len(v) != len(signaturePrefix)+hex.EncodedLen(sha256.Size) || v[:len(signaturePrefix)] != signaturePrefix {
		return sig, ErrInvalidSignature
	}
	if _, err := hex.Decode(sig[:], []byte(v[len(signaturePrefix):])); err != nil {
		return sig, ErrInvalidSignature
	}
	return sig, nil
}

// Sign returns HMAC-SHA256(secret, "{timestamp}.{body}"), the seed's signed payload.
func Sign(secret []byte, timestamp string, body []byte) [sha256.Size]byte {
	var out [sha256.Size]byte
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	mac.Sum(out[:0])
	return out
}

// SecretMAC checks signatures made with one secret. It pools keyed HMAC
// states, so a verification allocates nothing and skips re-keying.
type SecretMAC struct {
	pool sync.Pool
}

type macState struct {
	mac    hash.Hash
	sum    [sha256.Size]byte
	prefix [maxTimestampDigits + 1]byte // "{timestamp}."
}

// NewSecretMAC prepares verification with secret.
func NewSecretMAC(secret []byte) *SecretMAC {
	m := &SecretMAC{}
	m.pool.New = func() any { return &macState{mac: hmac.New(sha256.New, secret)} }
	return m
}

// Matches reports, in constant time, whether signed.Signature is the HMAC of
// "{timestamp}.{body}". signed.Timestamp must come from ParseSignedHeaders.
func (m *SecretMAC) Matches(signed SignedHeaders, body []byte) bool {
	st := m.pool.Get().(*macState)
	defer m.pool.Put(st)
	st.mac.Reset()
	n := copy(st.prefix[:], signed.Timestamp)
	st.prefix[n] = '.'
	st.mac.Write(st.prefix[:n+1])
	st.mac.Write(body)
	return hmac.Equal(st.mac.Sum(st.sum[:0]), signed.Signature[:])
}

// VerifySignature reports whether any of macs produced the signature. Every
// one is tried, so timing does not reveal which matched.
func VerifySignature(macs []*SecretMAC, signed SignedHeaders, body []byte) *Rejection {
	matched := false
	for _, m := range macs {
		if m.Matches(signed, body) {
			matched = true
		}
	}
	if !matched {
		return ErrSignatureMismatch
	}
	return nil
}
