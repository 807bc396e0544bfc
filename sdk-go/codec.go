package cpex

import (
	"bytes"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// encode writes v as MessagePack with named fields. Compact integers make the bytes
// identical to Python's msgpack for the same values.
func encode(v any, what string) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	enc.UseCompactFloats(true)
	if err := enc.Encode(v); err != nil {
		return nil, &Error{Code: codeInvalidInput, Message: fmt.Sprintf("%s: cannot encode as MessagePack: %v", what, err)}
	}
	return buf.Bytes(), nil
}

// decode reads MessagePack into v; untyped maps decode as map[string]any.
func decode(data []byte, v any, what string) error {
	dec := msgpack.NewDecoder(bytes.NewReader(data))
	// Untyped numbers decode as int64 / uint64 / float64 rather than the narrowest
	// type of their encoding, so a count is an int64 whatever its value.
	dec.UseLooseInterfaceDecoding(true)
	if err := dec.Decode(v); err != nil {
		return &Error{Code: codeSerialize, Message: fmt.Sprintf("%s: cannot decode the library's MessagePack: %v", what, err)}
	}
	return nil
}
