package broker

import "sync/atomic"

// reauthHook is what testHookReauthChecked runs. testHookReauthChecked is a
// plain variable read by connection goroutines, so it is set once, here,
// before any exist; tests swap reauthHook instead, race-free at any time.
var reauthHook atomic.Pointer[func()]

func init() {
	testHookReauthChecked = func() {
		if f := reauthHook.Load(); f != nil {
			(*f)()
		}
	}
}

// SetTestHookReauthChecked makes f run between a re-authentication's token
// check and the switch to its session, for the external test package (which
// can start a whole gateway: an internal test importing testenv would be an
// import cycle). restore puts the previous hook back.
func SetTestHookReauthChecked(f func()) (restore func()) {
	prev := reauthHook.Swap(&f)
	return func() { reauthHook.Store(prev) }
}
