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

// replaceBody gives the rest of the chain the verified bytes with an exact
// length. The buffer returns to the pool when the consumer (the proxy
// transport) closes the body, not when the handler returns: the transport may
// still be writing it then.
func replaceBody(r *http.Request, buf *bytes.Buffer) {
	n := buf.Len()
	if n == 0 {
		releaseBody(buf)
		r.Body = http.NoBody
	} else {
		r.Body = &pooledBody{buf: buf}
	}
	r.ContentLength = int64(n)
	r.TransferEncoding = nil
	r.Header.Set("Content-Length", strconv.Itoa(n))
}

// pooledBody reads a pooled buffer. Transports may Close it from another
// goroutine while it is being read or written, so the buffer goes back to the
// pool only once no Read or WriteTo is using it.
type pooledBody struct {
	mu      sync.Mutex
	buf     *bytes.Buffer
	off     int
	writing bool // a WriteTo is writing from buf outside the lock
	closed  bool
}

func (b *pooledBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.writing {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.off >= b.buf.Len() {
		return 0, io.EOF
	}
	n := copy(p, b.buf.Bytes()[b.off:])
	b.off += n
	return n, nil
}

// WriteTo hands the rest of the body to w in one Write: the proxy transport's
// bufio.Writer then sends it in one system call, not one per 4 KiB read.
func (b *pooledBody) WriteTo(w io.Writer) (int64, error) {
	b.mu.Lock()
	if b.closed || b.writing {
		b.mu.Unlock()
		return 0, http.ErrBodyReadAfterClose
	}
	b.writing = true
	rest := b.buf.Bytes()[b.off:]
	b.mu.Unlock()

	n, err := w.Write(rest)

	b.mu.Lock()
	defer b.mu.Unlock()
	b.off += n
	b.writing = false
	if b.closed { // closed while writing: release now that nothing uses the buffer
		b.release()
	}
	return int64(n), err
}

func (b *pooledBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed = true
		if !b.writing {
			b.release()
		}
	}
	return nil
}

func (b *pooledBody) release() {
	releaseBody(b.buf)
	b.buf = nil
}

func releaseBody(buf *bytes.Buffer) {
	buf.Reset()
	bodyBuffers.Put(buf)
	buffersInUse.Add(-1)
}
