"""Running the app under uvicorn on a socket bound here, so that a taken port is one clear
error before anything starts and port 0 (any free port) can be told to the user.

SIGTERM or Ctrl-C: uvicorn stops accepting connections, waits for the requests in flight to be
answered (up to `graceful_s`), then the app's lifespan drains the batchers' queues."""
import socket

import uvicorn

from ..errors import InputError

GRACEFUL_S = 30


def bind(host, port):
    """A listening TCP socket on host:port (InputError where it cannot be bound)."""
    sock = None
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(2048)
    except OSError as e:
        if sock is not None:
            sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def make_server(app, log_level="warning", graceful_s=GRACEFUL_S):
    config = uvicorn.Config(app, lifespan="on", log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=graceful_s)
    return uvicorn.Server(config)


def serve_forever(app, sock, log_level="warning"):
    """Serve `app` on the bound socket until SIGTERM/SIGINT (after which uvicorn re-raises the
    signal, once every answer is out)."""
    make_server(app, log_level).run(sockets=[sock])
