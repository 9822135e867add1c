"""``python -m distlock``: see :mod:`distlock._cli` for the commands and exit codes."""

import os
import sys

# gRPC's C core logs a refused TLS handshake to stderr in its own format, next to the one
# line in which the CLI already names the refusal; a caller's own GRPC_VERBOSITY wins.
# Set before anything imports grpc (the backends are imported only when chosen).
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from distlock._cli import main  # after setting what grpc reads when imported

if __name__ == "__main__":
    sys.exit(main())
