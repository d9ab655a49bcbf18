package caddymodule

import "net/http"

// Rejection is one reason a request is refused: a stable code for clients and
// logs, the HTTP status, and a message that never contains a key or secret.
type Rejection struct {
	Code    string
	Status  int
	Message string
}

func (r *Rejection) Error() string { return r.Code + ": " + r.Message }

// The table of every refusal the handler can produce.
var (
	ErrMissingKey         = &Rejection{"missing_key", http.StatusUnauthorized, "send the integration key in the x-wappchat-key header or as Authorization: Bearer <key>"}
	ErrAmbiguousKey       = &Rejection{"ambiguous_key", http.StatusBadRequest, "send exactly one integration key, in one header"}
	ErrInvalidKey         = &Rejection{"invalid_key", http.StatusUnauthorized, "the integration key is not valid"}
	ErrKeyRevoked         = &Rejection{"key_revoked", http.StatusUnauthorized, "the integration key has been revoked"}
	ErrKeyExpired         = &Rejection{"key_expired", http.StatusUnauthorized, "the integration key has expired"}
	ErrSignatureRequired  = &Rejection{"signature_required", http.StatusUnauthorized, "this request must be signed with x-wappchat-timestamp and x-wappchat-signature"}
	ErrSigningNotEnabled  = &Rejection{"signing_not_enabled", http.StatusUnauthorized, "the request carries signature headers but this key has no signing secret"}
	ErrInvalidTimestamp   = &Rejection{"invalid_timestamp", http.StatusBadRequest, "x-wappchat-timestamp must be one value of decimal unix seconds"}
	ErrTimestampTolerance = &Rejection{"timestamp_out_of_tolerance", http.StatusUnauthorized, "x-wappchat-timestamp is too far from the server's time; sign again with the current time"}
	ErrInvalidSignature   = &Rejection{"invalid_signature", http.StatusBadRequest, "x-wappchat-signature must be one value of sha256= followed by 64 hex digits"}
	ErrSignatureMismatch  = &Rejection{"signature_mismatch", http.StatusUnauthorized, "the signature does not match HMAC-SHA256 of {timestamp}.{raw body}"}
	ErrBodyTooLarge       = &Rejection{"body_too_large", http.StatusRequestEntityTooLarge, "the request body is larger than this endpoint accepts"}
	ErrInvalidBody        = &Rejection{"invalid_body", http.StatusBadRequest, "the request body could not be read completely"}
	ErrSignatureReplayed  = &Rejection{"signature_replayed", http.StatusUnauthorized, "this signed request was already accepted; to retry, sign it again with a new timestamp"}
	ErrReplayCapacity     = &Rejection{"replay_capacity", http.StatusServiceUnavailable, "too many signed requests to remember right now; retry later with a new timestamp"}
	ErrStoreUnavailable   = &Rejection{"store_unavailable", http.StatusServiceUnavailable, "the key store cannot be read right now; retry later"}
)
