"""A plugin module that fails to import (for the load-time error tests)."""

raise ImportError("this plugin module is broken on purpose")
