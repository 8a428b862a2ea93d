"""Tiller: an OpenAI-compatible gateway with gatekeeping and durable execution on Temporal."""

import os

# gRPC's core writes its own plain-text lines to stderr (not Tiller's JSON logs): keep them to
# errors. It reads this once, when grpc is first imported, so it is set here, before any
# service or command imports it; a refused TLS handshake (a caller without the internal plane's
# certificate) would otherwise be an INFO line, and Authorize logs what it refuses, as JSON.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
