package cpex

/*
#include <stdlib.h>
#include "cpex.h"
extern void cpexGoLogRecord(void *user_data, uint8_t *record, size_t record_len);
extern void cpexGoDecisionRecord(void *user_data, uint8_t *record, size_t record_len);
*/
import "C"

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Logs and decision records from the library: the engine hands each record to a C
// callback on a library thread (cpex_set_log_sink, cpex_set_decision_sink); these are
// the Go ends. A callback never runs on the goroutine of an invoke, and a slow one
// delays only the records behind it.

// logSink is the logger of SetLogger; mu serialises SetLogger calls only (the
// callback reads logger without a lock: SetLogger waits for it to drain).
var logSink struct {
	mu     sync.Mutex
	logger atomic.Pointer[slog.Logger]
}

// SetLogger forwards the library's log records (the engine's `cpexrt.*` loggers:
// plugin lifecycle, plugin failures with plugin, hook and code, timeouts, disabled
// plugins, refused configs) to l, for every manager of the process. Each record keeps
// its time and level (Python's DEBUG, INFO, WARNING, ERROR, CRITICAL become slog's
// Debug, Info, Warn, Error and Error+4), and its structured fields become attributes
// beside `logger`, the Python logger's name. The least severe level l is enabled for
// at the time of the call is the least severe the engine produces. nil stops the
// forwarding; when SetLogger returns, the logger it replaced receives no more records.
// Without SetLogger the engine's records are dropped (nothing is printed).
func SetLogger(l *slog.Logger) error {
	if err := checkLibrary(); err != nil {
		return err
	}
	logSink.mu.Lock()
	defer logSink.mu.Unlock()
	leave, err := enterLane(context.Background(), "SetLogger")
	if err != nil {
		return err
	}
	defer leave()
	if l == nil {
		err := callSetLogSink(nil, nil, 0)
		if err == nil {
			logSink.logger.Store(nil)
		}
		return err
	}
	// Set first: the records queued before the switch go to l.
	previous := logSink.logger.Swap(l)
	if err := callSetLogSink(C.cpex_record_fn(C.cpexGoLogRecord), nil, pythonLevel(l)); err != nil {
		logSink.logger.Store(previous)
		return err
	}
	return nil
}

// pythonLevel is the least severe Python level l is enabled for.
func pythonLevel(l *slog.Logger) uint8 {
	ctx := context.Background()
	for _, lv := range []struct {
		slog   slog.Level
		python uint8
	}{{slog.LevelDebug, 10}, {slog.LevelInfo, 20}, {slog.LevelWarn, 30}, {slog.LevelError, 40}} {
		if l.Enabled(ctx, lv.slog) {
			return lv.python
		}
	}
	return 50
}

// slogLevel maps Python's logging level numbers to slog's.
func slogLevel(python int) slog.Level {
	switch {
	case python >= 50:
		return slog.LevelError + 4
	case python >= 40:
		return slog.LevelError
	case python >= 30:
		return slog.LevelWarn
	case python >= 20:
		return slog.LevelInfo
	default:
		return slog.LevelDebug
	}
}

func recordBytes(record *C.uint8_t, n C.size_t) []byte {
	return C.GoBytes(unsafe.Pointer(record), C.int(n))
}

//export cpexGoLogRecord
func cpexGoLogRecord(_ unsafe.Pointer, record *C.uint8_t, n C.size_t) {
	l := logSink.logger.Load()
	if l == nil {
		return
	}
	var rec LogRecord
	if err := decode(recordBytes(record, n), &rec, "log record"); err != nil {
		l.Error("cpex: a log record of the library could not be decoded", "error", err)
		return
	}
	level := slogLevel(rec.Level)
	ctx := context.Background()
	if !l.Handler().Enabled(ctx, level) {
		return
	}
	sec := int64(rec.Time)
	r := slog.NewRecord(time.Unix(sec, int64((rec.Time-float64(sec))*1e9)), level, rec.Message, 0)
	r.AddAttrs(slog.String("logger", rec.Logger))
	keys := make([]string, 0, len(rec.Fields))
	for k := range rec.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		r.AddAttrs(slog.Any(k, rec.Fields[k]))
	}
	_ = l.Handler().Handle(ctx, r)
}

// decisionSinks are the Go ends of the managers' decision sinks, by the C key passed
// as the callback's user data (a C allocation: never a Go pointer, never reused while
// registered).
var decisionSinks struct {
	mu    sync.Mutex
	byKey map[uintptr]func(DecisionRecord)
}

// decisionSink is a manager's registration.
type decisionSink struct {
	key unsafe.Pointer
}

// SetDecisionSink turns the manager's decision records on: fn receives one
// DecisionRecord per invoke that runs plugins (request id, hook, the call's outcome,
// each plugin's verdict, timing, violation code and the names of the fields it
// modified), on a library thread, one at a time and in order. nil turns them off
// (unless the config's decision_records.file still takes them). When SetDecisionSink
// returns, the sink it replaced has received every record made before and receives no
// more; Shutdown delivers what is queued and then stops the sink. fn must not block for
// long: records queue behind it (up to 10,000, then they are dropped and counted). A
// panic in fn loses that record (logged to SetLogger's logger), never the process.
func (m *PluginManager) SetDecisionSink(fn func(DecisionRecord)) error {
	h, leave, err := m.enter("SetDecisionSink")
	if err != nil {
		return err
	}
	defer leave()
	m.state.sinkMu.Lock()
	defer m.state.sinkMu.Unlock()
	old := m.state.sink
	if fn == nil {
		if err := callSetDecisionSink(h, nil, nil); err != nil {
			return err
		}
		m.state.sink = nil
		old.release()
		return nil
	}
	s := newDecisionSink(fn)
	if err := callSetDecisionSink(h, C.cpex_record_fn(C.cpexGoDecisionRecord), s.key); err != nil {
		s.release()
		return err
	}
	m.state.sink = s
	old.release()
	return nil
}

func newDecisionSink(fn func(DecisionRecord)) *decisionSink {
	key := C.malloc(1)
	decisionSinks.mu.Lock()
	defer decisionSinks.mu.Unlock()
	if decisionSinks.byKey == nil {
		decisionSinks.byKey = map[uintptr]func(DecisionRecord){}
	}
	decisionSinks.byKey[uintptr(key)] = fn
	return &decisionSink{key: key}
}

// release forgets the registration; the library no longer calls it.
func (s *decisionSink) release() {
	if s == nil {
		return
	}
	decisionSinks.mu.Lock()
	delete(decisionSinks.byKey, uintptr(s.key))
	decisionSinks.mu.Unlock()
	C.free(s.key)
}

//export cpexGoDecisionRecord
func cpexGoDecisionRecord(key unsafe.Pointer, record *C.uint8_t, n C.size_t) {
	decisionSinks.mu.Lock()
	fn := decisionSinks.byKey[uintptr(key)]
	decisionSinks.mu.Unlock()
	if fn == nil {
		return
	}
	var rec DecisionRecord
	if err := decode(recordBytes(record, n), &rec, "decision record"); err != nil {
		if l := logSink.logger.Load(); l != nil {
			l.Error("cpex: a decision record could not be decoded; it is lost", "error", err)
		}
		return
	}
	defer func() {
		// A panic must not cross into C (it would end the process): the record is lost.
		if p := recover(); p != nil {
			if l := logSink.logger.Load(); l != nil {
				l.Error("cpex: the decision sink panicked; the record is lost", "panic", fmt.Sprint(p))
			}
		}
	}()
	fn(rec)
}
