package caddymodule

import (
	"net/http"
	"strings"
)

// Header names a client uses to present its credentials.
const (
	KeyHeader       = "X-Wappchat-Key"
	TimestampHeader = "X-Wappchat-Timestamp"
	SignatureHeader = "X-Wappchat-Signature"
)

// maxKeyLength bounds what is hashed and looked up; real keys are about 54 bytes.
const maxKeyLength = 512

// Credential is the integration key a request presents and where it came from.
type Credential struct {
	Key               string
	FromAuthorization bool
}

// ExtractKey finds the integration key in x-wappchat-key or Authorization: Bearer.
// Empty values count as absent; repeated headers, or two headers with different
// keys, are ambiguous rather than resolved by a guess.
func ExtractKey(h http.Header) (Credential, *Rejection) {
	headerKeys := h.Values(KeyHeader)
	authorizations := h.Values("Authorization")
	if len(headerKeys) > 1 || len(authorizations) > 1 {
		return Credential{}, ErrAmbiguousKey
	}
	var headerKey, bearer string
	if len(headerKeys) == 1 {
		headerKey = headerKeys[0]
	}
	if len(authorizations) == 1 {
		bearer = bearerToken(authorizations[0])
	}
	switch {
	case headerKey != "" && bearer != "" && headerKey != bearer:
		return Credential{}, ErrAmbiguousKey
	case headerKey == "" && bearer == "":
		return Credential{}, ErrMissingKey
	}
	cred := Credential{Key: headerKey, FromAuthorization: bearer != ""}
	if cred.Key == "" {
		cred.Key = bearer
	}
	if len(cred.Key) > maxKeyLength || strings.ContainsAny(cred.Key, " \t") {
		return Credential{}, ErrInvalidKey
	}
	return cred, nil
}

// bearerToken returns the token of a Bearer authorization (scheme matched
// without regard to case), or "" for any other scheme.
func bearerToken(authorization string) string {
	scheme, token, found := strings.Cut(authorization, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.Trim(token, " ")
}

// SameHeaderName reports whether two header names are the same header for a
// legacy upstream: equal ignoring case, with '_' read as '-' (CGI-style stacks
// map both X-Tenant-ID and X_Tenant_ID to HTTP_X_TENANT_ID).
func SameHeaderName(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if foldHeaderByte(a[i]) != foldHeaderByte(b[i]) {
			return false
		}
	}
	return true
}

func foldHeaderByte(c byte) byte {
	switch {
	case c == '_':
		return '-'
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	}
	return c
}
