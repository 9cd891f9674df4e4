"""The server's MQTT link: a persistent session, an ingest worker, Acks after each commit."""

from __future__ import annotations

import logging
import os
import queue
import socket
import ssl
import threading
import time
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from kiosk.protocol import TOPIC_ROOT
from server.config import ServerConfig
from server.errors import StoreError
from server.ingest import Ingest, IngestCounters, Message, QuarantineCaps
from server.registry import Registry
from server.store import Store

log = logging.getLogger(__name__)

RATINGS_SUBSCRIPTION = f"{TOPIC_ROOT}/+/+/ratings"
STATUS_SUBSCRIPTION = f"{TOPIC_ROOT}/+/+/status"
#: Ingest workers (role "ingest") share the ratings: the broker hands each
#: message to one member of the group. Statuses are not shared: every worker
#: stores every status (an idempotent upsert), so each one gets the retained
#: statuses when it subscribes, which a shared subscription never sends.
SHARED_GROUP = "onetap-ingest"
SHARED_RATINGS_SUBSCRIPTION = f"$share/{SHARED_GROUP}/{RATINGS_SUBSCRIPTION}"
DEFAULT_CLIENT_ID = "onetap-server"
#: Messages per commit at most: many batches share one FULL commit, then their Acks go.
MAX_MESSAGES_PER_COMMIT = 200
#: Received but not yet ingested; when full, paho's thread waits, and the
#: broker keeps the rest queued in our session.
QUEUE_LIMIT = 1000
_STOP = object()


def client_id_for(config: ServerConfig) -> str:
    """The MQTT client id: config's, except that an ingest or api worker left at
    the default gets one of its own (two clients with one id knock each other off)."""
    if config.role == "all" or config.client_id != DEFAULT_CLIENT_ID:
        return config.client_id
    return f"{DEFAULT_CLIENT_ID}-{config.role}-{socket.gethostname()}-{os.getpid()}"


class Link:
    """Subscribes to every terminal's ratings and status and ingests them.

    paho's callbacks only enqueue; one worker thread owns the store (made by
    *store_factory* in that thread), commits up to 200 messages at a time and
    only then publishes their Acks (QoS 1, not retained).

    By config ``role``: "all" keeps a persistent session and subscribes to
    every ratings topic; "ingest" shares the ratings with the other workers
    ($share/onetap-ingest/...) on a clean session, because mosquitto keeps
    handing a share of the messages to a member that is away, where they
    would wait for it (the kiosks' resends make up for what a dead worker
    held); "api" only publishes (alerts) and ingests nothing.
    """

    def __init__(self, config: ServerConfig, store_factory: Callable[[], Store], *,
                 max_messages_per_commit: int = MAX_MESSAGES_PER_COMMIT,
                 fault: Callable[[str, int], None] | None = None):
        self.config = config
        # Read now, so a missing or unreadable registry stops the start-up.
        self.registry = Registry(config.registry) if config.registry is not None else None
        # Fault injection for end-to-end tests: called with ("before-commit", n)
        # and ("after-commit", n) around the n-th commit (see server.__main__).
        self._fault = fault
        self.store_factory = store_factory
        self.max_messages = max_messages_per_commit
        self.counters = IngestCounters()
        self._queue: queue.Queue = queue.Queue(QUEUE_LIMIT)
        self._connected = threading.Event()
        self._worker: threading.Thread | None = None
        self._worker_ready = threading.Event()
        self._worker_error: BaseException | None = None
        self._started = False
        self.role = config.role
        self._persistent = self.role == "all"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id_for(config),
            protocol=mqtt.MQTTv311 if config.mqtt_protocol == "3.1.1" else mqtt.MQTTv5,
            # MQTT 3.1.1 keeps the session (and its queued batches) this way;
            # MQTT 5 does it with clean_start=False and a session expiry below.
            clean_session=(not self._persistent) if config.mqtt_protocol == "3.1.1" else None,
        )
        if config.username is not None:
            self.client.username_pw_set(config.username, config.password)
        if config.broker_address.tls:
            # The broker's certificate must chain to ca_file (or the system's
            # CAs) and name the host we dialled; no setting turns that off.
            self.client.tls_set(
                ca_certs=str(config.ca_file) if config.ca_file else None,
                certfile=str(config.certfile) if config.certfile else None,
                keyfile=str(config.keyfile) if config.keyfile else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            self.client.tls_insecure_set(False)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    # -- state --------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # -- paho callbacks (paho's thread: enqueue only) ----------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker %s refused the connection: %s", self.config.broker, reason_code)
            return
        log.info("connected to %s (session present: %s)", self.config.broker, flags.session_present)
        if self.role == "api":
            self._connected.set()  # publishes alerts only; nothing to subscribe to
            return
        ratings = SHARED_RATINGS_SUBSCRIPTION if self.role == "ingest" else RATINGS_SUBSCRIPTION
        # Subscribing again is harmless with a kept session; retainHandling=1
        # then skips re-sending every retained status we already stored.
        if self.config.mqtt_protocol == "3.1.1":
            client.subscribe([(ratings, 1), (STATUS_SUBSCRIPTION, 1)])
            return
        client.subscribe([
            # retainAsPublished: a batch published retained keeps its flag on the
            # way to us too, so ingest refuses it the first time, not only when
            # the broker hands it out again after a restart.
            (ratings, SubscribeOptions(qos=1, retainAsPublished=True)),
            (STATUS_SUBSCRIPTION, SubscribeOptions(qos=1, retainHandling=1)),
        ])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        failed = [code for code in reason_codes if code.is_failure]
        if failed:
            # Typically the broker's ACL: without these subscriptions nothing arrives.
            log.error("broker refused a subscription: %s", failed)
            return
        # Connected for /healthz means ready to receive, not merely a socket.
        log.info("subscribed to the terminals' ratings and statuses (role %s)", self.role)
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        if self._started:
            log.warning("disconnected from %s (%s); reconnecting", self.config.broker, reason_code)

    def _on_message(self, client, userdata, message) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = message._topic.decode("utf-8", "replace")  # quarantined by ingest
        # The retain flag goes along: a retained message on a ratings topic is
        # refused by ingest (quarantined, never counted, never Acked).
        self._queue.put((topic, bytes(message.payload), bool(message.retain)))

    # -- ingest worker ------------------------------------------------------

    def _work(self) -> None:
        try:
            store = self.store_factory()
        except BaseException as exc:
            self._worker_error = exc
            self._worker_ready.set()
            raise
        ingest = Ingest(store, reasons_for_site=self.config.reasons_for_site, counters=self.counters,
                        is_known=self.registry.is_known if self.registry is not None else None,
                        quarantine_caps=QuarantineCaps(self.config.quarantine_rows_per_day,
                                                       self.config.quarantine_bytes_per_day))
        self._worker_ready.set()
        backoff = 0.5
        commits = 0
        try:
            stopping = False
            while not stopping:
                item = self._queue.get()
                if item is _STOP:
                    break
                messages: list[Message] = [item]
                while len(messages) < self.max_messages:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stopping = True
                        break
                    messages.append(item)
                commits += 1
                if self._fault is not None:
                    self._fault("before-commit", commits)
                try:
                    acks = ingest.handle(messages)
                except StoreError as exc:
                    # Nothing was committed and no Ack goes out: each kiosk
                    # resends after its timeout. Back off so a full disk does
                    # not spin.
                    self.counters.store_errors += 1
                    log.error("could not store %d messages (%s); they will be resent", len(messages), exc)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 30)
                    continue
                backoff = 0.5
                if self._fault is not None:
                    self._fault("after-commit", commits)
                for ack_topic, ack in acks:
                    self.client.publish(ack_topic, ack.encode(), qos=1)
        finally:
            store.close()

    # -- life cycle ---------------------------------------------------------

    def start(self) -> "Link":
        """Start the ingest worker and connect (in the background; reconnects forever)."""
        if self.role != "api":
            self._worker = threading.Thread(target=self._work, name="onetap-ingest", daemon=True)
            self._worker.start()
            self._worker_ready.wait()
            if self._worker_error is not None:
                raise self._worker_error
        address = self.config.broker_address
        self._started = True
        if self.config.mqtt_protocol == "3.1.1":
            self.client.connect_async(address.host, address.port, keepalive=30)
        elif not self._persistent:
            self.client.connect_async(address.host, address.port, keepalive=30, clean_start=True)
        else:
            props = Properties(PacketTypes.CONNECT)
            # Without a session expiry an MQTT 5 session ends with the connection,
            # and batches sent while the server is down would not be queued for it.
            props.SessionExpiryInterval = self.config.session_expiry_s
            self.client.connect_async(address.host, address.port, keepalive=30,
                                      clean_start=False, properties=props)
        self.client.loop_start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ingest what was received, publish its Acks, then disconnect (the session stays)."""
        if not self._started:
            return
        self._started = False
        if self._worker is not None:
            self._queue.put(_STOP)
            self._worker.join(timeout)
            if self._worker.is_alive():
                log.warning("ingest worker still busy after %.0f s; leaving it", timeout)
        self.client.disconnect()
        self.client.loop_stop()
        self._connected.clear()

    def publish_retained(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        """Publish a retained QoS 1 message (survey config, alerts)."""
        return self.client.publish(topic, payload, qos=1, retain=True)
