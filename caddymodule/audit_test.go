package caddymodule

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// fieldsOf renders fields as name=value, in order.
func fieldsOf(fields []zap.Field) string {
	enc := zapcore.NewMapObjectEncoder()
	var parts []string
	for _, f := range fields {
		f.AddTo(enc)
		parts = append(parts, f.Key+"="+enc.Fields[f.Key].(string))
	}
	return strings.Join(parts, " ")
}

func TestEventFields(t *testing.T) {
	for i, tc := range []struct {
		body, expect string
	}{
		{`{"event":"lead.created","source":"my-crm","idempotency_key":"k1","contact":{"name":"Alex"}}`, "event=lead.created source=my-crm idempotency_key=k1"},
		{`{"contact":{"event":"nested","a":[1,{"b":"}"}]},"payload":"x,}","event":"top"}`, "event=top"},
		{` { "event" : "a\"b\u00e9" , "n": -1.5e3, "t": true, "z": null, "source": "s" } `, `event=a"bé source=s`},
		{`{"event":1,"source":["x"],"idempotency_key":{"k":"v"}}`, ""},
		{`["event","x"]`, ""},
		{`"event"`, ""},
		{``, ""},
		{`{"event":"a"`, "event=a"},
		{`{"event":"a","source":`, "event=a"},
		{`{"event":"unterminated`, ""},
		{`{"source":"s",,"event":"e"}`, "source=s"},
		{`{"a":{"b":[[[]]]},"idempotency_key":"i"}`, "idempotency_key=i"},
		{`{"event":"e"}` + strings.Repeat(" ", auditScanLimit), "event=e"},
		{`{"pad":"` + strings.Repeat("x", auditScanLimit) + `","event":"beyond the limit"}`, ""},
	} {
		if got := fieldsOf(appendEventFields(nil, []byte(tc.body))); got != tc.expect {
			t.Errorf("Test %d: appendEventFields(%.60q) = %q, expected %q", i, tc.body, got, tc.expect)
		}
	}
}

// eventFieldsByDecoder is what appendEventFields must agree with on valid JSON:
// the standard decoder, token by token.
func eventFieldsByDecoder(body []byte) []zap.Field {
	dec := json.NewDecoder(bytes.NewReader(body))
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

func FuzzEventFields(f *testing.F) {
	f.Add([]byte(`{"event":"lead.created","source":"my-crm","idempotency_key":"lead.created:lead_123","contact":{"name":"Alex","phone":"919999999999"},"payload":{"service":"demo"}}`))
	f.Add([]byte(`{"a":[1,"]",{"b":"}"}],"event":"x"}`))
	f.Add([]byte(`{"event":"\u0041\"","source":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		got := fieldsOf(appendEventFields(nil, body))
		// Escaped member names are compared raw by the scanner and decoded by the decoder.
		if len(body) > auditScanLimit || !json.Valid(body) || bytes.IndexByte(body, '\\') >= 0 {
			return
		}
		if expect := fieldsOf(eventFieldsByDecoder(body)); got != expect {
			t.Fatalf("appendEventFields(%q) = %q, the decoder finds %q", body, got, expect)
		}
	})
}
