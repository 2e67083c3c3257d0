// httpanchor: the Send a user would write with Go's net/http, the anchor of bench/http.ts: the
// same JSON request, the same validation (notification/validate.ts's limits, unknown fields
// refused, valid UTF-8) and the same JSON answer, with no delivery behind it.
package main

import (
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"
)

type sendRequest struct {
	Recipient string            `json:"recipient"`
	Title     string            `json:"title"`
	Body      string            `json:"body"`
	Data      map[string]string `json:"data"`
}

type sendResponse struct {
	ID          string `json:"id"`
	CreatedAtMs string `json:"createdAtMs"`
	Delivered   uint32 `json:"delivered"`
	InstanceID  string `json:"instanceId"`
	Position    string `json:"position"`
	Epoch       string `json:"epoch"`
	Stored      bool   `json:"stored"`
}

func problem(r *sendRequest) string {
	if r.Recipient == "" {
		return "recipient is required"
	}
	if len(r.Recipient) > 256 {
		return "recipient is too long"
	}
	for _, c := range r.Recipient {
		if c < 0x20 || c == 0x7f {
			return "recipient must not contain control characters"
		}
	}
	if r.Title == "" && r.Body == "" {
		return "title or body is required"
	}
	if len(r.Title) > 1024 || len(r.Body) > 65536 {
		return "title or body is too long"
	}
	if len(r.Data) > 64 {
		return "too many data entries"
	}
	for k, v := range r.Data {
		if k == "" || len(k) > 128 || len(v) > 4096 || !utf8.ValidString(k) || !utf8.ValidString(v) {
			return "bad data entry"
		}
	}
	if !utf8.ValidString(r.Recipient) || !utf8.ValidString(r.Title) || !utf8.ValidString(r.Body) {
		return "invalid UTF-8"
	}
	return ""
}

func uuid() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func fail(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("content-type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"code": code, "message": message})
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()
	http.HandleFunc("/notification.v1.NotificationService/Send", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			fail(w, 405, "unimplemented", "use POST")
			return
		}
		if r.Header.Get("content-type") != "application/json" {
			fail(w, 415, "unimplemented", "use application/json")
			return
		}
		var req sendRequest
		decoder := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
		decoder.DisallowUnknownFields()
		if err := decoder.Decode(&req); err != nil {
			fail(w, 400, "invalid_argument", err.Error())
			return
		}
		if p := problem(&req); p != "" {
			fail(w, 400, "invalid_argument", p)
			return
		}
		w.Header().Set("content-type", "application/json")
		json.NewEncoder(w).Encode(sendResponse{
			ID:          uuid(),
			CreatedAtMs: strconv.FormatInt(time.Now().UnixMilli(), 10),
			InstanceID:  "anchor",
			Position:    "0",
		})
	})
	server := &http.Server{Addr: *addr, ReadHeaderTimeout: 10 * time.Second}
	fmt.Println("listening")
	if err := server.ListenAndServe(); err != nil {
		fmt.Println(err)
	}
}
