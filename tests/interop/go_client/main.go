// go_client: a client we did not write the stack of, built from Debian's Go packages in GOPATH
// mode (no module downloads), used by tests/interop_test.ts.
//
//	go_client calls   -etcd HOST:PORT -target /services/NAME [-authority A] [-seconds S]
//	go_client reflect -addr HOST:PORT
//	go_client send    -addr HOST:PORT -recipient R [-token JWT]
//	go_client matrix  -addr HOST:PORT PATTERN...
//	go_client once    -addr HOST:PORT -key KEY RECIPIENT...
//
// calls: dials etcd:///<target> through etcd's own naming resolver (clientv3/naming/resolver)
// with grpc-go's round_robin, sends notifications in a loop, and prints one JSON line per 250 ms
// window: which instance answered how often, and errors.
// reflect: lists services over server reflection, fetches the files that define them and builds
// them with protodesc.NewFiles, which rejects descriptors that are not what protoc would write.
// send: one Send with `authorization: Bearer <token>` metadata (none without -token); prints the
// status code (OK, Unauthenticated, PermissionDenied, ...).
// once: a Send to the first recipient and a SendMany to all of them, each made twice at once with
// the idempotency key (as a retry would, with a deadline and a request id of its own per call); prints
// one JSON line: {"send": [[id, position] x2], "many": [[[id, position, code] per result] x2]}.
// matrix: calls as Go services call each other, on one ClientConn (one connection) for every
// pattern in turn; the patterns are those of tests/interop/node_matrix.cjs. One JSON line per pattern.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/naming/resolver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"
)

// rawCodec sends and receives message bytes as they are (no generated stubs needed).
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append((*(v.(*[]byte)))[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "go_client: "+format+"\n", args...)
	os.Exit(1)
}

// stringField reads string field `field` of an encoded message ("" when absent).
func stringField(b []byte, field protowire.Number) string {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		if num == field && typ == protowire.BytesType {
			v, _ := protowire.ConsumeString(b)
			return v
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return ""
		}
		b = b[m:]
	}
	return ""
}

func calls(endpoint, target, authority string, seconds int) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		fail("etcd: %v", err)
	}
	defer cli.Close()
	builder, err := resolver.NewBuilder(cli)
	if err != nil {
		fail("resolver: %v", err)
	}
	opts := []grpc.DialOption{
		grpc.WithInsecure(),
		grpc.WithResolvers(builder),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})),
	}
	if authority != "" {
		opts = append(opts, grpc.WithAuthority(authority))
	}
	conn, err := grpc.Dial("etcd:///"+target, opts...)
	if err != nil {
		fail("dial: %v", err)
	}
	defer conn.Close()
	var req []byte
	req = protowire.AppendTag(req, 1, protowire.BytesType)
	req = protowire.AppendString(req, "go-interop")
	req = protowire.AppendTag(req, 2, protowire.BytesType)
	req = protowire.AppendString(req, "hello from grpc-go")
	end := time.Now().Add(time.Duration(seconds) * time.Second)
	for time.Now().Before(end) {
		window := time.Now().Add(250 * time.Millisecond)
		counts := map[string]int{}
		errors := 0
		lastError := ""
		for time.Now().Before(window) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			var resp []byte
			err := conn.Invoke(ctx, "/notification.v1.NotificationService/Send", &req, &resp)
			cancel()
			if err != nil {
				errors++
				lastError = err.Error()
				time.Sleep(10 * time.Millisecond)
				continue
			}
			counts[stringField(resp, 4)]++ // SendResponse.instance_id
		}
		line, _ := json.Marshal(map[string]interface{}{"counts": counts, "errors": errors, "lastError": lastError})
		fmt.Println(string(line))
	}
}

func reflect(addr string) {
	conn, err := grpc.Dial(addr, grpc.WithInsecure(), grpc.WithBlock(), grpc.WithTimeout(5*time.Second))
	if err != nil {
		fail("dial %s: %v", addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		fail("reflection stream: %v", err)
	}
	ask := func(req *rpb.ServerReflectionRequest) *rpb.ServerReflectionResponse {
		if err := stream.Send(req); err != nil {
			fail("send: %v", err)
		}
		resp, err := stream.Recv()
		if err != nil {
			fail("recv: %v", err)
		}
		if e := resp.GetErrorResponse(); e != nil {
			fail("reflection error %d: %s", e.ErrorCode, e.ErrorMessage)
		}
		return resp
	}
	listed := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{ListServices: "*"}})
	var names []string
	for _, s := range listed.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	sort.Strings(names)
	files := map[string]*descriptorpb.FileDescriptorProto{}
	for _, name := range names {
		resp := ask(&rpb.ServerReflectionRequest{
			MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: name},
		})
		for _, raw := range resp.GetFileDescriptorResponse().GetFileDescriptorProto() {
			fd := &descriptorpb.FileDescriptorProto{}
			if err := proto.Unmarshal(raw, fd); err != nil {
				fail("file for %s does not parse: %v", name, err)
			}
			files[fd.GetName()] = fd
		}
	}
	set := &descriptorpb.FileDescriptorSet{}
	for _, fd := range files {
		set.File = append(set.File, fd)
	}
	registry, err := protodesc.NewFiles(set)
	if err != nil {
		fail("protodesc rejects the served descriptors: %v", err)
	}
	var fileNames []string
	for name := range files {
		fileNames = append(fileNames, name)
	}
	sort.Strings(fileNames)
	line, _ := json.Marshal(map[string]interface{}{"services": names, "files": fileNames, "count": registry.NumFiles()})
	fmt.Println(string(line))
}

// send makes one Send with the token as a bearer credential and prints the status code.
func send(addr, token, recipient string) {
	conn, err := grpc.Dial(addr, grpc.WithInsecure(), grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		fail("dial %s: %v", addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	var req []byte
	for i, s := range []string{recipient, "from go"} {
		req = protowire.AppendTag(req, protowire.Number(i+1), protowire.BytesType)
		req = protowire.AppendString(req, s)
	}
	var resp []byte
	err = conn.Invoke(ctx, "/notification.v1.NotificationService/Send", &req, &resp)
	fmt.Println(status.Code(err).String())
}

func sendRequest(recipient, title string) []byte {
	var req []byte
	for i, s := range []string{recipient, title} {
		req = protowire.AppendTag(req, protowire.Number(i+1), protowire.BytesType)
		req = protowire.AppendString(req, s)
	}
	return req
}

func uuid() string {
	b := make([]byte, 16)
	rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// once makes each call twice with the same idempotency key (see the header).
func once(addr, key string, recipients []string) {
	conn, err := grpc.Dial(addr, grpc.WithInsecure(), grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		fail("dial %s: %v", addr, err)
	}
	defer conn.Close()
	call := func(method string, req []byte) []byte {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "x-request-id", uuid())
		var resp []byte
		if err := conn.Invoke(ctx, "/notification.v1.NotificationService/"+method, &req, &resp); err != nil {
			fail("%s: %v", method, err)
		}
		return resp
	}
	result := func(r []byte) []interface{} {
		return []interface{}{stringField(r, 1), varintField(r, 5), varintField(r, 8)}
	}
	send := protowire.AppendString(protowire.AppendTag(sendRequest(recipients[0], "once from go"), 5, protowire.BytesType), key)
	var many []byte
	for _, r := range recipients {
		many = protowire.AppendString(protowire.AppendTag(many, 1, protowire.BytesType), r)
	}
	many = protowire.AppendString(protowire.AppendTag(many, 2, protowire.BytesType), "many from go")
	many = protowire.AppendString(protowire.AppendTag(many, 5, protowire.BytesType), key)
	out := map[string]interface{}{}
	sends, manys := make([]interface{}, 2), make([]interface{}, 2)
	// Both tries of each call at once, on the one connection: a retry that goes out while the
	// first try is still under way.
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(2)
		go func(i int) {
			defer wg.Done()
			sends[i] = result(call("Send", send))[:2]
		}(i)
		go func(i int) {
			defer wg.Done()
			var results []interface{}
			b := call("SendMany", many)
			for len(b) > 0 {
				num, typ, n := protowire.ConsumeTag(b)
				b = b[n:]
				m := protowire.ConsumeFieldValue(num, typ, b)
				if num == 1 && typ == protowire.BytesType {
					v, _ := protowire.ConsumeBytes(b)
					results = append(results, result(v))
				}
				b = b[m:]
			}
			manys[i] = results
		}(i)
	}
	wg.Wait()
	out["send"], out["many"] = sends, manys
	line, _ := json.Marshal(out)
	fmt.Println(string(line))
}

type plan struct {
	calls, callers int
	metadata       func() []string
	subscribe      bool
}

func requestID() []string { return []string{"x-request-id", uuid()} }

func planOf(pattern string) plan {
	parts := strings.Split(pattern, ":")
	num := func(i int) int {
		n, err := strconv.Atoi(parts[i])
		if err != nil {
			fail("pattern %q: %v", pattern, err)
		}
		return n
	}
	switch parts[0] {
	case "deadline":
		return plan{calls: num(1), callers: 1, metadata: func() []string { return nil }}
	case "request-id":
		return plan{calls: num(1), callers: 1, metadata: requestID}
	case "binary":
		return plan{calls: num(1), callers: 1, metadata: func() []string {
			b := make([]byte, 16)
			rand.Read(b)
			return []string{"x-trace-bin", string(b)}
		}}
	case "keys":
		keys := num(1)
		return plan{calls: num(2), callers: 1, metadata: func() []string {
			var md []string
			for i := 0; i < keys; i++ {
				md = append(md, fmt.Sprintf("x-key-%d", i), fmt.Sprintf("value-%d", i))
			}
			return md
		}}
	case "fixed":
		bytes, fields := num(1), num(2)
		var md []string
		left := bytes
		for i := 0; i < fields; i++ {
			name := fmt.Sprintf("x-fixed-%d", i)
			size := bytes / fields
			if i == fields-1 {
				size = left
			}
			md = append(md, name, strings.Repeat("v", size-len(name)-32))
			left -= size
		}
		return plan{calls: 200, callers: 1, metadata: func() []string { return md }}
	case "concurrent":
		return plan{calls: num(1) * num(2), callers: num(1), metadata: requestID}
	case "subscribe":
		return plan{calls: num(1), callers: 1, metadata: requestID, subscribe: true}
	}
	fail("unknown pattern %q", pattern)
	return plan{}
}

func matrix(addr string, patterns []string) {
	conn, err := grpc.Dial(addr, grpc.WithInsecure(), grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		fail("dial %s: %v", addr, err)
	}
	defer conn.Close()
	send := func(md []string, recipient, title string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if len(md) > 0 {
			ctx = metadata.AppendToOutgoingContext(ctx, md...)
		}
		req := sendRequest(recipient, title)
		var resp []byte
		return conn.Invoke(ctx, "/notification.v1.NotificationService/Send", &req, &resp)
	}
	for _, pattern := range patterns {
		p := planOf(pattern)
		recipient := "go-" + uuid()
		var titles sync.Map
		ended := make(chan string, 1)
		cancelStream := func() {}
		if p.subscribe {
			ctx, cancel := context.WithCancel(context.Background())
			cancelStream = cancel
			stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true},
				"/notification.v1.NotificationService/Subscribe")
			if err != nil {
				fail("subscribe: %v", err)
			}
			req := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), recipient)
			if err := stream.SendMsg(&req); err != nil {
				fail("subscribe: %v", err)
			}
			stream.CloseSend()
			go func() {
				for {
					var msg []byte
					if err := stream.RecvMsg(&msg); err != nil {
						ended <- err.Error()
						return
					}
					titles.Store(stringField(msg, 3), true) // Notification.title
				}
			}()
			for i := 0; i < 100; i++ {
				if _, ok := titles.Load("matrix-ready"); ok {
					break
				}
				send(nil, recipient, "matrix-ready")
				time.Sleep(50 * time.Millisecond)
			}
		}
		var next, ok, failed int64
		var firstError atomic.Value
		var wg sync.WaitGroup
		for c := 0; c < p.callers; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for atomic.AddInt64(&next, 1) <= int64(p.calls) {
					if err := send(p.metadata(), "matrix-nobody", "matrix-call"); err != nil {
						atomic.AddInt64(&failed, 1)
						firstError.CompareAndSwap(nil, err.Error())
					} else {
						atomic.AddInt64(&ok, 1)
					}
				}
			}()
		}
		wg.Wait()
		result := map[string]interface{}{"pattern": pattern, "ok": ok, "failed": failed, "firstError": ""}
		if e := firstError.Load(); e != nil {
			result["firstError"] = e
		}
		if p.subscribe {
			err := send(requestID(), recipient, "matrix-last")
			got := false
			for i := 0; i < 100 && !got; i++ {
				_, got = titles.Load("matrix-last")
				if !got {
					time.Sleep(20 * time.Millisecond)
				}
			}
			open := err == nil && got
			select {
			case why := <-ended:
				open = false
				result["firstError"] = "subscribe: " + why
			default:
			}
			if !open && result["firstError"] == "" {
				result["firstError"] = "subscribe: matrix-last not received"
			}
			result["open"] = open
			cancelStream()
		}
		line, _ := json.Marshal(result)
		fmt.Println(string(line))
	}
}

// varintField reads varint field `field` of an encoded message (0 when absent).
func varintField(b []byte, field protowire.Number) uint64 {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0
		}
		b = b[n:]
		if num == field && typ == protowire.VarintType {
			v, _ := protowire.ConsumeVarint(b)
			return v
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return 0
		}
		b = b[m:]
	}
	return 0
}

// resume opens `streams` concurrent Subscribes on one connection, each with recover from a position
// (as a real client keeps it), a deadline and its own request id, and reads `count` notifications on
// each; then prints one JSON line per stream: {"stream", "recovered", "items": [{"title", "position",
// "epoch"}]}.
func resume(addr, recipient string, position uint64, epoch string, count, streams int) {
	conn, err := grpc.Dial(addr, grpc.WithInsecure(), grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		fail("dial: %v", err)
	}
	defer conn.Close()
	var req []byte
	req = protowire.AppendTag(req, 1, protowire.BytesType)
	req = protowire.AppendString(req, recipient)
	req = protowire.AppendTag(req, 2, protowire.VarintType)
	req = protowire.AppendVarint(req, 1) // recover
	req = protowire.AppendTag(req, 3, protowire.VarintType)
	req = protowire.AppendVarint(req, position)
	req = protowire.AppendTag(req, 4, protowire.BytesType)
	req = protowire.AppendString(req, epoch)
	results := make([][]byte, streams)
	var wg sync.WaitGroup
	for s := 0; s < streams; s++ {
		wg.Add(1)
		go func(s int) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ctx = metadata.AppendToOutgoingContext(ctx, "x-request-id", fmt.Sprintf("go-resume-%d", s))
			stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true},
				"/notification.v1.NotificationService/Subscribe")
			if err != nil {
				fail("subscribe: %v", err)
			}
			if err := stream.SendMsg(&req); err != nil {
				fail("send request: %v", err)
			}
			stream.CloseSend()
			header, err := stream.Header()
			if err != nil {
				fail("header: %v", err)
			}
			items := []map[string]interface{}{}
			for i := 0; i < count; i++ {
				var msg []byte
				if err := stream.RecvMsg(&msg); err != nil {
					fail("stream %d, receive %d: %v", s, i, err)
				}
				items = append(items, map[string]interface{}{
					"title":    stringField(msg, 3),
					"position": varintField(msg, 7),
					"epoch":    stringField(msg, 8),
				})
			}
			results[s], _ = json.Marshal(map[string]interface{}{
				"stream":    s,
				"recovered": header.Get("notification-recovered"),
				"items":     items,
			})
		}(s)
	}
	wg.Wait()
	for _, line := range results {
		fmt.Println(string(line))
	}
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: go_client calls|reflect [flags]")
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	endpoint := fs.String("etcd", "127.0.0.1:2379", "etcd endpoint")
	target := fs.String("target", "/services/notification-server", "key prefix the naming resolver follows")
	authority := fs.String("authority", "", ":authority to send (grpc.WithAuthority)")
	seconds := fs.Int("seconds", 3, "how long to send")
	addr := fs.String("addr", "", "server for reflect and send")
	token := fs.String("token", "", "bearer token for send")
	recipient := fs.String("recipient", "alice", "recipient for send")
	position := fs.Uint64("position", 0, "resume: the last position seen (0: everything held)")
	epoch := fs.String("epoch", "", "resume: the epoch of -position")
	count := fs.Int("count", 1, "resume: notifications to read")
	streams := fs.Int("streams", 1, "resume: concurrent streams on the one connection")
	key := fs.String("key", "", "once: the idempotency key")
	fs.Parse(os.Args[2:])
	switch os.Args[1] {
	case "calls":
		calls(*endpoint, *target, *authority, *seconds)
	case "reflect":
		reflect(*addr)
	case "send":
		send(*addr, *token, *recipient)
	case "matrix":
		matrix(*addr, fs.Args())
	case "once":
		once(*addr, *key, fs.Args())
	case "resume":
		resume(*addr, *recipient, *position, *epoch, *count, *streams)
	default:
		fail("unknown mode %q", os.Args[1])
	}
}
