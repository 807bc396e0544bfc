"""The boundary: the only code that touches C pointers. One Python function per
exported C function; nothing escapes it but a status code and a message."""
