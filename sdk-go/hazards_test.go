package cpex

import (
	"errors"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A plugin may not take signals from the Go host, and SIGINT / SIGTERM still reach
// the host after the runtime started and plugins loaded.
func TestSignalsStayWithTheHost(t *testing.T) {
	m, err := NewPluginManager(config(t, "", plugin("grabber", "SignalGrabber", pre)))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()
	err = m.Initialize()
	if !errors.Is(err, ErrCpexPipeline) || !strings.Contains(err.Error(), "'grabber'") || !strings.Contains(err.Error(), "may not install signal handlers") {
		t.Fatalf("Initialize = %v", err)
	}
	started(t, config(t, "", plugin("a", "Allow", pre)))
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, sig)
		if err := syscall.Kill(os.Getpid(), sig); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-ch:
			if got != sig {
				t.Fatalf("got %v", got)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%v never reached the Go host", sig)
		}
		signal.Stop(ch)
	}
}
