package caddymodule

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

func TestReadBody(t *testing.T) {
	for i, tc := range []struct {
		name          string
		body          string
		contentLength int64
		limit         int64
		expect        *Rejection
	}{
		{"empty", "", 0, 10, nil},
		{"under", "abc", 3, 10, nil},
		{"at limit", "0123456789", 10, 10, nil},
		{"at limit, chunked", "0123456789", -1, 10, nil},
		{"over, declared", "0123456789a", 11, 10, ErrBodyTooLarge},
		{"declared over, short body", "a", 11, 10, ErrBodyTooLarge},
		{"over, chunked", "0123456789a", -1, 10, ErrBodyTooLarge},
		{"over, declared short", "0123456789a", 5, 10, ErrBodyTooLarge},
	} {
		r := httptest.NewRequest(http.MethodPost, "/", io.NopCloser(strings.NewReader(tc.body)))
		r.ContentLength = tc.contentLength
		buf, rej := readBody(r, tc.limit)
		if rej != tc.expect {
			t.Errorf("Test %d (%s): rejection %v, expected %v", i, tc.name, rej, tc.expect)
			continue
		}
		if rej == nil {
			if buf.String() != tc.body {
				t.Errorf("Test %d (%s): read %q, expected %q", i, tc.name, buf.String(), tc.body)
			}
			releaseBody(buf)
		}
	}

	// A body already limited by Caddy's request_body (http.MaxBytesReader) is too large, not invalid.
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.Body = http.MaxBytesReader(httptest.NewRecorder(), io.NopCloser(strings.NewReader("0123456789")), 4)
	r.ContentLength = -1
	if _, rej := readBody(r, 100); rej != ErrBodyTooLarge {
		t.Errorf("MaxBytesReader over its limit: %v, expected %v", rej, ErrBodyTooLarge)
	}
}

func TestReplaceBody(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.TransferEncoding = []string{"chunked"}
	r.ContentLength = -1
	buf := bodyBuffers.Get().(*bytes.Buffer)
	buf.WriteString("hello")
	replaceBody(r, buf)
	if r.ContentLength != 5 || r.Header.Get("Content-Length") != "5" || r.TransferEncoding != nil {
		t.Errorf("ContentLength %d, header %q, TE %v", r.ContentLength, r.Header.Get("Content-Length"), r.TransferEncoding)
	}
	b, _ := io.ReadAll(r.Body)
	if string(b) != "hello" {
		t.Errorf("body %q", b)
	}
	if err := r.Body.Close(); err != nil {
		t.Error(err)
	}
	if err := r.Body.Close(); err != nil { // twice: must not put the buffer back twice
		t.Error(err)
	}
	if n, _ := r.Body.Read(make([]byte, 1)); n != 0 {
		t.Error("read after close returned data")
	}

	empty := httptest.NewRequest(http.MethodPost, "/", nil)
	replaceBody(empty, bodyBuffers.Get().(*bytes.Buffer))
	if empty.Body != http.NoBody || empty.ContentLength != 0 || empty.Header.Get("Content-Length") != "0" {
		t.Errorf("empty body: %T %d %q", empty.Body, empty.ContentLength, empty.Header.Get("Content-Length"))
	}
}

// The Content-Length header upstream always says what the body holds, whatever the client sent.
func TestReplaceBodyContentLengthHeader(t *testing.T) {
	for _, sent := range [][]string{nil, {"5"}, {"99"}, {"5", "5"}, {"05"}, {""}} {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		if sent != nil {
			r.Header["Content-Length"] = sent
		}
		buf := bodyBuffers.Get().(*bytes.Buffer)
		buf.WriteString("hello")
		replaceBody(r, buf).Close()
		if got := r.Header["Content-Length"]; len(got) != 1 || got[0] != "5" {
			t.Errorf("client sent %q: Content-Length upstream %q, want [5]", sent, got)
		}
	}
}

// TestReplaceBodyConcurrentClose: net/http's transports may close a request
// body from another goroutine while still reading it (http.RoundTripper: "may
// do so in a separate goroutine even after RoundTrip returns"; the HTTP/2
// transport does when a stream is reset). Close must then be safe; run with -race.
func TestReplaceBodyConcurrentClose(t *testing.T) {
	for range 50 {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		buf := bodyBuffers.Get().(*bytes.Buffer)
		buf.Write(bytes.Repeat([]byte("s"), 64<<10))
		replaceBody(r, buf)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			p := make([]byte, 512)
			for {
				if _, err := r.Body.Read(p); err != nil {
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			_ = r.Body.Close()
		}()
		wg.Wait()
	}
}
