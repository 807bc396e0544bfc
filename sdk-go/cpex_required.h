/* Included first into every cgo file of the package (cgo.go: -include): a build that
   cannot find cpex.h fails with this one sentence naming the fix, not with "No such
   file" from whichever file cgo translates first. */
#if defined(__has_include)
#if !__has_include("cpex.h")
#error "cpex.h not found: set CGO_CFLAGS and CGO_LDFLAGS for an installed cpexrt with: eval \"$(cpexrt-config --cgo-env)\" (cpex README, Install)"
#endif
#endif
