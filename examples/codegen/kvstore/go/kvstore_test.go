package kvstore_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	kv "github.com/cpex-dev/cpex/examples/codegen/kvstore/go"
)

func newStore(t *testing.T) *kv.Store {
	t.Helper()
	s, err := kv.StoreNew()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func wantErr(t *testing.T, err, class error, message string) {
	t.Helper()
	var e *kv.Error
	if !errors.Is(err, class) || !errors.As(err, &e) {
		t.Fatalf("got %v, want %v", err, class)
	}
	if !strings.Contains(e.Message, message) {
		t.Fatalf("message %q lacks %q", e.Message, message)
	}
}

func TestPutGetCount(t *testing.T) {
	s := newStore(t)
	defer kv.StoreFree(s)
	for _, k := range []string{"a", "b", "a"} {
		if err := kv.Put(s, k, []byte("v-"+k)); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := kv.Get(s, "a"); err != nil || string(v) != "v-a" {
		t.Fatalf("get a: %q, %v", v, err)
	}
	if err := kv.Put(s, "empty", nil); err != nil {
		t.Fatal(err)
	}
	if v, err := kv.Get(s, "empty"); err != nil || v == nil || len(v) != 0 {
		t.Fatalf("an empty value is present and empty: %#v, %v", v, err)
	}
	if n, err := kv.Count(s); err != nil || n != 3 {
		t.Fatalf("count: %d, %v", n, err)
	}
}

func TestFailuresCarryClassAndMessage(t *testing.T) {
	s := newStore(t)
	_, err := kv.Get(s, "missing")
	wantErr(t, err, kv.ErrKvNotFound, "kv_get: key 'missing'")
	wantErr(t, kv.Put(s, "", []byte("x")), kv.ErrKvInvalidInput, "kv_put: key: must not be empty")
	wantErr(t, kv.Put(s, "\xff", nil), kv.ErrKvInvalidInput, "kv_put: key: not valid UTF-8")

	// Handles are checked tokens: nil, freed and consumed handles fail, never crash.
	wantErr(t, kv.Put(nil, "k", nil), kv.ErrKvInvalidHandle, "kv_put: store handle is NULL")
	if err := kv.StoreFree(s); err != nil {
		t.Fatal(err)
	}
	wantErr(t, kv.StoreFree(s), kv.ErrKvInvalidHandle, "was freed or consumed")
	_, err = kv.Count(s)
	wantErr(t, err, kv.ErrKvInvalidHandle, "kv_count: store: the store handle")
}

func TestConcurrentUse(t *testing.T) {
	s := newStore(t)
	defer kv.StoreFree(s)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				k := fmt.Sprintf("%d/%d", i, j)
				if err := kv.Put(s, k, []byte(k)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n, err := kv.Count(s); err != nil || n != 16*20 {
		t.Fatalf("count: %d, %v", n, err)
	}
}

func TestVersion(t *testing.T) {
	if err := kv.CheckVersion(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(kv.BuildInfo(), `"abi": "1.`) {
		t.Fatalf("build info: %s", kv.BuildInfo())
	}
}

// kv_stats returns a KvStats record as MessagePack; DecodeRecord makes it the typed
// struct, with ints as int64 and bytes as []byte.
func TestStatsRecord(t *testing.T) {
	s := newStore(t)
	defer kv.StoreFree(s)
	raw, err := kv.Stats(s)
	if err != nil {
		t.Fatal(err)
	}
	var empty kv.KvStats
	if err := kv.DecodeRecord(raw, &empty); err != nil {
		t.Fatal(err)
	}
	if empty.Count != 0 || len(empty.Keys) != 0 || len(empty.Sizes) != 0 || empty.FirstValue != nil || empty.Extra != nil {
		t.Fatalf("an empty store's stats: %+v", empty)
	}
	if err := kv.Put(s, "b", []byte{0x00, 0xff}); err != nil {
		t.Fatal(err)
	}
	if err := kv.Put(s, "a", []byte("xyz")); err != nil {
		t.Fatal(err)
	}
	if raw, err = kv.Stats(s); err != nil {
		t.Fatal(err)
	}
	var st kv.KvStats
	if err := kv.DecodeRecord(raw, &st); err != nil {
		t.Fatal(err)
	}
	if st.Count != 2 || fmt.Sprint(st.Keys) != "[a b]" || st.Sizes["a"] != 3 || st.Sizes["b"] != 2 || st.TotalBytes != 5 {
		t.Fatalf("stats: %+v", st)
	}
	if string(st.FirstValue) != "xyz" {
		t.Fatalf("first value: %q", st.FirstValue)
	}
	// Re-encoding what Python encoded gives the same bytes: same field order, same
	// integer and bin encodings, map keys sorted (Go's map order is random: many keys,
	// many encodings).
	for i := 0; i < 40; i++ {
		if err := kv.Put(s, fmt.Sprintf("k%02d", (i*17)%40), make([]byte, i)); err != nil {
			t.Fatal(err)
		}
	}
	if raw, err = kv.Stats(s); err != nil {
		t.Fatal(err)
	}
	st = kv.KvStats{}
	if err := kv.DecodeRecord(raw, &st); err != nil {
		t.Fatal(err)
	}
	if st.Count != 42 || len(st.Sizes) != 42 {
		t.Fatalf("stats: %+v", st)
	}
	for i := 0; i < 20; i++ {
		again, err := kv.EncodeRecord(st)
		if err != nil {
			t.Fatal(err)
		}
		if string(again) != string(raw) {
			t.Fatalf("re-encoded differs:\n%x\n%x", again, raw)
		}
	}
}

// A field this package does not know (a newer library's) is kept in Extra and
// re-emitted unchanged, after the known ones.
func TestRecordKeepsUnknownFields(t *testing.T) {
	newer := kv.KvStats{
		Count: 1, Keys: []string{"k"}, Sizes: map[string]int64{"k": 1}, TotalBytes: 1, FirstValue: []byte{7},
		Extra: []kv.ExtraField{{Key: "added_later", Value: []byte{0x92, 0x01, 0xc4, 0x01, 0x02}}}, // [1, bin 02]
	}
	data, err := kv.EncodeRecord(newer)
	if err != nil {
		t.Fatal(err)
	}
	var got kv.KvStats
	if err := kv.DecodeRecord(data, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Extra) != 1 || got.Extra[0].Key != "added_later" || string(got.Extra[0].Value) != "\x92\x01\xc4\x01\x02" {
		t.Fatalf("extra: %+v", got.Extra)
	}
	again, err := kv.EncodeRecord(got)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(data) {
		t.Fatalf("round trip differs:\n%x\n%x", again, data)
	}
}

func TestRecordDecodeFailuresNameTheField(t *testing.T) {
	var st kv.KvStats
	// {"count": "three"}: a string where an int64 belongs.
	err := kv.DecodeRecord([]byte("\x81\xa5count\xa5three"), &st)
	wantErr(t, err, kv.ErrKvInvalidInput, "KvStats.count")
	// {"count": 1}: the other required fields are missing.
	err = kv.DecodeRecord([]byte("\x81\xa5count\x01"), &st)
	wantErr(t, err, kv.ErrKvInvalidInput, "missing a required field (count, keys, sizes, total_bytes)")
	// A whole record, then a stray byte.
	good, err := kv.EncodeRecord(kv.KvStats{})
	if err != nil {
		t.Fatal(err)
	}
	err = kv.DecodeRecord(append(good, 0xc0), &st)
	wantErr(t, err, kv.ErrKvInvalidInput, "1 trailing bytes")
	err = kv.DecodeRecord(nil, &st)
	wantErr(t, err, kv.ErrKvInvalidInput, "cannot decode MessagePack")
}

// A union (KvValue): the variant its tag names, typed; a variant this package does not
// know is kept whole and re-emitted unchanged.
func TestUnionVariants(t *testing.T) {
	s := newStore(t)
	defer kv.StoreFree(s)
	largest := func() *kv.KvValue {
		t.Helper()
		raw, err := kv.Stats(s)
		if err != nil {
			t.Fatal(err)
		}
		var st kv.KvStats
		if err := kv.DecodeRecord(raw, &st); err != nil {
			t.Fatal(err)
		}
		return st.Largest
	}
	if v := largest(); v != nil {
		t.Fatalf("an empty store has no largest value: %+v", v)
	}
	if err := kv.Put(s, "a", []byte("héllo")); err != nil {
		t.Fatal(err)
	}
	if v := largest(); v == nil || !v.Known() || v.Kind != "text" || v.Text != "héllo" || v.Blob != nil {
		t.Fatalf("a text value: %+v", v)
	}
	if err := kv.Put(s, "b", []byte{0xff, 0xfe, 0x00, 0x01, 0x02, 0x03, 0x04}); err != nil {
		t.Fatal(err)
	}
	if v := largest(); v == nil || v.Kind != "blob" || v.Blob == nil || string(v.Blob.Data) != "\xff\xfe\x00\x01\x02\x03\x04" {
		t.Fatalf("a blob value: %+v", v)
	}

	// {"kind": "number", "number": 7}: a variant of a newer version.
	newer := []byte("\x82\xa4kind\xa6number\xa6number\x07")
	var v kv.KvValue
	if err := kv.DecodeRecord(newer, &v); err != nil {
		t.Fatal(err)
	}
	if v.Known() || v.Kind != "number" {
		t.Fatalf("an unknown variant: %+v", v)
	}
	again, err := kv.EncodeRecord(v)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(newer) {
		t.Fatalf("round trip differs:\n%x\n%x", again, newer)
	}
	text, err := kv.EncodeRecord(kv.NewTextPart("hi"))
	if err != nil {
		t.Fatal(err)
	}
	if string(text) != "\x82\xa4kind\xa4text\xa4text\xa2hi" {
		t.Fatalf("text part: %x", text)
	}
}
