package caddymodule

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"sync"
)

// bodyBuffers recycles the buffers signed bodies are read into.
var bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// readBody reads at most limit bytes of a request body into a pooled buffer.
// A declared Content-Length over the limit is refused before reading anything.
// The caller returns the buffer with releaseBody once the request is done.
func readBody(r *http.Request, limit int64) (*bytes.Buffer, *Rejection) {
	if r.ContentLength > limit {
		return nil, ErrBodyTooLarge
	}
	buf := bodyBuffers.Get().(*bytes.Buffer)
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	_, err := buf.ReadFrom(io.LimitReader(r.Body, limit+1))
	var maxBytes *http.MaxBytesError
	switch {
	case errors.As(err, &maxBytes), err == nil && int64(buf.Len()) > limit:
		releaseBody(buf)
		return nil, ErrBodyTooLarge
	case err != nil:
		releaseBody(buf)
		return nil, ErrInvalidBody
	}
	return buf, nil
}

func releaseBody(buf *bytes.Buffer) {
	buf.Reset()
	bodyBuffers.Put(buf)
}
