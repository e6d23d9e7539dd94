"""A webhook receiver for one test: records every request it gets as a JSON line (with how many
requests to its path were in flight when it arrived), and answers by the path it was sent to:

  /ok        200
  /flaky     500 the first time a webhook-id arrives, 200 after
  /gone      410
  /slow      200 after 30 s (or nothing, once the sender gave up)
  /redirect  302 to /ok (a sender must not follow it)

Prints its port once it listens. With `verify`, reads {"secret", "records"} on stdin and
prints, for each record, whether the `standardwebhooks` package (PyPI) accepts its signature.
"""
import json
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(log_path):
    seen = set()
    in_flight = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            path = self.path.split("?")[0]
            webhook_id = self.headers.get("webhook-id", "")
            with lock:
                in_flight[path] = in_flight.get(path, 0) + 1
                concurrent = in_flight[path]
            try:
                self.answer(path, webhook_id, body, concurrent)
            finally:
                with lock:
                    in_flight[path] -= 1

        def answer(self, path, webhook_id, body, concurrent):
            if path == "/flaky":
                with lock:
                    first = webhook_id not in seen
                    seen.add(webhook_id)
                status = 500 if first else 200
            elif path == "/gone":
                status = 410
            elif path == "/slow":
                status = 200
            elif path == "/redirect":
                status = 302
            else:
                status = 200
            record = {
                "path": path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8", "replace"),
                "status": status,
                "at": time.time(),
                "concurrent": concurrent,
            }
            with lock, open(log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\n")
            if path == "/slow":
                # Up to 30 s, or until the sender hangs up (its timeout), so that what is in
                # flight here is what the sender has in flight.
                deadline = time.time() + 30
                while time.time() < deadline:
                    readable, _, _ = select.select([self.connection], [], [], 0.1)
                    if readable and not self.connection.recv(1, socket.MSG_PEEK):
                        return
            reply = b"a reply the sender logs the first KiB of\n" * 40
            try:
                self.send_response(status)
                if status == 302:
                    self.send_header("location", "/ok")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


def verify():
    from standardwebhooks.webhooks import Webhook

    request = json.load(sys.stdin)
    hook = Webhook(request["secret"])
    results = []
    for record in request["records"]:
        try:
            hook.verify(record["body"], record["headers"])
            results.append(True)
        except Exception:  # the library raises WebhookVerificationError (or worse) on a mismatch
            results.append(False)
    print(json.dumps(results))


if __name__ == "__main__":
    if sys.argv[1] == "verify":
        verify()
    else:
        serve(sys.argv[1])
