// kvdemo uses libkv, a key-value store written in Python, from Go through the bindings
// cpex_codegen generated (examples/codegen/kvstore/go). Build the library first:
// `make example-codegen` (or `make lib-kv`).
package main

import (
	"errors"
	"fmt"
	"os"

	kv "github.com/cpex-dev/cpex/examples/codegen/kvstore/go"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kvdemo:", err)
		os.Exit(1)
	}
}

func run() error {
	if err := kv.CheckVersion(); err != nil {
		return err
	}
	store, err := kv.StoreNew()
	if err != nil {
		return err
	}
	if err := kv.Put(store, "greeting", []byte("hello from Python")); err != nil {
		return err
	}
	value, err := kv.Get(store, "greeting")
	if err != nil {
		return err
	}
	fmt.Printf("get greeting: %s\n", value)
	n, err := kv.Count(store)
	if err != nil {
		return err
	}
	fmt.Printf("count: %d\n", n)

	// A record: kv_stats returns a KvStats as MessagePack; DecodeRecord makes it the
	// generated struct.
	raw, err := kv.Stats(store)
	if err != nil {
		return err
	}
	var stats kv.KvStats
	if err := kv.DecodeRecord(raw, &stats); err != nil {
		return err
	}
	fmt.Printf("stats: count=%d keys=%v sizes=%v total_bytes=%d first_value=%q\n",
		stats.Count, stats.Keys, stats.Sizes, stats.TotalBytes, stats.FirstValue)

	// Failures carry their class and the implementation's message.
	_, err = kv.Get(store, "missing")
	fmt.Printf("get missing: not found=%t: %v\n", errors.Is(err, kv.ErrKvNotFound), err)
	err = kv.Put(store, "", []byte("x"))
	fmt.Printf("put empty key: invalid input=%t: %v\n", errors.Is(err, kv.ErrKvInvalidInput), err)

	if err := kv.StoreFree(store); err != nil {
		return err
	}
	// The handle is a checked token: using it after the free is an error, not a crash.
	err = kv.Put(store, "greeting", nil)
	fmt.Printf("put after free: invalid handle=%t\n", errors.Is(err, kv.ErrKvInvalidHandle))
	return nil
}
