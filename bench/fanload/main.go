// fanload: N subscribers of one recipient, over SSE (the web edge) or gRPC Subscribe, that count
// what they receive. Prints "ready" once every stream is open (SSE: answered 200; gRPC: response
// headers), then "done got=N ms=T" once the streams together got -want notifications, T being the
// milliseconds from the first to the last.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"
)

type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append((*(v.(*[]byte)))[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func main() {
	addr := flag.String("addr", "127.0.0.1:8081", "target host:port")
	mode := flag.String("mode", "sse", "sse or grpc")
	n := flag.Int("n", 1000, "streams")
	conns := flag.Int("conns", 100, "gRPC connections the streams share")
	recipient := flag.String("recipient", "fan", "recipient")
	want := flag.Int64("want", 0, "notifications to receive in all")
	timeout := flag.Duration("timeout", 60*time.Second, "give up after")
	flag.Parse()
	var got atomic.Int64
	var first, last atomic.Int64
	received := func() {
		now := time.Now().UnixNano()
		first.CompareAndSwap(0, now)
		if got.Add(1) == *want {
			last.Store(now)
		}
	}
	var opened sync.WaitGroup
	opened.Add(*n)
	if *mode == "sse" {
		transport := &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: *n, DisableCompression: true}
		client := &http.Client{Transport: transport}
		for i := 0; i < *n; i++ {
			go func() {
				resp, err := client.Get("http://" + *addr + "/v1/recipients/" + *recipient + "/events")
				if err != nil || resp.StatusCode != 200 {
					fmt.Fprintln(os.Stderr, "fanload: stream refused:", err)
					os.Exit(1)
				}
				opened.Done()
				reader := bufio.NewReader(resp.Body)
				for {
					line, err := reader.ReadString('\n')
					if err != nil {
						return
					}
					if strings.HasPrefix(line, "data:") {
						received()
					}
				}
			}()
		}
	} else {
		var req []byte
		req = protowire.AppendTag(req, 1, protowire.BytesType)
		req = protowire.AppendString(req, *recipient)
		var ccs []*grpc.ClientConn
		for i := 0; i < *conns; i++ {
			cc, err := grpc.Dial(*addr, grpc.WithInsecure(), grpc.WithBlock(),
				grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			ccs = append(ccs, cc)
		}
		desc := &grpc.StreamDesc{ServerStreams: true}
		for i := 0; i < *n; i++ {
			go func(i int) {
				stream, err := ccs[i%len(ccs)].NewStream(context.Background(), desc, "/notification.v1.NotificationService/Subscribe")
				if err == nil {
					err = stream.SendMsg(&req)
				}
				if err == nil {
					err = stream.CloseSend()
				}
				var header metadata.MD
				if err == nil {
					header, err = stream.Header()
				}
				if err != nil || header == nil {
					fmt.Fprintln(os.Stderr, "fanload: stream refused:", err)
					os.Exit(1)
				}
				opened.Done()
				for {
					var msg []byte
					if stream.RecvMsg(&msg) != nil {
						return
					}
					received()
				}
			}(i)
		}
	}
	opened.Wait()
	fmt.Println("ready")
	deadline := time.Now().Add(*timeout)
	for got.Load() < *want && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	ms := float64(last.Load()-first.Load()) / 1e6
	fmt.Printf("done got=%d ms=%.1f\n", got.Load(), ms)
}
