#!/usr/bin/env python3
"""moto's DynamoDB server mode, answering one request at a time.

`moto_server` serves every request on its own thread without a lock, and its TransactWriteItems
rolls a cancelled transaction back by restoring a copy of the whole table taken when the
transaction began. A transaction cancelled while another one commits therefore erases the other's
committed items, so concurrent appends that each were told "success" can vanish (the contract
test writers_that_reload_and_retry_build_one_gapless_stream loses events that way). DynamoDB
itself is serialisable per transaction; holding one lock around each request gives moto the same
guarantee while clients still send their requests concurrently.

Usage: moto-serial.py [--host 127.0.0.1] [--port 8000]
"""

import argparse
import os
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=8000)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))

    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serial(environ, start_response):
        with lock:
            # Drain the response inside the lock: moto builds it lazily from shared state.
            return list(app(environ, start_response))

    run_simple(args.host, args.port, serial, threaded=True)


if __name__ == "__main__":
    main()
