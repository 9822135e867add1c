// Command etcd-mutex-bench measures etcd's own concurrency.Mutex in one process: the
// yardstick distlock's handoff rate and latency are held to (bench/locks.py).
//
// Why a program and not etcdctl lock: etcdctl starts a process, a session and a lease
// per hold, so it measures process start-up as much as the Mutex. Here N sessions (each
// its own client and lease, as N processes would have) contend for one lock in one
// process, all created before the clock starts.
//
// Output: one JSON object on stdout: the holds (wall-clock acquired/released in seconds
// and the revision of the response that granted the lock, which grows with every grant)
// of the contended run, and the uncontended acquire+release cycles per second of one
// session. --cycles 0 or --handoffs 0 skips that run, so a caller can charge the CPU of
// each run separately.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

type hold struct {
	Acquired float64 `json:"acquired"`
	Released float64 `json:"released"`
	Token    int64   `json:"token"`
}

type result struct {
	Holds              []hold  `json:"holds"`
	UncontendedPerSec  float64 `json:"uncontended_per_second"`
	UncontendedCycles  int     `json:"uncontended_cycles"`
	ContendedWallClock float64 `json:"contended_seconds"`
}

func seconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func session(endpoints []string, ttl int) (*clientv3.Client, *concurrency.Session, error) {
	client, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to %v: %w", endpoints, err)
	}
	s, err := concurrency.NewSession(client, concurrency.WithTTL(ttl))
	if err != nil {
		client.Close()
		return nil, nil, fmt.Errorf("opening a session: %w", err)
	}
	return client, s, nil
}

func uncontended(endpoints []string, name string, ttl, cycles int) (float64, error) {
	client, s, err := session(endpoints, ttl)
	if err != nil {
		return 0, err
	}
	defer client.Close()
	defer s.Close()
	m := concurrency.NewMutex(s, name)
	ctx := context.Background()
	started := time.Now()
	for i := 0; i < cycles; i++ {
		if err := m.Lock(ctx); err != nil {
			return 0, fmt.Errorf("lock: %w", err)
		}
		if err := m.Unlock(ctx); err != nil {
			return 0, fmt.Errorf("unlock: %w", err)
		}
	}
	return float64(cycles) / time.Since(started).Seconds(), nil
}

func contended(endpoints []string, name string, ttl, contenders, handoffs int) ([]hold, float64, error) {
	type member struct {
		client  *clientv3.Client
		session *concurrency.Session
	}
	members := make([]member, 0, contenders)
	defer func() {
		for _, m := range members {
			m.session.Close()
			m.client.Close()
		}
	}()
	for i := 0; i < contenders; i++ {
		client, s, err := session(endpoints, ttl)
		if err != nil {
			return nil, 0, err
		}
		members = append(members, member{client, s})
	}
	var remaining atomic.Int64
	remaining.Store(int64(handoffs))
	var mu sync.Mutex
	var holds []hold
	var firstErr error
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, m := range members {
		wg.Add(1)
		go func(s *concurrency.Session) {
			defer wg.Done()
			lock := concurrency.NewMutex(s, name)
			ctx := context.Background()
			<-start
			for remaining.Add(-1) >= 0 {
				if err := lock.Lock(ctx); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				acquired := time.Now()
				released := time.Now()
				token := lock.Header().Revision
				if err := lock.Unlock(ctx); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				mu.Lock()
				holds = append(holds, hold{seconds(acquired), seconds(released), token})
				mu.Unlock()
			}
		}(m.session)
	}
	started := time.Now()
	close(start)
	wg.Wait()
	return holds, time.Since(started).Seconds(), firstErr
}

func main() {
	endpoints := flag.String("endpoints", "", "etcd client URLs, comma-separated")
	name := flag.String("name", "bench/go-mutex", "lock name (key prefix)")
	contenders := flag.Int("contenders", 8, "sessions contending for the lock")
	handoffs := flag.Int("handoffs", 400, "acquisitions in the contended run")
	cycles := flag.Int("cycles", 400, "uncontended acquire+release cycles")
	ttl := flag.Int("ttl", 10, "session lease TTL, seconds")
	flag.Parse()
	if *endpoints == "" || *contenders < 2 || *handoffs < 0 || *cycles < 0 {
		fmt.Fprintln(os.Stderr, "usage: etcd-mutex-bench --endpoints URL[,URL] [--contenders N>=2] [--handoffs N] [--cycles N] (0 skips a run)")
		os.Exit(2)
	}
	eps := strings.Split(*endpoints, ",")
	out := result{Holds: []hold{}, UncontendedCycles: *cycles}
	var err error
	if *cycles > 0 {
		if out.UncontendedPerSec, err = uncontended(eps, *name+"-solo", *ttl, *cycles); err != nil {
			fmt.Fprintln(os.Stderr, "etcd-mutex-bench:", err)
			os.Exit(1)
		}
	}
	if *handoffs > 0 {
		if out.Holds, out.ContendedWallClock, err = contended(eps, *name, *ttl, *contenders, *handoffs); err != nil {
			fmt.Fprintln(os.Stderr, "etcd-mutex-bench:", err)
			os.Exit(1)
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "etcd-mutex-bench:", err)
		os.Exit(1)
	}
}
