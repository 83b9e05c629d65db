"""``dreamfusion app``: a local web page to type a prompt, watch it train and take the mesh.

Gradio is an optional extra (``[app]``); this module does not import it, so the CLI's parser
builds without it and ``dreamfusion app`` can say which extra is missing.
"""
from __future__ import annotations

import argparse
import errno
import importlib.util
import socket
from pathlib import Path

from ..errors import UserError
from ..pipeline.inputs import check_output_root

DEFAULT_HOST = "127.0.0.1"          # this machine only: the page can start runs and write files
DEFAULT_PORT = 7860                 # Gradio's


def add_parser(sub) -> None:
    app = sub.add_parser("app", help="a local web app: prompt, live training, 3D viewer, downloads")
    app.add_argument("--host", default=DEFAULT_HOST,
                     help="address to listen on (default 127.0.0.1: this machine only; "
                          "0.0.0.0 lets other machines start runs here)")
    app.add_argument("--port", type=int, default=DEFAULT_PORT, help="default 7860")
    app.add_argument("--root", default="outputs",
                     help="where runs are written and the gallery looks (default: outputs)")


def check_port(host: str, port: int) -> None:
    """Refuse a port out of range, an address this machine cannot listen on, or a port that
    is taken, before the page is built."""
    if not 1 <= port <= 65535:
        raise UserError(f"--port must be between 1 and 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UserError(f"cannot listen on --host {host!r}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # as the server will bind: a port left in TIME_WAIT by a closed app is free
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(f"port {port} on {host} is taken (another app or server is "
                                f"listening there); choose another with --port") from None
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def main(args: argparse.Namespace) -> int:
    if args.overrides:
        raise UserError(f"app takes flags, not config overrides: {' '.join(args.overrides)}")
    if importlib.util.find_spec("gradio") is None:
        raise UserError("dreamfusion app needs Gradio: pip install 'dreamfusion[app]'")
    check_port(args.host, args.port)
    root = Path(args.root)
    check_output_root(root, create=False)
    from .ui import serve

    return serve(args.host, args.port, root)
