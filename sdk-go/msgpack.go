//go:build cgo

package cpex

// MessagePack: how the SDK encodes and decodes what crosses the ABI (the encoder and
// decoder settings, untyped values), and the helpers of the generated records'
// encoders and decoders (records_gen.go).

import (
	"bytes"
	"fmt"
	"io"
	"reflect"
	"sort"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// fallbackStructTag names a struct field that has no msgpack tag. Hosts often have
// their payload structs tagged for encoding/json only; without the fallback such a
// field would go over under its Go name (ToolName, not tool_name) and no plugin would
// find it. The msgpack library reads the fallback tag exactly as a msgpack tag: its
// name, "-" to skip the field, omitempty; a field with a msgpack tag (even one with
// options only) never looks at its json tag. The generated records encode and decode
// themselves field by field, so the fallback does not touch them.
const fallbackStructTag = "json"

// newEncoder writes MessagePack as Python's msgpack does for the same values: compact
// integers (the smallest encoding), floats as float64, and map keys sorted (a Go map
// has no order; sorted keys make the bytes deterministic). Struct fields are named by
// their msgpack tags, else their json tags (fallbackStructTag).
func newEncoder(w io.Writer) *msgpack.Encoder {
	enc := msgpack.NewEncoder(w)
	enc.UseCompactInts(true)
	enc.SetSortMapKeys(true)
	enc.SetCustomStructTag(fallbackStructTag)
	return enc
}

// newDecoder decodes untyped numbers as int64 / uint64 / float64 rather than the
// narrowest type of their encoding, untyped maps as map[string]any, and MessagePack
// bin as []byte (loose decoding alone would make it a string; a plugin's bytes must
// reach the host as bytes). Struct fields are matched by their msgpack tags, else
// their json tags, as newEncoder names them.
func newDecoder(r io.Reader) *msgpack.Decoder {
	dec := msgpack.NewDecoder(r)
	dec.UseLooseInterfaceDecoding(true)
	dec.SetMapDecoder(decodeMap)
	dec.SetCustomStructTag(fallbackStructTag)
	return dec
}

// encode writes v as MessagePack with named fields.
func encode(v any, what string) ([]byte, error) {
	var buf bytes.Buffer
	if err := newEncoder(&buf).Encode(v); err != nil {
		return nil, &Error{Code: codeInvalidInput, Message: fmt.Sprintf("%s: cannot encode as MessagePack: %v", what, err)}
	}
	return buf.Bytes(), nil
}

// inputEncoder writes an invoke's inputs one after another into one buffer, reused
// across invokes (inputEncoders): the library reads the bytes only during the call
// (it copies what it keeps), so they go back to the pool once the call returned.
type inputEncoder struct {
	buf bytes.Buffer
	enc *msgpack.Encoder
}

var inputEncoders = sync.Pool{New: func() any {
	e := &inputEncoder{}
	e.enc = msgpack.NewEncoder(&e.buf)
	return e
}}

// maxPooledInput is the largest buffer kept for reuse; a bigger one is left to the GC.
const maxPooledInput = 64 << 10

func getInputEncoder() *inputEncoder {
	e := inputEncoders.Get().(*inputEncoder)
	e.buf.Reset()
	e.enc.Reset(&e.buf) // Reset clears the settings: newEncoder's, again
	e.enc.UseCompactInts(true)
	e.enc.SetSortMapKeys(true)
	e.enc.SetCustomStructTag(fallbackStructTag)
	return e
}

// release gives the encoder back; nothing may read the bytes it wrote afterwards.
func (e *inputEncoder) release() {
	if e == nil || e.buf.Cap() > maxPooledInput {
		return
	}
	inputEncoders.Put(e)
}

// encode appends v as newEncoder writes it and returns the offsets of its bytes in
// the buffer (slice them once every input is written: the buffer may grow meanwhile).
// A failure names op and what ("InvokeByName: payload: ...").
func (e *inputEncoder) encode(v any, op, what string) (start, end int, err error) {
	start = e.buf.Len()
	if err := e.enc.Encode(v); err != nil {
		return 0, 0, &Error{Code: codeInvalidInput, Message: fmt.Sprintf("%s: %s: cannot encode as MessagePack: %v", op, what, err)}
	}
	return start, e.buf.Len(), nil
}

// decodeMap decodes an untyped map: string keys, values as decodeValue does.
func decodeMap(d *msgpack.Decoder) (any, error) {
	n, err := d.DecodeMapLen()
	if err != nil || n < 0 {
		return nil, err
	}
	m := make(map[string]any, n)
	for i := 0; i < n; i++ {
		key, err := d.DecodeString()
		if err != nil {
			return nil, err
		}
		if m[key], err = decodeValue(d); err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
	}
	return m, nil
}

// decodeValue decodes an untyped value: bin as []byte, arrays element by element,
// the rest as loose decoding does (maps through decodeMap).
func decodeValue(d *msgpack.Decoder) (any, error) {
	c, err := d.PeekCode()
	if err != nil {
		return nil, err
	}
	switch {
	case msgpcode.IsBin(c):
		return d.DecodeBytes()
	case msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32:
		n, err := d.DecodeArrayLen()
		if err != nil {
			return nil, err
		}
		s := make([]any, n)
		for i := range s {
			if s[i], err = decodeValue(d); err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
		}
		return s, nil
	}
	return d.DecodeInterfaceLoose()
}

// Map is a map[string]any for the untyped fields of a host's own payload structs: it
// decodes MessagePack bin as []byte and numbers as int64 / uint64 / float64 at every
// depth, as the generated records do. A plain map[string]any field of a host's struct
// is decoded by the msgpack library itself, which keeps those rules for maps and
// lists nested in it but turns a bin that is a direct value of the map into a string.
type Map map[string]any

// DecodeMsgpack decodes the map with the SDK's rules (decodeMap).
func (m *Map) DecodeMsgpack(dec *msgpack.Decoder) error {
	v, err := decodeValue(dec)
	if err != nil {
		return err
	}
	if v == nil {
		*m = nil
		return nil
	}
	got, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("msgpack: expected a map, got %T", v)
	}
	*m = got
	return nil
}

// decodeInto decodes into target; untyped targets (any, map[string]any, []any) by
// decodeValue. The generated decoders use it for every field.
func decodeInto(d *msgpack.Decoder, target any) error {
	switch t := target.(type) {
	case *any:
		v, err := decodeValue(d)
		*t = v
		return err
	case *map[string]any:
		v, err := decodeValue(d)
		if err != nil {
			return err
		}
		m, ok := v.(map[string]any)
		if v != nil && !ok {
			return fmt.Errorf("msgpack: expected a map, got %T", v)
		}
		*t = m
		return nil
	case *[]any:
		v, err := decodeValue(d)
		if err != nil {
			return err
		}
		s, ok := v.([]any)
		if v != nil && !ok {
			return fmt.Errorf("msgpack: expected an array, got %T", v)
		}
		*t = s
		return nil
	}
	return d.Decode(target)
}

// decode reads MessagePack into v.
func decode(data []byte, v any, what string) error {
	d := getSliceDecoder(data)
	err := decodeInto(d.dec, v)
	d.release()
	if err != nil {
		return &Error{Code: codeSerialize, Message: fmt.Sprintf("%s: cannot decode the library's MessagePack: %v", what, err)}
	}
	return nil
}

// sliceDecoder is newDecoder over a byte slice, reused across decodes
// (sliceDecoders): a decoder and its reader cost two allocations, and a fresh decoder
// grows its scratch buffer again for every string longer than the last. Nothing
// decoded aliases the decoder: strings, bytes and raw fields are copied out.
type sliceDecoder struct {
	r   bytes.Reader
	dec *msgpack.Decoder
}

var sliceDecoders = sync.Pool{New: func() any {
	d := &sliceDecoder{}
	d.dec = newDecoder(&d.r)
	return d
}}

func getSliceDecoder(data []byte) *sliceDecoder {
	d := sliceDecoders.Get().(*sliceDecoder)
	d.r.Reset(data)
	d.dec.Reset(&d.r) // Reset clears the settings: newDecoder's, again
	d.dec.UseLooseInterfaceDecoding(true)
	d.dec.SetMapDecoder(decodeMap)
	d.dec.SetCustomStructTag(fallbackStructTag)
	return d
}

// release gives the decoder back, holding no reference to the decoded bytes; one that
// read more than maxPooledInput bytes is left to the GC (its scratch buffer may be as
// large as the longest string it read).
func (d *sliceDecoder) release() {
	big := d.r.Size() > maxPooledInput
	d.r.Reset(nil)
	d.dec.Reset(&d.r)
	if !big {
		sliceDecoders.Put(d)
	}
}

// ExtraField is a field this SDK does not know, kept as raw MessagePack so that it is
// re-emitted unchanged: a newer library or plugin may add fields, and a Go host in the
// middle must not lose them.
type ExtraField struct {
	Key   string
	Value msgpack.RawMessage
}

// The helpers of the generated encoders and decoders (records_gen.go).

func encodeField(enc *msgpack.Encoder, name string, value any) error {
	if err := enc.EncodeString(name); err != nil {
		return err
	}
	return encodeSorted(enc, value)
}

// encodeSorted encodes a field's value with the keys of every string-keyed map sorted,
// at any depth: SetSortMapKeys covers only map[string]string, map[string]bool and
// map[string]any, and a record's map<string,int64> or map<string,DataPolicy> must give
// the same bytes each time. (The generator emits the same helper, encodeValue, for the
// libraries whose Go support it generates: codegen/templates/wire_gen.go.j2.)
func encodeSorted(enc *msgpack.Encoder, value any) error {
	// The common shapes of untyped data first, with no reflection: the same bytes.
	switch v := value.(type) {
	case string:
		return enc.EncodeString(v)
	case map[string]any:
		if v == nil {
			return enc.EncodeNil()
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if err := enc.EncodeMapLen(len(keys)); err != nil {
			return err
		}
		for _, k := range keys {
			if err := enc.EncodeString(k); err != nil {
				return err
			}
			if err := encodeSorted(enc, v[k]); err != nil {
				return err
			}
		}
		return nil
	}
	rv := reflect.ValueOf(value)
	switch rv.Kind() {
	case reflect.Map:
		if rv.IsNil() || rv.Type().Key().Kind() != reflect.String {
			return enc.Encode(value)
		}
		keys := rv.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
		if err := enc.EncodeMapLen(len(keys)); err != nil {
			return err
		}
		for _, k := range keys {
			if err := enc.EncodeString(k.String()); err != nil {
				return err
			}
			if err := encodeSorted(enc, rv.MapIndex(k).Interface()); err != nil {
				return err
			}
		}
		return nil
	case reflect.Slice:
		if rv.IsNil() || rv.Type().Elem().Kind() == reflect.Uint8 {
			return enc.Encode(value) // nil, or bytes (MessagePack bin)
		}
		if err := enc.EncodeArrayLen(rv.Len()); err != nil {
			return err
		}
		for i := 0; i < rv.Len(); i++ {
			if err := encodeSorted(enc, rv.Index(i).Interface()); err != nil {
				return err
			}
		}
		return nil
	}
	return enc.Encode(value)
}

// orEmptyList and orEmptyMap send a required list or map that Go left nil as an empty
// one: nil is Go's empty value, and py-cpex refuses a null where its model wants a list.
func orEmptyList[T any](v []T) []T {
	if v == nil {
		return []T{}
	}
	return v
}

func orEmptyMap[K comparable, V any](v map[K]V) map[K]V {
	if v == nil {
		return map[K]V{}
	}
	return v
}

func encodeExtra(enc *msgpack.Encoder, extra []ExtraField) error {
	for _, f := range extra {
		if err := enc.EncodeString(f.Key); err != nil {
			return err
		}
		if err := enc.Encode(f.Value); err != nil {
			return err
		}
	}
	return nil
}

// eachField calls fn for every key of the MessagePack map in raw; fn must consume the
// value from d.
func eachField(raw []byte, fn func(key string, d *msgpack.Decoder) error) error {
	sd := getSliceDecoder(raw)
	defer sd.release()
	d := sd.dec
	n, err := d.DecodeMapLen()
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		key, err := d.DecodeString()
		if err != nil {
			return err
		}
		if err := fn(key, d); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
	}
	return nil
}

// peekTag finds the string under key in the map in raw ("" when absent).
func peekTag(raw []byte, key string) (string, error) {
	sd := getSliceDecoder(raw)
	defer sd.release()
	d := sd.dec
	n, err := d.DecodeMapLen()
	if err != nil {
		return "", err
	}
	tag := ""
	var keyBuf [maxFastKey]byte
	for i := 0; i < n; i++ {
		k, err := decodeKey(d, keyBuf[:])
		if err != nil {
			return "", err
		}
		if string(k) != key {
			err = d.Skip()
		} else {
			tag, err = d.DecodeString()
		}
		if err != nil {
			return "", fmt.Errorf("%s: %w", k, err)
		}
	}
	return tag, nil
}
