"""The server's MQTT link: a persistent session, an ingest worker, Acks after each commit."""

from __future__ import annotations

import collections
import logging
import os
import socket
import ssl
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from kiosk.protocol import TOPIC_ROOT
from server.config import ServerConfig
from server.errors import StoreError
from server.ingest import Ingest, IngestCounters, QuarantineCaps
from server.registry import Registry
from server.store import ROLL_UP_ROWS, Store
from server.supervisor import Problem, Supervised, Supervisor, name_os_thread

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
#: Bytes read from the broker's socket at once (paho reads a packet in three calls or more).
READ_AHEAD = 64 * 1024
#: MQTT keepalive: the broker drops a client silent for 1.5 times this.
KEEPALIVE_S = 30
#: How often the roll-up thread moves the counts commits queued into the
#: rollups (Store.roll_up): queries read the queue too, so this bounds how much
#: they read of it. Every 2 s, not 1: a terminal's taps of two seconds share
#: their rollup rows (a row holds every score), so a busy server upserts fewer
#: (2,000 terminals at 5,000 taps/s on PostgreSQL: p99 tap to Ack 1.14 s
#: rolling up every second, 0.93 s every two; docs/benchmarks.md).
ROLL_UP_EVERY_S = 2.0
#: paho's network thread, as the operating system names it (15 bytes at most).
MQTT_THREAD = "onetap-mqtt"


class _Client(mqtt.Client):
    """paho's Client with fewer system calls per message, and nothing else changed.

    paho reads a packet in at least three ``recv`` calls (type, length, body),
    and writes a byte to its wake-up socket for every packet it queues, even
    from its own thread. At thousands of one-rating messages a second those
    calls were a large part of a worker's CPU (docs/benchmarks.md, issue 14).
    Here the socket is read READ_AHEAD bytes at a time and what was read is
    handed out packet by packet; paho's own thread, which writes what is
    queued on its next turn anyway, queues without the wake-up byte, and
    another thread writes it only when its packet is the only one queued
    (otherwise one already woke paho's thread, or paho's thread is writing).

    With ``deliver`` set, a QoS 0 or 1 PUBLISH without MQTT 5 properties (what
    every kiosk sends) goes to it as (topic bytes, payload, retain) instead of
    through paho's MQTTMessage, Properties object and topic matcher to
    ``on_message``, and its PUBACK joins the others of the same read in one
    write; anything else takes paho's own path. ``publish_unwatched`` queues
    QoS 0 messages (the Acks) as one write, without paho's per-message
    MQTTMessageInfo, which nothing here waits on.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._ahead = bytearray()
        self._pubacks = bytearray()
        #: (topic bytes, payload, retained) -> None, in paho's thread; must not raise.
        self.deliver: Callable[[bytes, bytes, bool], None] | None = None

    def _sock_recv(self, bufsize: int) -> bytes:
        ahead = self._ahead
        if not ahead:
            data = super()._sock_recv(READ_AHEAD)
            if len(data) <= bufsize:
                return data
            ahead += data
        out = bytes(ahead[:bufsize])
        del ahead[:bufsize]
        return out

    def _packet_read(self) -> mqtt.MQTTErrorCode:
        # A packet whole in the bytes read ahead goes to paho's reader with its
        # header and body already filled in, so paho skips its byte-by-byte
        # reading and only hands it on (and keeps its keepalive times) its own way.
        ahead = self._ahead
        packet = self._in_packet
        if packet["command"] or len(ahead) < 2:
            return super()._packet_read()
        length, shift, start = 0, 0, 1
        while True:
            if start >= len(ahead) or start > 4:
                return super()._packet_read()  # not whole yet, or paho says what is wrong
            byte = ahead[start]
            start += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        end = start + length
        if end > len(ahead):
            return super()._packet_read()
        packet["command"] = ahead[0]
        packet["remaining_length"] = length
        packet["have_remaining"] = 1
        packet["to_process"] = 0
        packet["packet"] = ahead[start:end]
        del ahead[:end]
        return super()._packet_read()

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        rc = super().loop_read(max_packets)
        # Bytes read ahead are off the socket: select would not wake for them.
        while rc == mqtt.MQTT_ERR_SUCCESS and self._ahead and self._sock is not None:
            rc = super().loop_read(max_packets)
        if self._pubacks:
            # After the messages went to deliver, as paho's own PUBACK goes after on_message.
            pubacks = bytes(self._pubacks)
            self._pubacks.clear()
            if self._sock is not None:
                self._packet_queue(PacketTypes.PUBACK << 4, pubacks, 0, 0)
                # Written now, not on the loop's next turn: that turn was one more
                # select() a read, only to find the socket writable (paho
                # writes at once too, when it runs without its thread).
                if rc == mqtt.MQTT_ERR_SUCCESS:
                    rc = self.loop_write()
        return rc

    def _thread_main(self) -> None:
        # paho's thread (loop_start) under a name top -H and ps -L can tell apart.
        name_os_thread(MQTT_THREAD)
        super()._thread_main()

    def _sock_close(self) -> None:
        self._ahead.clear()  # the rest of a lost connection's bytes is not the next one's
        self._pubacks.clear()  # nor are its PUBACKs (the broker sends those messages again)
        super()._sock_close()

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        deliver = self.deliver
        header = self._in_packet["command"]
        qos = (header >> 1) & 3
        if deliver is None or qos > 1 or self._manual_ack:
            return super()._handle_publish()
        packet = self._in_packet["packet"]
        end = 2 + int.from_bytes(packet[:2], "big")  # the topic's length, then the topic
        body = end + 2 * qos  # the packet id at QoS 1
        if self._protocol == mqtt.MQTTv5:
            # A properties length of 0 is one byte 0; with properties, paho reads them.
            if body >= len(packet) or packet[body]:
                return super()._handle_publish()
            body += 1
        if end == 2 or body > len(packet):
            return super()._handle_publish()  # no topic, or too short: paho says what is wrong
        deliver(bytes(packet[2:end]), bytes(packet[body:]), bool(header & 1))
        if qos:
            self._pubacks += b"\x40\x02" + packet[end:end + 2]
        return mqtt.MQTT_ERR_SUCCESS

    def publish_unwatched(self, messages: Sequence[tuple[str, bytes]]) -> bool:
        """Queue *messages* (topic, payload) at QoS 0, not retained, as one write; False
        when not connected (then, as paho's QoS 0 publish, they are not sent at all)."""
        if self._sock is None or not messages:
            return False
        properties = b"\x00" if self._protocol == mqtt.MQTTv5 else b""
        out = bytearray()
        for topic, payload in messages:
            name = topic.encode("utf-8")
            remaining = 2 + len(name) + len(properties) + len(payload)
            out.append(PacketTypes.PUBLISH << 4)
            while True:  # MQTT's variable-length integer
                byte, remaining = remaining & 0x7F, remaining >> 7
                out.append(byte | 0x80 if remaining else byte)
                if not remaining:
                    break
            out += len(name).to_bytes(2, "big")
            out += name
            out += properties
            out += payload
        self._packet_queue(PacketTypes.PUBLISH << 4, bytes(out), 0, 0, _UNWATCHED)
        return True

    def _packet_queue(self, command: int, packet: bytes | bytearray, mid: int, qos: int,
                      info: mqtt.MQTTMessageInfo | None = None) -> mqtt.MQTTErrorCode:
        thread = self._thread
        if thread is None or self._sockpairW is None:
            return super()._packet_queue(command, packet, mid, qos, info)
        self._out_packet.append({"command": command, "mid": mid, "qos": qos, "pos": 0,
                                 "to_process": len(packet), "packet": packet, "info": info})
        # Counted after the append: with another packet still queued, paho's
        # thread has not finished writing and will write this one too.
        if threading.current_thread() is not thread and len(self._out_packet) == 1:
            try:
                self._sockpairW.send(b"0")
            except BlockingIOError:
                pass
        self._call_socket_register_write()
        return mqtt.MQTT_ERR_SUCCESS


class _Unwatched:
    """The MQTTMessageInfo of QoS 0 packets nobody waits on: paho's writer marks it published
    (or lost), and an MQTTMessageInfo's Condition per Ack was a measurable cost."""

    rc = mqtt.MQTT_ERR_SUCCESS

    def _set_as_published(self) -> None:
        """Nothing waits on it."""


_UNWATCHED = _Unwatched()


def client_id_for(config: ServerConfig) -> str:
    """The MQTT client id: config's, except that an ingest or api worker left at
    the default gets one of its own (two clients with one id knock each other off)."""
    if config.role == "all" or config.client_id != DEFAULT_CLIENT_ID:
        return config.client_id
    return f"{DEFAULT_CLIENT_ID}-{config.role}-{socket.gethostname()}-{os.getpid()}"


class _Inbox:
    """What paho received and the ingest worker has not finished, with the times /healthz judges by.

    Bounded: when full, ``put`` (paho's thread) waits, and the broker keeps the
    rest queued in our session. Once closed, ``put`` drops instead of
    waiting, so a wedged worker cannot hold paho's thread (and the process)
    at shutdown; a dropped batch is never Acked, so its kiosk sends it again.
    """

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self._clock = clock
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.received = 0
        self.processed = 0
        self.last_received: float | None = None
        self.last_processed: float | None = None
        #: When the messages now waiting started to wait (nothing pending before).
        self._backlog_since: float | None = None
        #: Since when paho's thread waits for room (None: it does not).
        self.put_blocked_since: float | None = None

    def put(self, item: Any) -> bool:
        with self._cond:
            while len(self._items) >= self.limit and not self._closed:
                if self.put_blocked_since is None:
                    self.put_blocked_since = self._clock()
                self._cond.wait(0.5)
            self.put_blocked_since = None
            if self._closed:
                log.warning("link stopping: a message from %r is dropped unacknowledged (its kiosk resends it)",
                            item[0] if isinstance(item, tuple) and item else item)
                return False
            now = self._clock()
            if self.received == self.processed:
                self._backlog_since = now
            self.received += 1
            self.last_received = now
            self._items.append((self.received, item))
            self._cond.notify_all()
            return True

    def take(self, most: int, timeout: float) -> list[tuple[int, Any]]:
        """Up to *most* (ordinal, message), waiting up to *timeout* for the first."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            out = []
            while self._items and len(out) < most:
                out.append(self._items.popleft())
            if out:
                self._cond.notify_all()
            return out

    def done(self, count: int, progress: bool) -> None:
        """*count* taken messages are finished; *progress*: committed (not dropped for a resend)."""
        with self._cond:
            self.processed += count
            if progress:
                self.last_processed = self._clock()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wake(self) -> None:
        """Wake a worker waiting in ``take`` (to see that it is asked to stop)."""
        with self._cond:
            self._cond.notify_all()

    def qsize(self) -> int:
        return len(self._items)

    def backlog(self) -> tuple[int, float | None]:
        """How many messages are pending and how long (s, unrounded) they have waited
        with none processed (None when none is)."""
        now = self._clock()
        with self._cond:
            return self.received - self.processed, self._waiting(now)

    def _waiting(self, now: float) -> float | None:
        if self.received == self.processed:
            return None
        return now - max(self._backlog_since or now, self.last_processed or 0.0)

    def state(self) -> dict[str, Any]:
        """Pending (queued or in hand), queue depth, ages (s) of the last message received and
        processed, and how long the pending ones have waited with none processed."""
        now = self._clock()
        with self._cond:
            pending = self.received - self.processed
            waiting = self._waiting(now)
            return {
                "pending": pending,
                "queue": len(self._items),
                "last_received_s": _age(now, self.last_received),
                "last_processed_s": _age(now, self.last_processed),
                "waiting_s": None if waiting is None else round(waiting, 1),
            }


def _guarded(callback: Callable[..., None]) -> Callable[..., None]:
    """*callback* for paho's thread: what escapes it is logged with its traceback, and
    paho's thread goes on (a message it was handling gets no Ack; its kiosk resends it)."""

    def guarded(*args: Any) -> None:
        try:
            callback(*args)
        except Exception:  # noqa: BLE001 - paho's thread carries every message; it must not end
            log.exception("%s failed in paho's thread", callback.__name__)

    guarded.__name__ = callback.__name__
    return guarded


def _age(now: float, then: float | None) -> float | None:
    return None if then is None else round(now - then, 1)


class Link:
    """Subscribes to every terminal's ratings and status and ingests them.

    paho's callbacks only enqueue; one worker thread owns the store (made by
    *store_factory* in that thread), commits up to 200 messages at a time and
    only then publishes their Acks (QoS 0, not retained).

    By config ``role``: "all" keeps a persistent session and subscribes to
    every ratings topic; "ingest" shares the ratings with the other workers
    ($share/onetap-ingest/...) on a clean session, because mosquitto keeps
    handing a share of the messages to a member that is away, where they
    would wait for it (the kiosks' resends make up for what a dead worker
    held); "api" only publishes (alerts) and ingests nothing.
    """

    def __init__(self, config: ServerConfig, store_factory: Callable[[], Store], *,
                 max_messages_per_commit: int = MAX_MESSAGES_PER_COMMIT,
                 fault: Callable[[str, int], None] | None = None,
                 supervisor: Supervisor | None = None,
                 queue_limit: int = QUEUE_LIMIT, keepalive_s: int = KEEPALIVE_S):
        self.config = config
        # Read now, so a missing or unreadable registry stops the start-up.
        self.registry = Registry(config.registry) if config.registry is not None else None
        # Fault injection for end-to-end tests: called with ("before-commit", n)
        # and ("after-commit", n) around the n-th commit, and ("message", n)
        # inside the guard, for each attempt to ingest the n-th message
        # received (see server.service).
        self._fault = fault
        self.store_factory = store_factory
        self.max_messages = max_messages_per_commit
        self.counters = IngestCounters()
        self._roller: Supervised | None = None
        #: (monotonic time of the first failure, its message) while roll-ups fail.
        self._roll_up_failing: tuple[float, str] | None = None
        #: The process's threads run under it; /healthz and the watchdog ask it.
        self.supervisor = supervisor if supervisor is not None else Supervisor()
        self.stall_s = float(config.ingest_stall_s)
        self.keepalive_s = keepalive_s
        self._queue = _Inbox(queue_limit)
        self._connected = threading.Event()
        self._worker: Supervised | None = None
        self._worker_ready = threading.Event()
        self._worker_error: BaseException | None = None
        self._stopping = threading.Event()
        #: Since when commits fail (StoreError), and why; None while they succeed.
        self._store_failing: tuple[float, str] | None = None
        self._started = False
        self._commits = 0
        self._backoff = 0.5
        self.role = config.role
        self._persistent = self.role == "all"
        self.client = _Client(
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
        # An exception in a callback would end paho's thread, and with it all traffic.
        self.client.on_connect = _guarded(self._on_connect)
        self.client.on_disconnect = _guarded(self._on_disconnect)
        self.client.on_message = _guarded(self._on_message)
        self.client.deliver = _guarded(self._deliver)
        self.client.on_subscribe = _guarded(self._on_subscribe)

    # -- state --------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Subscribed, paho's socket up, and paho's thread free to answer the broker's keepalive.

        paho notices a lost connection only in its own thread; while that
        thread waits for room in a full inbox (a stuck ingest), the broker
        drops us for keepalive and nothing says so but this.
        """
        if not self._connected.is_set() or not self.client.is_connected():
            return False
        blocked_since = self._queue.put_blocked_since
        # The broker's rule (MQTT): silent for 1.5 keepalives, the client is gone.
        return blocked_since is None or time.monotonic() - blocked_since < 1.5 * self.keepalive_s

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def ingest_state(self) -> dict[str, Any] | None:
        """For /healthz: pending, queue, last_received_s, last_processed_s, waiting_s
        (None for role "api", which ingests nothing)."""
        return None if self.role == "api" else self._queue.state()

    def _ingest_problem(self) -> Problem | None:
        rolling = self._roll_up_failing
        if rolling is not None and time.monotonic() - rolling[0] > self.stall_s:
            # Nothing is lost or miscounted, but every query reads a queue that only grows.
            return Problem(f"counts cannot be rolled up for {time.monotonic() - rolling[0]:.0f} s"
                           f" (they stay queued and counted): {rolling[1]}", restart=False)
        failing = self._store_failing
        if failing is not None:
            # Not stuck but refused: a restart would not give the database room
            # or bring it back, so the watchdog is still petted.
            failing_s = time.monotonic() - failing[0]
            if failing_s > self.stall_s:
                return Problem(f"ingest cannot store for {failing_s:.0f} s: {failing[1]}", restart=False)
            return None
        # Judged on the unrounded wait: the shown one (rounded to 0.1 s) said 20.0 for
        # 20.04 s while the worker's own stall check (unrounded) already said stuck.
        pending, waiting = self._queue.backlog()
        if waiting is not None and waiting > self.stall_s:
            return Problem(f"ingest is stuck: {pending} messages waiting, none processed for "
                           f"{waiting:.0f} s", restart=True)
        return None

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
        # What _Client.deliver does not take (QoS 2, MQTT 5 properties) comes this way.
        self._deliver(message._topic, bytes(message.payload), bool(message.retain))

    def _deliver(self, topic: bytes, payload: bytes, retained: bool) -> None:
        try:
            text = topic.decode("utf-8")
        except UnicodeDecodeError:
            text = topic.decode("utf-8", "replace")  # quarantined by ingest
        # The retain flag goes along: a retained message on a ratings topic is
        # refused by ingest (quarantined, never counted, never Acked).
        self._queue.put((text, payload, retained))

    # -- ingest worker ------------------------------------------------------

    def _work(self, thread: Supervised) -> None:
        """The supervised ingest loop: take up to max_messages, commit them, Ack them."""
        store = None
        try:
            with thread.busy():
                store = self.store_factory()
                ingest = Ingest(store, reasons_for_site=self.config.reasons_for_site, counters=self.counters,
                                is_known=self.registry.is_known if self.registry is not None else None,
                                public_key=self.registry.public_key if self.registry is not None else None,
                                quarantine_caps=QuarantineCaps(self.config.quarantine_rows_per_day,
                                                               self.config.quarantine_bytes_per_day))
        except Exception as exc:
            if store is not None:
                store.close()
            if self._worker_ready.is_set():
                raise  # a restart: the supervisor tries again later
            self._worker_error = exc  # the first start: Link.start raises it
            thread.request_stop()
            self._worker_ready.set()
            return
        self._worker_ready.set()
        try:
            while True:
                taken = self._queue.take(self.max_messages, timeout=1.0)
                if not taken:
                    if self._stopping.is_set():
                        return  # asked to stop, and everything received is done
                    continue
                progress = False
                try:
                    with thread.busy():
                        progress = self._commit(ingest, store, taken, thread)
                except Exception as exc:  # noqa: BLE001 - logged; the kiosks resend what was not Acked
                    log.exception("ingest failed on %d messages; they get no Ack and will be resent",
                                  len(taken))
                    thread.failed(exc)
                finally:
                    self._queue.done(len(taken), progress)
                if self._store_failing is not None:
                    # Back off so a full disk does not spin (outside busy: waiting is not stuck).
                    self._stopping.wait(self._backoff)
                    self._backoff = min(self._backoff * 2, 30)
        finally:
            try:
                store.close()
            except Exception:  # noqa: BLE001 - closing a broken connection must not hide why
                log.exception("closing the ingest store failed")

    def _commit(self, ingest: Ingest, store: Store, taken: list[tuple[int, Any]],
                thread: Supervised) -> bool:
        """Ingest *taken* in one commit, then publish the Acks; whether it committed.

        An exception escaping the whole list (a bug, or a value the store
        cannot take) does not end the worker or cost the other messages:
        they are ingested again one by one, and the one that fails on its
        own is quarantined with the reason.
        """
        self._commits += 1
        if self._fault is not None:
            self._fault("before-commit", self._commits)
        messages = [message for _, message in taken]
        try:
            self._fault_messages(taken)
            acks = ingest.handle(messages)
        except StoreError as exc:
            self._store_failed(exc, len(messages))
            return False
        except Exception as exc:  # noqa: BLE001 - retried message by message below
            log.exception("ingest failed on a commit of %d messages; trying them one by one", len(taken))
            acks = []
            ingested = 0
            for item in taken:
                try:
                    alone = self._one_alone(ingest, store, item)
                    if alone is not None:
                        acks.extend(alone)
                        ingested += 1
                except StoreError as store_error:
                    # Nothing more is committed now; the rest get no Ack and come again.
                    self._store_failed(store_error, len(taken))
                    break
                except Exception:  # noqa: BLE001 - not even its quarantine row could be written
                    log.exception("could not quarantine a message from %r; it gets no Ack and will be resent",
                                  item[1][0])
            else:
                self._store_failing = None
                self._backoff = 0.5
            # Failing for the supervisor while nothing at all gets through.
            if ingested:
                thread.succeeded()
            else:
                thread.failed(exc)
        else:
            thread.succeeded()
            self._store_failing = None
            self._backoff = 0.5
        if self._fault is not None:
            self._fault("after-commit", self._commits)
        # QoS 0: an Ack lost on the way is covered by the kiosk's resend of what is
        # not Acked (Acked again, as duplicate), so a PUBACK per Ack buys nothing.
        # One write for the commit's Acks, and no MQTTMessageInfo each.
        self.client.publish_unwatched([(ack_topic, ack.encode()) for ack_topic, ack in acks])
        return True

    def _roll_ups(self, thread: Supervised) -> None:
        """The supervised roll-up loop: every ROLL_UP_EVERY_S, move the queued
        counts into the rollups (Store.roll_up), on a connection of its own.

        Its own thread, not the ingest worker's: on PostgreSQL a roll-up of a
        busy second takes long enough that a worker doing it between commits
        left its inbox waiting (p99 tap to Ack 4.3 s with it, 0.09 s without,
        docs/benchmarks.md). A full roll-up (more was waiting) is followed by
        the next at once. A failure loses nothing (the counts stay queued, and
        counted by every query); it is logged, counted, told by /healthz when
        it lasts, and tried again next time.
        """
        store = None
        try:
            while not thread.wait(ROLL_UP_EVERY_S):
                try:
                    with thread.busy():
                        if store is None:
                            store = self.store_factory()
                        while store.roll_up(ROLL_UP_ROWS) == ROLL_UP_ROWS and not thread.stopping:
                            pass
                    self._roll_up_failing = None
                except StoreError as exc:
                    self.counters.roll_up_errors += 1
                    if self._roll_up_failing is None:
                        self._roll_up_failing = (time.monotonic(), str(exc))
                    log.warning("could not roll up the queued counts (%s); they stay queued and counted", exc)
        finally:
            if store is not None:
                store.close()

    def _one_alone(self, ingest: Ingest, store: Store, item: tuple[int, Any]) -> list | None:
        """Ingest one message in its own commit and return its Acks; if even that
        fails, quarantine it and return None."""
        try:
            self._fault_messages([item])
            return ingest.handle([item[1]])
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - quarantined with the reason, never dropped
            topic, payload = item[1][0], item[1][1]
            log.exception("ingest failed on a message from %r; quarantined", topic)
            with store.transaction():
                store.quarantine(received_at=datetime.now(timezone.utc), topic=topic, payload=payload,
                                 reason=f"internal error: {exc!r}"[:1000])
            self.counters.quarantined += 1
            return None

    def _fault_messages(self, taken: list[tuple[int, Any]]) -> None:
        if self._fault is not None:
            for ordinal, _ in taken:
                self._fault("message", ordinal)

    def _store_failed(self, exc: StoreError, count: int) -> None:
        # Nothing was committed and no Ack goes out: each kiosk resends after its timeout.
        self.counters.store_errors += 1
        if self._store_failing is None:
            self._store_failing = (time.monotonic(), str(exc))
        log.error("could not store %d messages (%s); they will be resent", count, exc)

    # -- life cycle ---------------------------------------------------------

    def start(self) -> "Link":
        """Start the ingest worker and connect (in the background; reconnects forever)."""
        if self.role != "api":
            self._worker = self.supervisor.start("onetap-ingest", self._work, stall_s=self.stall_s)
            self._worker_ready.wait()
            if self._worker_error is not None:
                raise self._worker_error
            self.supervisor.add_check(self._ingest_problem)
            self._roller = self.supervisor.start("onetap-roll-up", self._roll_ups, stall_s=self.stall_s)
        address = self.config.broker_address
        self._started = True
        if self.config.mqtt_protocol == "3.1.1":
            self.client.connect_async(address.host, address.port, keepalive=self.keepalive_s)
        elif not self._persistent:
            self.client.connect_async(address.host, address.port, keepalive=self.keepalive_s,
                                      clean_start=True)
        else:
            props = Properties(PacketTypes.CONNECT)
            # Without a session expiry an MQTT 5 session ends with the connection,
            # and batches sent while the server is down would not be queued for it.
            props.SessionExpiryInterval = self.config.session_expiry_s
            self.client.connect_async(address.host, address.port, keepalive=self.keepalive_s,
                                      clean_start=False, properties=props)
        self.client.loop_start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ingest what was received and publish its Acks (for up to *timeout*), then
        disconnect (the session stays). A wedged worker is left behind, unacknowledged."""
        if not self._started:
            return
        self._started = False
        if self._worker is not None:
            self._stopping.set()
            self._worker.request_stop()
            self._queue.wake()
            if not self._worker.join(timeout):
                log.warning("ingest worker still busy after %.1f s; leaving it (what it holds is not "
                            "Acked, so the kiosks resend it)", timeout)
        if self._roller is not None:
            # Nothing to save: what a roll-up cut short did not commit stays queued.
            self._roller.request_stop()
            self._roller.join(max(0.5, timeout))
        self._queue.close()  # paho's thread must not wait for room any more
        self.client.disconnect()
        self.client.loop_stop()
        self._connected.clear()

    def publish_retained(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        """Publish a retained QoS 1 message (survey config, alerts)."""
        return self.client.publish(topic, payload, qos=1, retain=True)
