"""cpex ABI code generator: schema -> C header, cffi declarations, Go and Python bindings."""
