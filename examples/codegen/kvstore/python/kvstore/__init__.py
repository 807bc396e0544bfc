"""libkv's Python side: impl (the store, run inside libkv.so) and _generated (the
boundary that calls impl, and the bindings a Python host loads the library with)."""
