// Command upstream stands in for the unmodified backend behind the sidecar: it
// appends every request it receives, exactly as received, to a JSONL log and
// answers 200 with the same JSON, so tests can see what got through and
// whether anything got through at all.
package main

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"os"
	"sync"
)

// Request is one log line; the integration tests decode the same shape.
type Request struct {
	Method           string              `json:"method"`
	Path             string              `json:"path"`
	Headers          map[string][]string `json:"headers"`
	BodyBase64       string              `json:"body_base64"`
	ContentLength    int64               `json:"content_length"`
	TransferEncoding []string            `json:"transfer_encoding"`
	Trailers         map[string][]string `json:"trailers,omitempty"`
}

func main() {
	listen := flag.String("listen", "127.0.0.1:9000", "address to listen on")
	logPath := flag.String("log", "upstream.jsonl", "JSONL file every request is appended to")
	flag.Parse()

	logFile, err := os.OpenFile(*logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		line, err := json.Marshal(Request{
			Method:           r.Method,
			Path:             r.URL.Path,
			Headers:          r.Header,
			BodyBase64:       base64.StdEncoding.EncodeToString(body),
			ContentLength:    r.ContentLength,
			TransferEncoding: r.TransferEncoding,
			Trailers:         r.Trailer, // filled once the body was read
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		// Logged before answering: once a client has the response, the line is there.
		mu.Lock()
		_, err = logFile.Write(append(line, '\n'))
		mu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(line)
	})
	log.Fatal(http.ListenAndServe(*listen, handler))
}
