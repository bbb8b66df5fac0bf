"""An SQS FIFO handler written for AWS Lambda, run under fifo unchanged.

`handler(event, context)` is the function as it would be deployed to Lambda
with ReportBatchItemFailures: it handles the event's records in order and,
as AWS asks of FIFO handlers, once one fails it reports that one and every
later one as failed without handling them.

The two ways fifo hands it events:

    python3 lambda_sqs.py serve HOST:PORT   # POST /events, as Lambda Web
                                            # Adapter's pass-through route;
                                            # GET /healthz answers 200
    python3 lambda_sqs.py invoke            # the event on stdin, the answer
                                            # on stdout (as `sam local invoke`)

What it does with a message, for the tests: it appends a record
`EVENT lambda GROUP NANOS RECEIVE_COUNT SEQ` (start, then ok or failed) to the
file $RECORDS, and each event it was given as one JSON line to $EVENTS. A
message listed in $FAIL_ONCE (`group:seq`, comma-separated) fails the first
time it is handled, across processes.
"""

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def handler(event, context):
    failures = []
    for record in event["Records"]:
        if failures:
            # FIFO: the rest of the batch must not run before the failed one.
            failures.append({"itemIdentifier": record["messageId"]})
            continue
        try:
            process(record)
        except Exception as error:
            print(f"message {record['messageId']} failed: {error}", file=sys.stderr)
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}


def process(record):
    group = record["attributes"]["MessageGroupId"]
    count = record["attributes"]["ApproximateReceiveCount"]
    seq = json.loads(record["body"])["seq"]
    write_record("start", group, count, seq)
    if fails_once(group, seq):
        write_record("failed", group, count, seq)
        raise RuntimeError(f"{group} #{seq} fails once")
    write_record("ok", group, count, seq)
    print(f"{group} #{seq} done", file=sys.stderr)


def write_record(event, group, count, seq):
    with open(os.environ["RECORDS"], "a") as records:
        records.write(f"{event} lambda {group} {time.time_ns()} {count} {seq}\n")


def fails_once(group, seq):
    if f"{group}:{seq}" not in os.environ.get("FAIL_ONCE", "").split(","):
        return False
    marker = f"{os.environ['RECORDS']}.failed-{group}-{seq}"
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False


def keep_event(event):
    with open(os.environ["EVENTS"], "a") as events:
        events.write(json.dumps(event) + "\n")


class Adapter(BaseHTTPRequestHandler):
    def do_POST(self):
        if self.path != "/events":
            self.send_error(404)
            return
        event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        keep_event(event)
        answer = json.dumps(handler(event, None)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args):
        pass


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        host, port = sys.argv[2].rsplit(":", 1)
        ThreadingHTTPServer((host, int(port)), Adapter).serve_forever()
    else:
        event = json.load(sys.stdin)
        keep_event(event)
        print(json.dumps(handler(event, None)))
