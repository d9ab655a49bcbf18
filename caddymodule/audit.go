package caddymodule

import (
	"bytes"
	"encoding/json"

	"go.uber.org/zap"
)

// auditScanLimit bounds how much of a body is scanned for event fields, so the
// audit entry never costs a full JSON parse of a large body.
const auditScanLimit = 16 << 10

// EventFields returns the top-level string fields event, source and
// idempotency_key of a JSON object body, scanning at most auditScanLimit bytes.
// Anything else (not an object, not strings, truncated) yields what was found.
func EventFields(body []byte) []zap.Field {
	dec := json.NewDecoder(bytes.NewReader(body[:min(len(body), auditScanLimit)]))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	var fields []zap.Field
	for dec.More() && len(fields) < 3 {
		name, err := dec.Token()
		if err != nil {
			return fields
		}
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return fields
		}
		var s string
		switch name {
		case "event", "source", "idempotency_key":
			if json.Unmarshal(value, &s) == nil {
				fields = append(fields, zap.String(name.(string), s))
			}
		}
	}
	return fields
}
