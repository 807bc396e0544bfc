//go:build cgo

package cpex

import "fmt"

// Error is a failure reported by the library: its status code and message. It
// unwraps to the sentinel of its class, so callers match with errors.Is (for example
// errors.Is(err, ErrCpexConfig)) and read the detail from Message.
type Error struct {
	Code    int32
	Message string
}

func (e *Error) Error() string {
	if s := sentinels[e.Code]; s != nil {
		if e.Message == "" {
			return s.Error()
		}
		return s.Error() + ": " + e.Message
	}
	return fmt.Sprintf("cpex: status %d: %s", e.Code, e.Message)
}

// Unwrap returns the sentinel of the error's class (ErrCpexParse, ErrCpexConfig, ...).
func (e *Error) Unwrap() error {
	return sentinels[e.Code]
}

func newError(code int32, message string) error {
	return &Error{Code: code, Message: message}
}
