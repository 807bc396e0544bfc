//go:build cgo

package cpex

import "context"

// await runs f and returns what it returns, or goctx's error as soon as goctx ends.
// A goctx that can never end (context.Background) costs nothing: f runs on the
// caller's goroutine. Otherwise f runs on its own goroutine; when goctx ends first,
// f goes on and abandoned (when not nil) receives its result once it finishes, to
// release what nobody will use.
func await[T any](goctx context.Context, f func() T, abandoned func(T)) (T, error) {
	if goctx.Done() == nil {
		return f(), nil
	}
	done := make(chan T, 1)
	go func() { done <- f() }()
	select {
	case v := <-done:
		return v, nil
	case <-goctx.Done():
		if abandoned != nil {
			go func() { abandoned(<-done) }()
		}
		var zero T
		return zero, goctx.Err()
	}
}
