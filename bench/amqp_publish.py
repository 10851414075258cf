#!/usr/bin/env python3
"""Task publisher for bench/amqp_tasks.sh (needs pika).

  amqp_publish.py publish URL QUEUE EXPORTER BATCH STUDIES OUT [SPACING_MS]
      publishes one task per line of STUDIES (a study UID) to QUEUE on the
      default exchange, as plain JSON with dcm4chee's names, persistent, with
      publisher confirms, one at a time (each publish waits for its confirm),
      then sleeps SPACING_MS (default 0). Writes "study<TAB>publish_ns<TAB>
      confirmed_ns" lines to OUT: time.time_ns() just before the publish and
      after its confirm.
  amqp_publish.py trigger API AET EXPORTER BATCH STUDIES OUT [SPACING_MS]
      the same through the REST trigger of the embedded queue:
      POST API/aets/AET/rs/studies/UID/export/EXPORTER?batchID=BATCH (must
      answer 202), timed from just before the request (and after the response).
  amqp_publish.py wait-consumers URL QUEUE COUNT [TIMEOUT_S]
      waits until QUEUE has COUNT consumers.
  amqp_publish.py delete URL QUEUE...
      deletes the queues (missing ones are fine).
"""
import http.client
import json
import sys
import time
import urllib.parse

import pika


def connect(url):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    return conn, conn.channel()


def studies_of(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def publish(url, queue, exporter, batch, studies, out, spacing_ms="0"):
    conn, ch = connect(url)
    ch.confirm_delivery()
    ch.queue_declare(queue=queue, durable=True)
    props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    spacing = float(spacing_ms) / 1000
    with open(out, "w") as o:
        for uid in studies_of(studies):
            body = json.dumps(
                {"ExporterID": exporter, "StudyInstanceUID": uid, "batchID": batch}
            ).encode()
            t = time.time_ns()
            # With confirms on, basic_publish returns once the broker
            # confirmed (raises on a nack or an unroutable message).
            ch.basic_publish("", queue, body, props, mandatory=True)
            o.write(f"{uid}\t{t}\t{time.time_ns()}\n")
            if spacing:
                time.sleep(spacing)
    conn.close()


def trigger(api, aet, exporter, batch, studies, out, spacing_ms="0"):
    u = urllib.parse.urlsplit(api)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    spacing = float(spacing_ms) / 1000
    q = urllib.parse.urlencode({"batchID": batch})
    with open(out, "w") as o:
        for uid in studies_of(studies):
            path = f"{u.path}/aets/{aet}/rs/studies/{uid}/export/{exporter}?{q}"
            t = time.time_ns()
            conn.request("POST", path, body=b"")
            r = conn.getresponse()
            body = r.read()
            if r.status != 202:
                sys.exit(f"trigger of {uid}: HTTP {r.status}: {body[:200]!r}")
            o.write(f"{uid}\t{t}\t{time.time_ns()}\n")
            if spacing:
                time.sleep(spacing)
    conn.close()


def wait_consumers(url, queue, count, timeout_s="30"):
    conn, ch = connect(url)
    deadline = time.monotonic() + float(timeout_s)
    while True:
        try:
            d = ch.queue_declare(queue=queue, durable=True, passive=True)
            if d.method.consumer_count >= int(count):
                break
        except pika.exceptions.ChannelClosedByBroker:
            ch = conn.channel()  # not declared yet
        if time.monotonic() > deadline:
            sys.exit(f"{queue}: fewer than {count} consumers after {timeout_s} s")
        time.sleep(0.05)
    conn.close()


def delete(url, *queues):
    conn, ch = connect(url)
    for q in queues:
        ch.queue_delete(queue=q)
    conn.close()


if __name__ == "__main__":
    cmds = {"publish": publish, "trigger": trigger, "wait-consumers": wait_consumers, "delete": delete}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    try:
        cmds[sys.argv[1]](*sys.argv[2:])
    except TypeError as e:
        sys.exit(f"{e}\n{__doc__}")
