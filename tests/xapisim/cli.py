"""``python3 -m tests.xapisim serve --pool FILE --state-dir DIR [--port 0] [--tls-port 0]
[--bind 127.0.0.1] [--image-dir DIR] [--session-timeout S] [--faults JSON]``

Prints ONE JSON line on stdout when every host listens, then serves until SIGTERM/SIGINT.
An existing state directory (db.json) is reloaded instead of re-reading the pool file.
"""

import argparse
import json
import os
import signal
import sys
import threading


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python3 -m tests.xapisim")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run a simulated pool")
    serve.add_argument("--pool", required=True, help="pool YAML file")
    serve.add_argument("--state-dir", required=True)
    serve.add_argument("--port", type=int, default=0, help="master HTTP port (0 = any free)")
    serve.add_argument("--tls-port", type=int, default=0, help="master HTTPS port")
    serve.add_argument("--bind", default="127.0.0.1")
    serve.add_argument("--image-dir", default=os.environ.get("XAPISIM_IMAGE_DIR"))
    serve.add_argument("--session-timeout", type=float, default=24 * 3600.0,
                       help="idle seconds before a session expires")
    serve.add_argument("--faults", default=None,
                       help="JSON fault (or list) active from the start, see faults.py")
    serve.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                       help="simulator option (e.g. xva_keepalive_seconds=0.5); the value is "
                            "JSON if it parses, else a string; overrides the pool file")
    return parser.parse_args(argv)


def parse_options(items):
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit("--option needs KEY=VALUE, got %r" % item)
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


def start(args):
    from tests.xapisim.pool import build_pool, load_pool_file
    from tests.xapisim.server import Simulator
    sim = Simulator(args.state_dir, image_dir=args.image_dir, bind=args.bind, port=args.port,
                    tls_port=args.tls_port, session_timeout=args.session_timeout,
                    options=parse_options(args.option))
    if sim.loaded:
        sim.load_meta()
    else:
        build_pool(sim, load_pool_file(args.pool), args.image_dir)
        sim.db.flush()
        sim.save_meta()
    if args.faults:
        faults = json.loads(args.faults)
        for fault in faults if isinstance(faults, list) else [faults]:
            sim.faults.add(fault)
    sim.start()
    return sim


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sim = start(args)
    sys.stdout.write(json.dumps(sim.ready_info()) + "\n")
    sys.stdout.flush()
    while not stop.wait(1.0):
        pass
    sim.stop()
    return 0
