// Command leaderelection-bench measures lock handoffs through client-go's leaderelection
// with a LeaseLock: the yardstick for distlock's Kubernetes backend (bench/kube_locks.py).
//
// Each of -contenders goroutines has its own clientset (its own connections, as a
// separate pod would) and runs a LeaderElector on one Lease. A leader records when it
// got the lease, gives it up at once (ReleaseOnCancel clears the holder) and contends
// again, until -handoffs acquisitions happened. The time from one leader deciding to
// release to the next one leading is the handoff latency, defined as bench/locks.py
// defines it for distlock. There is no queue: who wins after a release is whoever's
// next retry comes first, so the order is not FIFO by design.
//
// Output: one JSON object on stdout with every hold (unix seconds) and the
// leaseTransitions counter the API server stored for each.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
)

type hold struct {
	Holder   string  `json:"holder"`
	Acquired float64 `json:"acquired"`
	Released float64 `json:"released"`
}

type recorder struct {
	mu        sync.Mutex
	holds     []hold
	remaining int
	done      chan struct{}
}

// take reserves one acquisition of the budget; false once it is spent.
func (r *recorder) take() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.remaining <= 0 {
		return false
	}
	r.remaining--
	return true
}

func (r *recorder) add(h hold) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.holds = append(r.holds, h)
	if r.remaining <= 0 && len(r.holds) > 0 {
		select {
		case <-r.done:
		default:
			close(r.done)
		}
	}
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the API server")
	namespace := flag.String("namespace", "default", "namespace of the Lease")
	name := flag.String("lease", "bench-handoff", "name of the Lease")
	contenders := flag.Int("contenders", 8, "goroutines contending, each with its own client")
	handoffs := flag.Int("handoffs", 200, "acquisitions to record")
	lease := flag.Duration("lease-duration", 15*time.Second, "LeaseDuration")
	renew := flag.Duration("renew-deadline", 10*time.Second, "RenewDeadline")
	retry := flag.Duration("retry-period", 2*time.Second, "RetryPeriod")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up after this long")
	flag.Parse()
	klog.SetOutput(os.Stderr)

	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fail("kubeconfig %s: %v", *kubeconfig, err)
	}
	// The defaults (5 QPS) would throttle the retries, which is not what is measured.
	config.QPS, config.Burst = 1000, 1000
	rec := &recorder{remaining: *handoffs, done: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var wg sync.WaitGroup
	ready := make(chan struct{})
	for i := 0; i < *contenders; i++ {
		client, err := kubernetes.NewForConfig(config)
		if err != nil {
			fail("client: %v", err)
		}
		identity := fmt.Sprintf("contender-%d", i)
		lock, err := resourcelock.New(resourcelock.LeasesResourceLock, *namespace, *name,
			client.CoreV1(), client.CoordinationV1(),
			resourcelock.ResourceLockConfig{Identity: identity})
		if err != nil {
			fail("lock: %v", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-ready
			for ctx.Err() == nil {
				select {
				case <-rec.done:
					return
				default:
				}
				contend(ctx, lock, identity, rec, *lease, *renew, *retry)
			}
		}()
	}
	close(ready)
	select {
	case <-rec.done:
	case <-ctx.Done():
	}
	cancel()
	wg.Wait()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.holds) < *handoffs {
		fail("only %d of %d acquisitions before the timeout", len(rec.holds), *handoffs)
	}
	out, _ := json.Marshal(map[string]any{"holds": rec.holds, "contenders": *contenders})
	fmt.Println(string(out))
}

// contend runs one election as identity; a won lease is given up at once.
func contend(parent context.Context, lock resourcelock.Interface, identity string,
	rec *recorder, lease, renew, retry time.Duration) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, LeaseDuration: lease, RenewDeadline: renew, RetryPeriod: retry,
		ReleaseOnCancel: true, Name: "bench",
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(context.Context) {
				acquired := time.Now()
				if !rec.take() {
					cancel()
					return
				}
				released := time.Now()
				rec.add(hold{Holder: identity, Acquired: unix(acquired), Released: unix(released)})
				cancel() // Run releases the lease (ReleaseOnCancel) and returns
			},
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		fail("elector: %v", err)
	}
	elector.Run(ctx)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "leaderelection-bench: "+format+"\n", args...)
	os.Exit(1)
}
