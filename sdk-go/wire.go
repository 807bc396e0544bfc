//go:build cgo

package cpex

import (
	"bytes"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

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
	return enc.Encode(value)
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
	d := newDecoder(bytes.NewReader(raw))
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
	tag := ""
	err := eachField(raw, func(k string, d *msgpack.Decoder) error {
		if k != key {
			return d.Skip()
		}
		var err error
		tag, err = d.DecodeString()
		return err
	})
	return tag, err
}
