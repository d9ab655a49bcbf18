package caddymodule

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
)

// bodyBuffers recycles the buffers signed bodies are read into; buffersInUse
// counts those taken and not yet returned (a metric, so leaks show).
var (
	bodyBuffers  = sync.Pool{New: func() any { return new(bytes.Buffer) }}
	buffersInUse atomic.Int64
)

// readBody reads at most limit bytes of a request body into a pooled buffer.
// A declared Content-Length over the limit is refused before reading anything.
// The caller returns the buffer with releaseBody once the request is done.
func readBody(r *http.Request, limit int64) (*bytes.Buffer, *Rejection) {
	if r.ContentLength > limit {
		return nil, ErrBodyTooLarge
	}
	buf := bodyBuffers.Get().(*bytes.Buffer)
	buffersInUse.Add(1)
	if r.ContentLength > 0 {
		// MinRead more, so ReadFrom finds room to see EOF without growing (copying) the buffer.
		buf.Grow(int(r.ContentLength) + bytes.MinRead)
	}
	_, err := buf.ReadFrom(io.LimitReader(r.Body, limit+1))
	if rej := bodyRejection(err, int64(buf.Len()) > limit); rej != nil {
		releaseBody(buf)
		return nil, rej
	}
	return buf, nil
}

// bodyRejection tells why a read body is refused, or nil. It is apart from
// readBody so that only a failed read pays for errors.As's heap-allocated target.
func bodyRejection(err error, overLimit bool) *Rejection {
	if err == nil {
		if overLimit {
			return ErrBodyTooLarge
		}
		return nil
	}
	var maxBytes *http.MaxBytesError
	if errors.As(err, &maxBytes) {
		return ErrBodyTooLarge
	}
	return ErrInvalidBody
}

// replaceBody gives the rest of the chain the verified bytes with an exact
// length. The buffer returns to the pool when the body is closed, by the
// proxy transport or by the handler once the chain returns, whichever is first.
func replaceBody(r *http.Request, buf *bytes.Buffer) io.Closer {
	n := buf.Len()
	if n == 0 {
		releaseBody(buf)
		r.Body = http.NoBody
	} else {
		r.Body = &pooledBody{buf: buf}
	}
	r.ContentLength = int64(n)
	r.TransferEncoding = nil
	// Usually the client's header already says n: setting it again would allocate.
	var digits [20]byte
	length := strconv.AppendInt(digits[:0], int64(n), 10)
	if v := r.Header["Content-Length"]; len(v) != 1 || v[0] != string(length) {
		r.Header.Set("Content-Length", string(length))
	}
	return r.Body
}

// pooledBody reads a pooled buffer. Transports may Close it from another
// goroutine while a Read runs, so both take the lock, and the buffer goes
// back to the pool exactly once.
type pooledBody struct {
	mu  sync.Mutex
	buf *bytes.Buffer // nil once closed
	off int
}

func (b *pooledBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf == nil {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.off >= b.buf.Len() {
		return 0, io.EOF
	}
	n := copy(p, b.buf.Bytes()[b.off:])
	b.off += n
	return n, nil
}

func (b *pooledBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf != nil {
		releaseBody(b.buf)
		b.buf = nil
	}
	return nil
}

func releaseBody(buf *bytes.Buffer) {
	buf.Reset()
	bodyBuffers.Put(buf)
	buffersInUse.Add(-1)
}
