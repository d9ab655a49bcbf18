package caddymodule

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"

	"go.uber.org/zap"
)

// auditScanLimit bounds how much of a body is scanned for event fields, so the
// audit entry never costs a full JSON parse of a large body.
const auditScanLimit = 16 << 10

// appendEventFields appends the top-level string fields event, source and
// idempotency_key of a JSON object body, scanning at most auditScanLimit bytes.
// It skips other values without decoding them (the request path must not pay
// for a JSON parse), and keeps what it found before anything it cannot follow.
func appendEventFields(fields []zap.Field, body []byte) []zap.Field {
	s := jsonScanner{b: body[:min(len(body), auditScanLimit)]}
	if !s.consume('{') {
		return fields
	}
	for found := 0; found < 3; {
		name, ok := s.str()
		if !ok || !s.consume(':') {
			return fields
		}
		if field := auditedField(name); field != "" && s.peek() == '"' {
			raw, ok := s.str()
			if !ok {
				return fields
			}
			if value, ok := unquote(raw); ok {
				fields = append(fields, zap.String(field, value))
				found++
			}
		} else if !s.skipValue() {
			return fields
		}
		if !s.consume(',') {
			return fields
		}
	}
	return fields
}

// auditedField is the log field for a member name worth auditing, or "".
func auditedField(name []byte) string {
	for _, field := range []string{"event", "source", "idempotency_key"} {
		if string(name) == field {
			return field
		}
	}
	return ""
}

// unquote decodes a string's raw contents as encoding/json does; most have
// nothing to decode.
func unquote(raw []byte) (string, bool) {
	if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return string(raw), true
	}
	var s string
	err := json.Unmarshal(append(append([]byte{'"'}, raw...), '"'), &s)
	return s, err == nil
}

// jsonScanner walks JSON text just enough to find top-level members.
type jsonScanner struct {
	b []byte
	i int
}

func (s *jsonScanner) skipSpace() {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\t' || s.b[s.i] == '\n' || s.b[s.i] == '\r') {
		s.i++
	}
}

// peek returns the next byte after white space, or 0 at the end.
func (s *jsonScanner) peek() byte {
	s.skipSpace()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *jsonScanner) consume(c byte) bool {
	s.skipSpace()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str reads a string and returns its raw contents (escapes left as they are).
func (s *jsonScanner) str() ([]byte, bool) {
	s.skipSpace()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	start := s.i + 1
	for j := start; j < len(s.b); j++ {
		switch s.b[j] {
		case '\\':
			j++
		case '"':
			s.i = j + 1
			return s.b[start:j], true
		}
	}
	return nil, false
}

// skipValue moves past one value, stopping at the ',' or '}' that follows it.
func (s *jsonScanner) skipValue() bool {
	s.skipSpace()
	depth := 0
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '"':
			if _, ok := s.str(); !ok {
				return false
			}
			if depth == 0 {
				return true
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return true
			}
			if depth--; depth == 0 {
				s.i++
				return true
			}
		case ',':
			if depth == 0 {
				return true
			}
		}
		s.i++
	}
	return false
}
