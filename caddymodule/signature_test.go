package caddymodule

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestParseTimestamp(t *testing.T) {
	for i, tc := range []struct {
		input  string
		expect int64
		ok     bool
	}{
		{"1779111111", 1779111111, true},
		{"0", 0, true},
		{"01779111111", 1779111111, true},
		{"999999999999999999", 999999999999999999, true}, // 18 digits, the maximum
		{"1000000000000000000", 0, false},                // 19 digits
		{"9223372036854775807", 0, false},                // 19 digits, MaxInt64
		{"9223372036854775808", 0, false},                // 19 digits, overflows int64
		{"18446744073709551616", 0, false},               // 20 digits
		{"", 0, false},
		{"+1779111111", 0, false},
		{"-1779111111", 0, false},
		{" 1779111111", 0, false},
		{"1779111111 ", 0, false},
		{"1779 111111", 0, false},
		{"\t1779111111", 0, false},
		{"1779111111.5", 0, false},
		{"1779111111.0", 0, false},
		{"1.779111111e9", 0, false},
		{"1779111111e0", 0, false},
		{"0x6a0a4e47", 0, false},
		{"1_779_111_111", 0, false},
		{"１７７９１１１１１１", 0, false}, // fullwidth digits
		{"١٧٧٩١١١١١١", 0, false}, // Arabic-Indic digits
		{"1779111111\x00", 0, false},
		{"NaN", 0, false},
		{"Infinity", 0, false},
		{"2026-05-19T00:00:00Z", 0, false},
	} {
		got, rej := ParseTimestamp(tc.input)
		if tc.ok {
			if rej != nil {
				t.Errorf("Test %d: ParseTimestamp(%q): unexpected rejection %v", i, tc.input, rej)
			} else if got != tc.expect {
				t.Errorf("Test %d: ParseTimestamp(%q) = %d, expected %d", i, tc.input, got, tc.expect)
			}
			continue
		}
		if rej != ErrInvalidTimestamp {
			t.Errorf("Test %d: ParseTimestamp(%q): expected %v, got value %d and rejection %v", i, tc.input, ErrInvalidTimestamp, got, rej)
		}
	}
}

func TestCheckTolerance(t *testing.T) {
	now := time.Unix(1779111111, 0)
	const tol = 5 * time.Minute
	for i, tc := range []struct {
		name      string
		unix      int64
		now       time.Time
		tolerance time.Duration
		ok        bool
	}{
		{"exact now", 1779111111, now, tol, true},
		{"past boundary accepted", 1779111111 - 300, now, tol, true},
		{"past boundary + 1s refused", 1779111111 - 301, now, tol, false},
		{"future boundary accepted", 1779111111 + 300, now, tol, true},
		{"future boundary + 1s refused", 1779111111 + 301, now, tol, false},
		{"1s tolerance, 1s past", 1779111110, now, time.Second, true},
		{"1s tolerance, 2s past", 1779111109, now, time.Second, false},
		{"1s tolerance, 1s future", 1779111112, now, time.Second, true},
		{"1s tolerance, 2s future", 1779111113, now, time.Second, false},
		{"now has a fraction, boundary accepted", 1779111111 - 300, now.Add(999 * time.Millisecond), tol, true},
		{"zero timestamp", 0, now, tol, false},
		{"far future", 999999999999999999, now, tol, false},
		{"huge tolerance", 0, now, 100 * 365 * 24 * time.Hour, true},
	} {
		rej := CheckTolerance(tc.unix, tc.now, tc.tolerance)
		if tc.ok && rej != nil {
			t.Errorf("Test %d (%s): expected acceptance, got %v", i, tc.name, rej)
		}
		if !tc.ok && rej != ErrTimestampTolerance {
			t.Errorf("Test %d (%s): expected %v, got %v", i, tc.name, ErrTimestampTolerance, rej)
		}
	}
}

func TestParseSignature(t *testing.T) {
	digest := sha256.Sum256([]byte("x"))
	hexDigest := hex.EncodeToString(digest[:])
	for i, tc := range []struct {
		name  string
		input string
		ok    bool
	}{
		{"valid", "sha256=" + hexDigest, true},
		{"uppercase hex digits", "sha256=" + strings.ToUpper(hexDigest), true},
		{"no prefix", hexDigest, false},
		{"empty", "", false},
		{"prefix only", "sha256=", false},
		{"sha1 prefix", "sha1=" + hexDigest, false},
		{"uppercase prefix", "SHA256=" + hexDigest, false},
		{"mixed case prefix", "Sha256=" + hexDigest, false},
		{"sha-256 prefix", "sha-256=" + hexDigest, false},
		{"colon separator", "sha256:" + hexDigest, false},
		{"63 hex digits", "sha256=" + hexDigest[:63], false},
		{"65 hex digits", "sha256=" + hexDigest + "0", false},
		{"128 hex digits", "sha256=" + hexDigest + hexDigest, false},
		{"non-hex digit", "sha256=" + hexDigest[:63] + "g", false},
		{"base64", "sha256=" + base64.StdEncoding.EncodeToString(digest[:]), false},
		{"base64 padded to 64 chars", "sha256=" + base64.StdEncoding.EncodeToString(append(digest[:], digest[:16]...)), false},
		{"trailing space", "sha256=" + hexDigest + " ", false},
		{"leading space", " sha256=" + hexDigest, false},
		{"space after prefix", "sha256= " + hexDigest[:63], false},
		{"two signatures, comma", "sha256=" + hexDigest + ",sha256=" + hexDigest, false},
		{"0x prefix on digits", "sha256=0x" + hexDigest[:62], false},
	} {
		sig, rej := ParseSignature(tc.input)
		if !tc.ok {
			if rej != ErrInvalidSignature {
				t.Errorf("Test %d (%s): ParseSignature(%q): expected %v, got %v", i, tc.name, tc.input, ErrInvalidSignature, rej)
			}
			continue
		}
		if rej != nil {
			t.Errorf("Test %d (%s): unexpected rejection %v", i, tc.name, rej)
			continue
		}
		if sig != digest {
			t.Errorf("Test %d (%s): decoded %x, expected %x", i, tc.name, sig, digest)
		}
	}
}

func TestParseSignedHeaders(t *testing.T) {
	now := time.Unix(1779111111, 0)
	const tol = 5 * time.Minute
	sig := Sign([]byte("secret"), "1779111111", nil)
	good := "sha256=" + hex.EncodeToString(sig[:])
	const ts = "1779111111"
	const old = "1779000000"

	for i, tc := range []struct {
		name   string
		header http.Header
		expect *Rejection
	}{
		{"valid", hdr(TimestampHeader, ts, SignatureHeader, good), nil},
		{"lowercase names", hdr("x-wappchat-timestamp", ts, "x-wappchat-signature", good), nil},
		{"neither", hdr(), ErrSignatureRequired},
		{"timestamp only", hdr(TimestampHeader, ts), ErrSignatureRequired},
		{"signature only", hdr(SignatureHeader, good), ErrSignatureRequired},
		{"bad signature only", hdr(SignatureHeader, "nope"), ErrSignatureRequired},
		{"bad timestamp only", hdr(TimestampHeader, "nope"), ErrSignatureRequired},
		{"repeated timestamp", hdr(TimestampHeader, ts, TimestampHeader, ts, SignatureHeader, good), ErrInvalidTimestamp},
		{"repeated signature", hdr(TimestampHeader, ts, SignatureHeader, good, SignatureHeader, good), ErrInvalidSignature},
		{"empty timestamp", hdr(TimestampHeader, "", SignatureHeader, good), ErrInvalidTimestamp},
		{"empty signature", hdr(TimestampHeader, ts, SignatureHeader, ""), ErrInvalidSignature},
		{"bad timestamp", hdr(TimestampHeader, "1779111111.0", SignatureHeader, good), ErrInvalidTimestamp},
		{"bad signature", hdr(TimestampHeader, ts, SignatureHeader, "sha256=zz"), ErrInvalidSignature},
		{"old timestamp", hdr(TimestampHeader, old, SignatureHeader, good), ErrTimestampTolerance},
		// Order of checks: timestamp syntax before signature syntax.
		{"bad timestamp and bad signature", hdr(TimestampHeader, "x", SignatureHeader, "y"), ErrInvalidTimestamp},
		{"repeated timestamp and repeated signature", hdr(TimestampHeader, ts, TimestampHeader, ts, SignatureHeader, good, SignatureHeader, good), ErrInvalidTimestamp},
		// Tolerance before signature syntax.
		{"old timestamp and bad signature", hdr(TimestampHeader, old, SignatureHeader, "y"), ErrTimestampTolerance},
		{"old timestamp and repeated signature", hdr(TimestampHeader, old, SignatureHeader, good, SignatureHeader, good), ErrTimestampTolerance},
		{"repeated timestamp with old value", hdr(TimestampHeader, old, TimestampHeader, old, SignatureHeader, good), ErrInvalidTimestamp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			signed, rej := ParseSignedHeaders(tc.header, now, tol)
			if rej != tc.expect {
				t.Fatalf("Test %d: expected %v, got %v", i, tc.expect, rej)
			}
			if rej != nil {
				return
			}
			if signed.Timestamp != ts || signed.Unix != 1779111111 || signed.Signature != sig {
				t.Errorf("Test %d: parsed %+v, expected timestamp %q, unix 1779111111, signature %x", i, signed, ts, sig)
			}
		})
	}
}

func TestSignaturePresent(t *testing.T) {
	for i, tc := range []struct {
		header http.Header
		expect bool
	}{
		{hdr(), false},
		{hdr("X-Other", "1"), false},
		{hdr(TimestampHeader, "1"), true},
		{hdr(SignatureHeader, "x"), true},
		{hdr(TimestampHeader, ""), true},
		{hdr("x-wappchat-signature", ""), true},
	} {
		if got := SignaturePresent(tc.header); got != tc.expect {
			t.Errorf("Test %d: SignaturePresent(%v) = %t, expected %t", i, tc.header, got, tc.expect)
		}
	}
}

// referenceHMAC is written independently of Sign, straight from the seed:
// HMAC-SHA256(secret, "{timestamp}.{raw body}").
func referenceHMAC(secret, timestamp, body string) [sha256.Size]byte {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(timestamp + "." + body))
	var out [sha256.Size]byte
	copy(out[:], mac.Sum(nil))
	return out
}

func TestSign(t *testing.T) {
	// printf '%s' '1779111111.{"event":"x"}' | openssl dgst -sha256 -hmac secret
	const opensslVector = "8d30aee6e9aa32c66f5e25737d323fc59948d021db2cd99d06b282e34bf55900"
	got := Sign([]byte("secret"), "1779111111", []byte(`{"event":"x"}`))
	if hex.EncodeToString(got[:]) != opensslVector {
		t.Errorf("Sign does not match the openssl vector: got %x, expected %s", got, opensslVector)
	}

	for i, tc := range []struct {
		secret, timestamp, body string
	}{
		{"secret", "1779111111", `{"event":"x"}`},
		{"wchat_secret_abc", "1779111111", ""},
		{"", "0", "body"},
		{strings.Repeat("k", 200), "1779111111", strings.Repeat("x", 100000)}, // secret longer than the block size
		{"s", "1779111111", "a.b.c\n\x00\xff"},
		{"s", "1779111111.5", "body"},
	} {
		got := Sign([]byte(tc.secret), tc.timestamp, []byte(tc.body))
		if expect := referenceHMAC(tc.secret, tc.timestamp, tc.body); got != expect {
			t.Errorf("Test %d: Sign = %x, expected %x", i, got, expect)
		}
	}

	// The separator matters: moving the dot between timestamp and body changes the MAC.
	a := Sign([]byte("s"), "17791111111", []byte("23"))
	b := Sign([]byte("s"), "1779111111", []byte("123"))
	if a == b {
		t.Error("Sign is not sensitive to where the timestamp ends")
	}
}

func TestVerifySignature(t *testing.T) {
	body := []byte(`{"event":"lead.created"}`)
	const ts = "1779111111"
	signedWith := func(secret string) SignedHeaders {
		return SignedHeaders{Timestamp: ts, Unix: 1779111111, Signature: Sign([]byte(secret), ts, body)}
	}
	for i, tc := range []struct {
		name    string
		secrets []string
		signed  SignedHeaders
		body    []byte
		ok      bool
	}{
		{"one secret matches", []string{"a"}, signedWith("a"), body, true},
		{"first of several", []string{"a", "b", "c"}, signedWith("a"), body, true},
		{"last of several", []string{"a", "b", "c"}, signedWith("c"), body, true},
		{"middle of several", []string{"a", "b", "c"}, signedWith("b"), body, true},
		{"none matches", []string{"a", "b"}, signedWith("c"), body, false},
		{"no secrets", nil, signedWith("a"), body, false},
		{"empty secret list", []string{}, signedWith(""), body, false},
		{"body changed", []string{"a"}, signedWith("a"), append([]byte(nil), append(body, ' ')...), false},
		{"body truncated", []string{"a"}, signedWith("a"), body[:len(body)-1], false},
		{"timestamp changed", []string{"a"}, SignedHeaders{Timestamp: "1779111112", Signature: signedWith("a").Signature}, body, false},
		{"zero signature", []string{"a"}, SignedHeaders{Timestamp: ts}, body, false},
		{"secret prefix of the right one", []string{"wchat_secret_ab"}, signedWith("wchat_secret_abc"), body, false},
	} {
		macs := make([]*SecretMAC, len(tc.secrets))
		for j, s := range tc.secrets {
			macs[j] = NewSecretMAC([]byte(s))
		}
		rej := VerifySignature(macs, tc.signed, tc.body)
		if tc.ok && rej != nil {
			t.Errorf("Test %d (%s): expected a match, got %v", i, tc.name, rej)
		}
		if !tc.ok && rej != ErrSignatureMismatch {
			t.Errorf("Test %d (%s): expected %v, got %v", i, tc.name, ErrSignatureMismatch, rej)
		}
	}
}
