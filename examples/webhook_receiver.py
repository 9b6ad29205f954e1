"""A webhook endpoint for trying Stepwise's webhooks on this machine: it verifies each delivery's signature with
the ``standardwebhooks`` library (what the anthropic SDK's ``client.beta.webhooks.unwrap`` does), drops an event it
has already seen (by its ``webhook-id``: deliveries are at least once), and prints each new one as a JSON line.

    WEBHOOK_SECRET=whsec_... .venv/bin/python examples/webhook_receiver.py --port 8798

A delivery that does not verify is answered 401 (Stepwise then tries it again later, and gives up after ten tries).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError


def serve(secret: str, port: int) -> ThreadingHTTPServer:
    verifier, seen = Webhook(secret), set[str]()

    class Endpoint(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            try:
                event = verifier.verify(body, dict(self.headers.items()))
            except WebhookVerificationError as exc:
                print(json.dumps({"refused": str(exc)}), file=sys.stderr, flush=True)
                self._answer(401)
                return
            if event["id"] not in seen:  # the same event delivered again (a retried end): already handled
                seen.add(event["id"])
                print(json.dumps(event), flush=True)
            self._answer(204)

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", port), Endpoint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8798)
    args = parser.parse_args()
    secret = os.environ.get("WEBHOOK_SECRET")
    if not secret:
        raise SystemExit("set WEBHOOK_SECRET to the secret `stepwise webhooks create` printed")
    server = serve(secret, args.port)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}/hooks", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
