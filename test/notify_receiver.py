#!/usr/bin/env python3
# test/notify_receiver.py: a webhook receiver and SMS provider endpoint for
# the notification tests and the demo, on the loopback only.
#
#   notify_receiver.py --port P --secret S --log FILE [--status N] [--delay SECONDS]
#                      [--tls-cert FILE --tls-key FILE]
#
# Every request is logged as one JSON line in FILE: a "begin" line when it
# arrives, then one with the outcome: path, query, Idempotency-Key, whether
# the webhook signature verified (X-Prepay-Signature: sha256=<hex
# HMAC-SHA256 of "<X-Prepay-Timestamp>.<body>" keyed by the secret, the
# timestamp within 5 minutes), whether the key was already accepted (dup),
# the status answered, the Authorization header and the body.  It answers
# --status (default 200) after --delay seconds; a bad signature gets 401.
# A key counts as accepted when it was answered 2xx; the accepted keys of
# an existing log are loaded at start, so a restarted receiver still
# deduplicates, as a real receiver honouring the key would.  With
# --tls-cert and --tls-key it speaks HTTPS (the certificate chain in PEM);
# a client that refuses the certificate never gets as far as a request.
import argparse
import hashlib
import hmac
import http.server
import json
import ssl
import threading
import time
import urllib.parse

args = None
lock = threading.Lock()
accepted = set()


def log(entry):
    with lock, open(args.log, 'a', encoding='utf-8') as f:
        f.write(json.dumps(entry, ensure_ascii=False) + '\n')


def signature_state(headers, body):
    sig = headers.get('X-Prepay-Signature')
    ts = headers.get('X-Prepay-Timestamp')
    if not sig or not ts:
        return 'none'
    mac = hmac.new(args.secret.encode(), ts.encode() + b'.' + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(sig, 'sha256=' + mac) or abs(time.time() - int(ts)) > 300:
        return 'bad'
    return 'ok'


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    disable_nagle_algorithm = True      # headers and body go out at once

    def handle_any(self):
        url = urllib.parse.urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
        key = self.headers.get('Idempotency-Key')
        entry = {'t': time.time(), 'method': self.command, 'path': url.path, 'query': url.query, 'key': key}
        log(dict(entry, event='begin'))
        if args.delay:
            time.sleep(args.delay)
        sig = signature_state(self.headers, body)
        status = args.status
        if url.path == '/hook' and sig != 'ok':
            status = 401
        with lock:
            dup = key in accepted
            if 200 <= status < 300 and key:
                accepted.add(key)
        log(dict(entry, event='done', sig=sig, dup=dup, status=status,
                 auth=self.headers.get('Authorization'), body=body.decode('utf-8', 'replace')))
        reply = json.dumps({'ok': 200 <= status < 300, 'duplicate': dup}).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_POST = do_PUT = do_GET = handle_any

    def log_message(self, fmt, *a):
        pass


def main():
    global args
    p = argparse.ArgumentParser()
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--secret', required=True)
    p.add_argument('--log', required=True)
    p.add_argument('--status', type=int, default=200)
    p.add_argument('--delay', type=float, default=0)
    p.add_argument('--tls-cert')
    p.add_argument('--tls-key')
    args = p.parse_args()
    try:
        with open(args.log, encoding='utf-8') as f:
            for line in f:
                e = json.loads(line)
                if e.get('event') == 'done' and 200 <= e.get('status', 0) < 300 and e.get('key'):
                    accepted.add(e['key'])
    except FileNotFoundError:
        pass
    server = http.server.ThreadingHTTPServer(('127.0.0.1', args.port), Handler)
    server.daemon_threads = True
    if args.tls_cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    print('listening', flush=True)
    server.serve_forever()


if __name__ == '__main__':
    main()
