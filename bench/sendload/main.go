// sendload: closed-loop unary load on notification.v1.NotificationService/Send, the same shape
// and output as ../shared/tools/loadgen (which speaks only Health/Check), so Send is measured
// with a Go client that is not the bottleneck. No generated stubs: the request is encoded once
// with protowire and sent through a pass-through codec, so it builds from Debian's Go packages.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
)

// rawCodec sends and receives message bytes as they are.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append((*(v.(*[]byte)))[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// sendRequest encodes notification.v1.SendRequest{recipient, title, body}.
func sendRequest(recipient, title, body string) []byte {
	var b []byte
	for i, s := range []string{recipient, title, body} {
		b = protowire.AppendTag(b, protowire.Number(i+1), protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	return b
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "target")
	conc := flag.Int("c", 32, "concurrent callers")
	conns := flag.Int("conns", 1, "connections")
	dur := flag.Duration("d", 5*time.Second, "duration")
	warm := flag.Duration("w", 1*time.Second, "warm-up")
	recipient := flag.String("recipient", "bench", "recipient of every notification")
	flag.Parse()
	req := sendRequest(*recipient, "t", "b")
	var clients []*grpc.ClientConn
	for i := 0; i < *conns; i++ {
		cc, err := grpc.Dial(*addr, grpc.WithInsecure(), grpc.WithBlock(),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		clients = append(clients, cc)
	}
	run := func(d time.Duration) ([]time.Duration, int) {
		var mu sync.Mutex
		var lats []time.Duration
		errs := 0
		deadline := time.Now().Add(d)
		var wg sync.WaitGroup
		for i := 0; i < *conc; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				cc := clients[i%len(clients)]
				var mine []time.Duration
				var resp []byte
				e := 0
				for time.Now().Before(deadline) {
					t := time.Now()
					in := req
					err := cc.Invoke(context.Background(), "/notification.v1.NotificationService/Send", &in, &resp)
					if err != nil {
						e++
						continue
					}
					mine = append(mine, time.Since(t))
				}
				mu.Lock()
				lats = append(lats, mine...)
				errs += e
				mu.Unlock()
			}(i)
		}
		wg.Wait()
		return lats, errs
	}
	run(*warm)
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
