//go:build cgo

package cpex

// IsDenied reports whether a plugin denied the call (Violation says who and why).
func (r *PipelineResult) IsDenied() bool {
	return !r.ContinueProcessing
}
