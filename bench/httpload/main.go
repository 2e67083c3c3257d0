// httpload: closed-loop HTTP/1.1 keep-alive POSTs of one Send (JSON, or Connect's binary proto)
// to the web edge or to the Go anchor, the same flags and output as sendload, so bench/http.ts
// compares them with gRPC Sends from the same kind of client.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8081", "target host:port")
	conc := flag.Int("c", 32, "concurrent callers")
	conns := flag.Int("conns", 1, "connections")
	dur := flag.Duration("d", 5*time.Second, "duration")
	warm := flag.Duration("w", 1*time.Second, "warm-up")
	kind := flag.String("type", "json", "json or proto")
	header := flag.String("header", "", `one more request header, "name: value"`)
	flag.Parse()
	url := "http://" + *addr + "/notification.v1.NotificationService/Send"
	body := []byte(`{"recipient":"bench","title":"t","body":"b"}`)
	contentType := "application/json"
	if *kind == "proto" {
		body = nil
		for i, s := range []string{"bench", "t", "b"} {
			body = protowire.AppendTag(body, protowire.Number(i+1), protowire.BytesType)
			body = protowire.AppendString(body, s)
		}
		contentType = "application/proto"
	}
	client := &http.Client{Transport: &http.Transport{
		MaxConnsPerHost:     *conns,
		MaxIdleConnsPerHost: *conns,
		DisableCompression:  true,
	}}
	run := func(d time.Duration) ([]time.Duration, int) {
		var mu sync.Mutex
		var lats []time.Duration
		errs := 0
		deadline := time.Now().Add(d)
		var wg sync.WaitGroup
		for i := 0; i < *conc; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []time.Duration
				e := 0
				for time.Now().Before(deadline) {
					t := time.Now()
					req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
					req.Header.Set("content-type", contentType)
					if name, value, ok := strings.Cut(*header, ":"); ok {
						req.Header.Set(name, strings.TrimSpace(value))
					}
					resp, err := client.Do(req)
					if err != nil {
						e++
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						e++
						continue
					}
					mine = append(mine, time.Since(t))
				}
				mu.Lock()
				lats = append(lats, mine...)
				errs += e
				mu.Unlock()
			}()
		}
		wg.Wait()
		return lats, errs
	}
	if _, errs := run(*warm); errs > 0 && *warm > 0 {
		fmt.Fprintf(os.Stderr, "httpload: %d errors in the warm-up\n", errs)
	}
	t0 := time.Now()
	lats, errs := run(*dur)
	el := time.Since(t0)
	sort.Slice(lats, func(a, b int) bool { return lats[a] < lats[b] })
	p := func(q float64) float64 {
		if len(lats) == 0 {
			return 0
		}
		return float64(lats[int(q*float64(len(lats)-1))].Microseconds()) / 1000
	}
	fmt.Printf("rps=%.0f ok=%d errors=%d p50_ms=%.3f p99_ms=%.3f max_ms=%.3f\n",
		float64(len(lats))/el.Seconds(), len(lats), errs, p(0.5), p(0.99), p(1))
}
