package caddymodule

import (
	"bytes"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func FuzzExtractKey(f *testing.F) {
	f.Add("wchat_live_abc", "", false, false)
	f.Add("", "Bearer wchat_live_abc", false, false)
	f.Add("wchat_live_abc", "Bearer wchat_live_abc", false, false)
	f.Add("wchat_live_abc", "bearer  wchat_live_abd", false, false)
	f.Add("a b", "Basic eDp5", true, false)
	f.Add("", "Bearer\tx", false, true)
	f.Add(strings.Repeat("k", 600), "", false, false)
	f.Fuzz(func(t *testing.T, keyHeader, authorization string, repeatKey, repeatAuth bool) {
		h := http.Header{}
		if keyHeader != "" || repeatKey {
			h.Add(KeyHeader, keyHeader)
		}
		if repeatKey {
			h.Add(KeyHeader, keyHeader)
		}
		if authorization != "" || repeatAuth {
			h.Add("Authorization", authorization)
		}
		if repeatAuth {
			h.Add("Authorization", authorization)
		}
		cred, rej := ExtractKey(h)
		if (repeatKey || repeatAuth) && rej != ErrAmbiguousKey {
			t.Fatalf("repeated header: got %+v, %v; expected ambiguous_key", cred, rej)
		}
		if rej != nil {
			if cred != (Credential{}) {
				t.Fatalf("rejected with a credential: %+v", cred)
			}
			return
		}
		if cred.Key == "" || len(cred.Key) > maxKeyLength || strings.ContainsAny(cred.Key, " \t") {
			t.Fatalf("accepted a key that must be refused: %q", cred.Key)
		}
		scheme, token, _ := strings.Cut(authorization, " ")
		bearer := ""
		if strings.EqualFold(scheme, "bearer") {
			bearer = strings.Trim(token, " ")
		}
		if keyHeader != "" && bearer != "" && keyHeader != bearer {
			t.Fatalf("two different keys accepted as %q", cred.Key)
		}
		if cred.Key != keyHeader && cred.Key != bearer {
			t.Fatalf("key %q is neither header value (%q, %q)", cred.Key, keyHeader, authorization)
		}
		if cred.FromAuthorization != (bearer != "" && bearer == cred.Key) {
			t.Fatalf("FromAuthorization=%t for key %q, authorization %q", cred.FromAuthorization, cred.Key, authorization)
		}
	})
}

func FuzzParseSignedHeaders(f *testing.F) {
	good := signHeader("secret", testTS, []byte("{}"))
	f.Add(testTS, good, uint8(1), uint8(1))
	f.Add(testTS, strings.ToUpper(good), uint8(1), uint8(1))
	f.Add("+"+testTS, good, uint8(1), uint8(1))
	f.Add("1779111111.5", good, uint8(1), uint8(1))
	f.Add("999999999999999999", good, uint8(1), uint8(1))
	f.Add("9223372036854775808", good, uint8(1), uint8(1))
	f.Add(testTS, "sha256="+strings.Repeat("0", 63), uint8(1), uint8(1))
	f.Add(testTS, good, uint8(2), uint8(1))
	f.Add(testTS, good, uint8(1), uint8(0))
	f.Fuzz(func(t *testing.T, ts, sig string, nTS, nSig uint8) {
		h := http.Header{}
		for range nTS % 3 {
			h.Add(TimestampHeader, ts)
		}
		for range nSig % 3 {
			h.Add(SignatureHeader, sig)
		}
		signed, rej := ParseSignedHeaders(h, testNow, 5*time.Minute)
		if nTS%3 == 0 || nSig%3 == 0 {
			if rej != ErrSignatureRequired {
				t.Fatalf("missing header: %v, expected signature_required", rej)
			}
			return
		}
		if rej != nil {
			if rej != ErrInvalidTimestamp && rej != ErrTimestampTolerance && rej != ErrInvalidSignature {
				t.Fatalf("unexpected rejection %v", rej)
			}
			return
		}
		if nTS%3 != 1 || nSig%3 != 1 {
			t.Fatal("accepted repeated signature headers")
		}
		for _, c := range ts {
			if c < '0' || c > '9' {
				t.Fatalf("accepted timestamp %q", ts)
			}
		}
		unix, err := strconv.ParseInt(ts, 10, 64)
		if err != nil || unix != signed.Unix || signed.Timestamp != ts {
			t.Fatalf("timestamp %q parsed as %d (%v), stored as %q", ts, signed.Unix, err, signed.Timestamp)
		}
		if d := unix - testNow.Unix(); d > 300 || d < -300 {
			t.Fatalf("timestamp %q accepted %ds from now", ts, d)
		}
		digits, ok := strings.CutPrefix(sig, "sha256=")
		raw, err := hex.DecodeString(digits)
		if !ok || err != nil || len(raw) != 32 || !bytes.Equal(raw, signed.Signature[:]) {
			t.Fatalf("signature %q accepted as %x", sig, signed.Signature)
		}
	})
}

// FuzzVerify drives the whole handler. It must never panic, and must never
// pass a request on unless the key is live and, for a key with a secret, the
// signature is HMAC-SHA256 of one of its live secrets over {timestamp}.{body}.
func FuzzVerify(f *testing.F) {
	env := newHandlerEnv(f, nil)
	body := []byte(`{"event":"lead.created"}`)
	f.Add(uint8(0), uint8(0), "", "", body, false, "X-Tenant-ID", "evil")
	f.Add(uint8(1), uint8(0), testTS, "", body, true, "", "")
	f.Add(uint8(1), uint8(1), testTS, "", body, true, "X_Tenant_ID", "evil")
	f.Add(uint8(1), uint8(2), testTS, "sha256="+strings.Repeat("a", 64), body, false, "", "")
	f.Add(uint8(2), uint8(0), testTS, "", []byte{}, true, "Content-Length", "99")
	f.Add(uint8(3), uint8(0), testTS, "", body, true, "", "")
	f.Add(uint8(0), uint8(0), testTS, "sha256=", body, false, "", "")
	f.Add(uint8(4), uint8(0), "1779111000", "", body, true, "Authorization", "Bearer x")
	f.Fuzz(func(t *testing.T, which, via uint8, ts, sig string, reqBody []byte, signIt bool, extraName, extraValue string) {
		var rec *Record
		var key, secret string
		switch which % 6 {
		case 0:
			key, rec = env.plain.Key, env.plain.Record
		case 1:
			key, rec, secret = env.signing.Key, env.signing.Record, env.signing.Secret
		case 2:
			key, rec, secret = env.rotated.Key, env.rotated.Record, env.oldSecret
		case 3:
			key, rec = env.revoked.Key, env.revoked.Record
		case 4:
			key, rec = env.expired.Key, env.expired.Record
		default:
			key = sig // an arbitrary unknown key
		}
		if signIt && secret != "" {
			sig = signHeader(secret, ts, reqBody)
		}
		headers := []string{}
		if extraName != "" {
			headers = append(headers, extraName, extraValue)
		}
		switch via % 3 {
		case 0:
			headers = append(headers, KeyHeader, key)
		case 1:
			headers = append(headers, "Authorization", "Bearer "+key)
		case 2:
			headers = append(headers, KeyHeader, key, "Authorization", "Bearer "+key)
		}
		if ts != "" {
			headers = append(headers, TimestampHeader, ts)
		}
		if sig != "" {
			headers = append(headers, SignatureHeader, sig)
		}
		r, _, _ := testRequest(reqBody, int64(len(reqBody)), -1, headers...)
		sent := r.Header.Clone()
		w := httptest.NewRecorder()
		var up upstream
		if err := env.h.ServeHTTP(w, r, up.handler()); err != nil {
			t.Fatalf("ServeHTTP returned an error: %v", err)
		}
		if !up.called {
			if w.Code < 400 {
				t.Fatalf("not passed on, but status %d", w.Code)
			}
			return
		}
		// Passed on: check it deserved to be.
		if rec == nil || rec.Check(testNow) != nil {
			t.Fatalf("passed with key %q that is unknown, revoked or expired", key)
		}
		if len(rec.Secrets) > 0 {
			live := rec.liveSecrets(testNow)
			tsSent, sigSent := sent.Values(TimestampHeader), sent.Values(SignatureHeader)
			if len(tsSent) != 1 || len(sigSent) != 1 {
				t.Fatalf("signing key passed with timestamps %q, signatures %q", tsSent, sigSent)
			}
			ok := false
			for _, s := range live {
				if strings.EqualFold(sigSent[0], signHeader(s.Value, tsSent[0], reqBody)) {
					ok = true
				}
			}
			if !ok {
				t.Fatalf("signing key passed with a signature %q that no live secret made over %q.%q", sigSent[0], tsSent[0], reqBody)
			}
			unix, err := strconv.ParseInt(tsSent[0], 10, 64)
			if err != nil || unix < testNow.Unix()-300 || unix > testNow.Unix()+300 {
				t.Fatalf("passed with timestamp %q out of tolerance", tsSent[0])
			}
		} else if SignaturePresent(sent) {
			t.Fatal("key without a secret passed with signature headers")
		}
		if got := up.header.Values(env.h.TenantHeader); len(got) != 1 || got[0] != rec.Tenant {
			t.Fatalf("upstream tenant %q, expected %q", got, rec.Tenant)
		}
		for name := range up.header {
			if SameHeaderName(name, KeyHeader) {
				t.Fatalf("credential header %s reached the upstream", name)
			}
		}
		if !bytes.Equal(up.body, reqBody) {
			t.Fatalf("upstream body %q, sent %q", up.body, reqBody)
		}
	})
}
