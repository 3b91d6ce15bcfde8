// loadgen: back-to-back unary FraudScoring/Score calls over N connections, one caller per
// connection, for a fixed time; prints one JSON line (calls, errors, seconds, CPU).
//
// The requests are TransactionRequest messages serialized beforehand by the benchmark
// (each a uint32 big-endian length, then the bytes), sent as they are: no per-call
// encoding, so the client costs little CPU beside the server it measures. Caller k sends
// requests k, k+N, k+2N, ...; a run that needs more than the file holds wraps around and
// says how many calls repeated a request.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const method = "/fraud.v1.FraudScoring/Score"

// rawCodec sends bytes that are already a serialized message and keeps the reply's bytes.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append((*(v.(*[]byte)))[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

type result struct {
	Calls     int            `json:"calls"`
	Errors    int            `json:"errors"`
	Codes     map[string]int `json:"codes"`
	Repeated  int            `json:"repeated"`
	Workers   map[string]int `json:"workers"` // server worker pid -> connections
	Seconds   float64        `json:"seconds"`
	CPUSecond float64        `json:"cpu_seconds"`
	P50Ms     float64        `json:"p50_ms"`
	P99Ms     float64        `json:"p99_ms"`
}

func readRequests(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][]byte
	var size [4]byte
	for {
		if _, err := io.ReadFull(f, size[:]); err == io.EOF {
			return out, nil
		} else if err != nil {
			return nil, err
		}
		msg := make([]byte, binary.BigEndian.Uint32(size[:]))
		if _, err := io.ReadFull(f, msg); err != nil {
			return nil, err
		}
		out = append(out, msg)
	}
}

func cpuSeconds() float64 {
	var u syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &u)
	return float64(u.Utime.Nano()+u.Stime.Nano()) / 1e9
}

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "server address")
	connections := flag.Int("connections", 16, "connections, one caller each")
	duration := flag.Duration("duration", 10*time.Second, "how long to call")
	requests := flag.String("requests", "", "file of length-prefixed serialized requests")
	token := flag.String("token", "", "caller token, sent as `authorization: Bearer <token>`")
	flag.Parse()
	msgs, err := readRequests(*requests)
	if err != nil || len(msgs) == 0 {
		fmt.Fprintf(os.Stderr, "loadgen: no requests in %q: %v\n", *requests, err)
		os.Exit(2)
	}
	n := *connections
	conns := make([]*grpc.ClientConn, n)
	for k := range conns {
		conns[k], err = grpc.NewClient("passthrough:///"+*addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
		if err != nil {
			fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
			os.Exit(2)
		}
		defer conns[k].Close()
	}
	call := func(k, i int, reply *[]byte, opts ...grpc.CallOption) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if *token != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+*token)
		}
		return conns[k].Invoke(ctx, method, &msgs[i%len(msgs)], reply, opts...)
	}
	// Every connection is open and has answered once before the clock starts; the answer
	// names the server worker that holds the connection.
	total := result{Codes: map[string]int{}, Workers: map[string]int{}}
	for k := range conns {
		var reply []byte
		var trailer metadata.MD
		if err := call(k, k, &reply, grpc.Trailer(&trailer)); err != nil {
			fmt.Fprintf(os.Stderr, "loadgen: warm-up call on connection %d: %v\n", k, err)
			os.Exit(1)
		}
		total.Workers[strings.Join(trailer.Get("fraudops-worker"), ",")]++
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	latencies := make([][]time.Duration, n)
	cpu, start := cpuSeconds(), time.Now()
	deadline := start.Add(*duration)
	for k := 0; k < n; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			mine := result{Codes: map[string]int{}}
			var reply []byte
			for i := n + k; time.Now().Before(deadline); i += n {
				if i >= len(msgs) {
					mine.Repeated++
				}
				began := time.Now()
				err := call(k, i, &reply)
				latencies[k] = append(latencies[k], time.Since(began))
				if err != nil {
					mine.Errors++
					mine.Codes[status.Code(err).String()]++
				} else {
					mine.Calls++
				}
			}
			mu.Lock()
			total.Calls += mine.Calls
			total.Errors += mine.Errors
			total.Repeated += mine.Repeated
			for c, v := range mine.Codes {
				total.Codes[c] += v
			}
			mu.Unlock()
		}(k)
	}
	wg.Wait()
	total.Seconds = time.Since(start).Seconds()
	total.CPUSecond = cpuSeconds() - cpu
	total.P50Ms, total.P99Ms = percentiles(latencies)
	json.NewEncoder(os.Stdout).Encode(total)
}

// percentiles: the p50 and p99 of every call's latency, in milliseconds.
func percentiles(perCaller [][]time.Duration) (float64, float64) {
	var all []time.Duration
	for _, l := range perCaller {
		all = append(all, l...)
	}
	if len(all) == 0 {
		return 0, 0
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	at := func(q float64) float64 { return float64(all[int(q*float64(len(all)-1))]) / 1e6 }
	return at(0.50), at(0.99)
}
