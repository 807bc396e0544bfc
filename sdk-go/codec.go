package cpex

import (
	"bytes"
	"fmt"
	"io"

	"github.com/vmihailenco/msgpack/v5"
)

// newEncoder writes MessagePack as Python's msgpack does for the same values: compact
// integers (the smallest encoding), floats as float64, and map keys sorted (a Go map
// has no order; sorted keys make the bytes deterministic).
func newEncoder(w io.Writer) *msgpack.Encoder {
	enc := msgpack.NewEncoder(w)
	enc.UseCompactInts(true)
	enc.SetSortMapKeys(true)
	return enc
}

// newDecoder decodes untyped numbers as int64 / uint64 / float64 rather than the
// narrowest type of their encoding, and untyped maps as map[string]any.
func newDecoder(r io.Reader) *msgpack.Decoder {
	dec := msgpack.NewDecoder(r)
	dec.UseLooseInterfaceDecoding(true)
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

// decode reads MessagePack into v.
func decode(data []byte, v any, what string) error {
	if err := newDecoder(bytes.NewReader(data)).Decode(v); err != nil {
		return &Error{Code: codeSerialize, Message: fmt.Sprintf("%s: cannot decode the library's MessagePack: %v", what, err)}
	}
	return nil
}
