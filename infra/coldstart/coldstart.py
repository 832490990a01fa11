#!/usr/bin/env python3
"""Cold start of Lambda function binaries against a minimal Lambda Runtime API emulator.

For each function binary, `--runs` times: start a one-shot HTTP server on 127.0.0.1 (an ephemeral port),
start the binary with AWS_LAMBDA_RUNTIME_API pointing at it, and take the time from just before the
process is spawned to the arrival of its first `GET /2018-06-01/runtime/invocation/next`: that is the
function's init (process start, config, clients, stores) up to "ready for the first invocation". The
request is never answered; the process is killed and the next run starts. Prints a Markdown table of
p50, p90, min and max per function and mode.

    coldstart.py --bin-dir target/x86_64-unknown-linux-gnu/release --runs 20 \
        --case health:memory --case deposit:dynamodb --case outbox-publisher:kafka

Modes set the environment a function needs (nothing leaves 127.0.0.1):
  memory    STORE_KIND=memory
  dynamodb  STORE_KIND=dynamodb, AWS_REGION and dummy credentials, AWS_ENDPOINT_URL=http://127.0.0.1:9
            (the SDK client is built, no request is sent during init)
  kafka     KAFKA_BOOTSTRAP from the environment (a local broker; with-services.sh starts tansu)
  relay     DATABASE_URL and KAFKA_BOOTSTRAP from the environment (Postgres and the broker)
  oidc      the authorizer's AUTH_ISSUER, AUTH_AUDIENCE and an AUTH_JWKS_URL on 127.0.0.1
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

NEXT = b"GET /2018-06-01/runtime/invocation/next"


def base_env(name: str) -> dict:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "coldstart",
        "AWS_LAMBDA_LOG_LEVEL": "WARN",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "coldstart",
        "AWS_SECRET_ACCESS_KEY": "coldstart",
        "AWS_SESSION_TOKEN": "coldstart",
        # Keeps the SDK from looking for profile files under a real home directory.
        "HOME": "/nonexistent",
    }
    return env


def mode_env(mode: str) -> dict:
    if mode == "memory":
        return {"STORE_KIND": "memory"}
    if mode == "dynamodb":
        return {"STORE_KIND": "dynamodb", "TABLE_PREFIX": "coldstart-", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    if mode == "kafka":
        return {"KAFKA_BOOTSTRAP": required("KAFKA_BOOTSTRAP"), "STORE_KIND": "memory"}
    if mode == "relay":
        return {"KAFKA_BOOTSTRAP": required("KAFKA_BOOTSTRAP"), "DATABASE_URL": required("DATABASE_URL")}
    if mode == "oidc":
        # The authorizer: its key set is read beside the first invocation, never during init, so the
        # URL need not answer (port 9 refuses at once).
        return {
            "AUTH_ISSUER": "https://issuer.example",
            "AUTH_AUDIENCE": "corebank",
            "AUTH_JWKS_URL": "http://127.0.0.1:9/jwks.json",
        }
    sys.exit(f"unknown mode {mode}")


def required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.exit(f"{name} is not set: run under infra/scripts/with-services.sh")
    return value


def one_start(binary: str, env: dict, timeout_s: float) -> float:
    """Milliseconds from spawn to the first /next request."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    arrived = {}
    done = threading.Event()

    def serve():
        listener.settimeout(timeout_s)
        try:
            while not done.is_set():
                conn, _ = listener.accept()
                data = b""
                conn.settimeout(timeout_s)
                while b"\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(NEXT):
                    arrived["t"] = time.perf_counter()
                    arrived["conn"] = conn  # held open: the runtime long-polls
                    done.set()
                else:
                    conn.close()
        except OSError:
            done.set()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    run_env = dict(env, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{port}")
    t0 = time.perf_counter()
    proc = subprocess.Popen([binary], env=run_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done.wait(timeout_s)
    proc.kill()
    _, err = proc.communicate()
    listener.close()
    conn = arrived.get("conn")
    if conn is not None:
        conn.close()
    if "t" not in arrived:
        sys.exit(f"{binary} never asked for an invocation within {timeout_s}s; stderr:\n{err.decode(errors='replace')}")
    return (arrived["t"] - t0) * 1000.0


def percentile(values, p):
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100.0 * (len(ordered) - 1))))
    return ordered[k]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--case", action="append", required=True, help="function:mode")
    args = parser.parse_args()

    print("| function | mode | p50 ms | p90 ms | min ms | max ms | runs |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for case in args.case:
        name, mode = case.split(":", 1)
        binary = os.path.join(args.bin_dir, name)
        if not os.path.isfile(binary):
            sys.exit(f"{binary} is missing: build it first (see infra/scripts/cold-start.sh)")
        env = base_env(name)
        env.update(mode_env(mode))
        one_start(binary, env, args.timeout)  # warm the page cache; not counted
        times = [one_start(binary, env, args.timeout) for _ in range(args.runs)]
        print(
            f"| {name} | {mode} | {statistics.median(times):.1f} | {percentile(times, 90):.1f} | "
            f"{min(times):.1f} | {max(times):.1f} | {len(times)} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
