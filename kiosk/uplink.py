"""The kiosk's uplink: sends the outbox over MQTT v5 until the server Acks each rating."""

from __future__ import annotations

import base64
import logging
import os
import queue
import random
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import kiosk
from kiosk import clock, protocol
from kiosk.config import KioskConfig, parse_broker_url
from kiosk.errors import ConfigError
from kiosk.outbox import Outbox, OutboxError
from kiosk.protocol import Ack, ProtocolError, Status

# Imported by load_signing_key: cryptography's Rust core is ~6 MB that a kiosk
# without an audit key never needs.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

log = logging.getLogger(__name__)

#: Batches awaiting the server's Ack at once (each up to 500 ratings); below
#: paho's in-flight limit of 20 so that nothing waits in paho's RAM queue.
DEFAULT_WINDOW = 8
MAX_INFLIGHT = 20
#: Unanswered batches are resent after ack_timeout, doubling up to this while
#: the server stays silent, so a week-long outage does not flood the broker.
MAX_ACK_TIMEOUT = 600.0
KEEPALIVE = 30
#: MQTT 5 reason code of a DISCONNECT sent because another client took the session over.
SESSION_TAKEN_OVER = 142
#: A connection lost this soon after it was made, this many times in a row, is
#: taken to be another client with the same id taking the session over: some
#: brokers (mosquitto 2.0.11) just close the socket instead of saying 142.
FLAP_S = 5.0
FLAPS = 3
#: Confirmed ratings older than the retention are deleted this often (and at start).
PRUNE_INTERVAL = 6 * 3600.0
_TICK = 1.0


@dataclass
class _Batch:
    key: int
    remaining: int
    sent_at: float


def load_signing_key(path: str | os.PathLike[str]) -> "Ed25519PrivateKey":
    """The terminal's Ed25519 private key from its PEM file (written by `onetap-server provision`)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"audit.key_file {path}: cannot read it ({exc.strerror})") from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"audit.key_file {path}: not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"audit.key_file {path}: not an Ed25519 key")
    return key


#: Where the chain sits in a stored payload: Rating.encode() writes it last.
_CHAIN_TAIL = len(',"chain":"') + protocol.CHAIN_HEX_CHARS + len('"}')


def payload_chain(payload: str) -> str | None:
    """The ``chain`` of one stored rating payload, or None when it has none."""
    tail = payload[-_CHAIN_TAIL:]
    if tail.startswith(',"chain":"') and tail.endswith('"}'):
        chain = tail[10:-2]
        if protocol.is_chain(chain):
            return chain
    return None


class Uplink:
    """Owns an MQTT client and a worker thread that drains the outbox.

    paho callbacks only enqueue events; the worker thread does all SQLite
    and publishing work with its own Outbox from *outbox_factory*.
    Ratings are replayed from SQLite on every connect and after an Ack
    timeout; nothing is published while disconnected.
    """

    def __init__(
        self,
        outbox_factory: Callable[[], Outbox],
        *,
        site: str,
        terminal: str,
        broker_url: str,
        username: str | None = None,
        password: str | None = None,
        tls: bool | dict[str, Any] | None = None,
        ack_timeout: float = 30.0,
        session_expiry: int = 7 * 24 * 3600,
        status_interval: float = 60.0,
        status_extra: Callable[[], dict[str, Any]] | None = None,
        on_config: Callable[[bytes], None] | None = None,
        version: str = kiosk.__version__,
        window: int = DEFAULT_WINDOW,
        reconnect_delay: tuple[float, float] = (1.0, 30.0),
        keepalive: int = KEEPALIVE,
        mqtt_protocol: str = "5",
        signing_key: "Ed25519PrivateKey | None" = None,
    ):
        protocol.check_identifier("site", site)
        protocol.check_identifier("terminal", terminal)
        scheme, self.host, self.port = parse_broker_url(broker_url)
        self.site = site
        self.terminal = terminal
        self.username = username
        self.password = password
        self.tls = (scheme == "mqtts") if tls is None else tls
        self.ack_timeout = float(ack_timeout)
        self.session_expiry = int(session_expiry)
        self.status_interval = float(status_interval)
        self.status_extra = status_extra
        self.on_config = on_config
        self.version = version
        self.window = max(1, min(window, MAX_INFLIGHT - 2))
        self.reconnect_delay = reconnect_delay
        self.keepalive = keepalive
        if mqtt_protocol not in ("5", "3.1.1"):
            raise ValueError(f"mqtt_protocol {mqtt_protocol!r} must be \"5\" or \"3.1.1\"")
        self.mqtt_protocol = mqtt_protocol
        #: Signs each batch's head (docs/protocol.md, "Audit chain"); None: unsigned.
        self.signing_key = signing_key
        self.topics = {k: protocol.topic(site, terminal, k) for k in protocol.TERMINAL_TOPIC_KINDS}
        self._max_bytes = protocol.MAX_BATCH_BYTES - protocol.batch_overhead(site, terminal)

        self._outbox_factory = outbox_factory
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._connected = False
        self._started_at = time.monotonic()
        self._cond = threading.Condition()
        self._notify_gen = 0
        self._idle_gen = -1
        self._wake_queued = False
        self.failure: BaseException | None = None
        #: Why the broker refuses this terminal (bad account, ACL, session taken over), or None.
        self.refusal: str | None = None
        self._refusal_kind: str | None = None
        #: Counters for tests, status and benchmarks.
        self.counters = {"batches_sent": 0, "ratings_sent": 0, "acked": 0,
                         "ack_timeouts": 0, "malformed_acks": 0, "connects": 0}
        # Worker-thread state.
        self._outbox: Outbox | None = None
        self._outstanding: OrderedDict[int, _Batch] = OrderedDict()
        self._inflight: dict[str, tuple[int, _Batch]] = {}
        self._cursor = 0
        self._watch: set[int] = set()
        self._batch_keys = 0
        self._current_window = self.window
        self._current_timeout = self.ack_timeout
        self._next_status = float("inf")
        self._last_status_backlog: int | None = None
        self._next_prune = 0.0
        self._published: dict[int, str] = {}
        self._connected_at = 0.0
        self._flaps = 0

    @classmethod
    def from_config(cls, cfg: "KioskConfig", **kw: Any) -> "Uplink":
        """An uplink for a KioskConfig; *kw* adds or overrides arguments (status_extra, ...)."""
        tls: bool | dict[str, Any] | None = None
        if cfg.tls:
            # paho verifies the certificate chain and the host name by default
            # (CERT_REQUIRED, tls_insecure False); no setting turns that off.
            tls = {"ca_certs": str(cfg.mqtt.ca_file) if cfg.mqtt.ca_file else None}
            if cfg.mqtt.certfile is not None:
                tls |= {"certfile": str(cfg.mqtt.certfile), "keyfile": str(cfg.mqtt.keyfile)}
        path, retention = cfg.outbox_path, cfg.outbox.retention_days
        args: dict[str, Any] = dict(
            site=cfg.site, terminal=cfg.terminal, broker_url=cfg.broker,
            username=cfg.mqtt.username, password=cfg.mqtt.password, tls=tls,
            ack_timeout=cfg.mqtt.ack_timeout_s, session_expiry=cfg.mqtt.session_expiry_s,
            status_interval=cfg.mqtt.status_interval_s, mqtt_protocol=cfg.mqtt.mqtt_protocol,
        )
        if cfg.key_path is not None:
            args["signing_key"] = load_signing_key(cfg.key_path)
        args.update(kw)
        seed = cfg.chain_seed
        factory = args.pop("outbox_factory", None) or (
            lambda: Outbox.open(path, retention_days=retention, chain_seed=seed)
        )
        return cls(factory, **args)

    # -- public -------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    def start(self) -> "Uplink":
        if self._thread is not None:
            raise RuntimeError("uplink already started")
        self._thread = threading.Thread(target=self._run, name=f"uplink-{self.terminal}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Publish the offline status (when connected), disconnect, end the worker."""
        if self._thread is None:
            return
        self._events.put(("stop", timeout))
        self._thread.join(timeout + 1.0)
        if self._thread.is_alive():
            log.warning("uplink %s did not stop within %.1fs", self.terminal, timeout)

    def notify(self) -> int:
        """New or released taps: wake the sender. Cheap; call it after every tap."""
        with self._cond:
            self._notify_gen += 1
            gen = self._notify_gen
            queued, self._wake_queued = self._wake_queued, True
        if not queued:
            self._events.put(("notify", None))
        return gen

    def status_changed(self) -> None:
        """What the board shows changed (a citizen calls staff, or the call clears): publish a Status now.

        Without this it would wait for the next periodic Status (status_interval_s).
        Cheap and thread-safe; while disconnected, the Status published on connecting carries it."""
        self._events.put(("status", None))

    def wait_idle(self, timeout: float) -> bool:
        """Wait until connected with nothing pending or awaiting an Ack (for tests and tools)."""
        gen = self.notify()
        with self._cond:
            return self._cond.wait_for(lambda: self._idle_gen >= gen, timeout)

    # -- paho callbacks: enqueue only ------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._events.put(("connect", reason_code))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._events.put(("disconnect", reason_code))

    def _on_message(self, client, userdata, message) -> None:
        self._events.put(("message", (message.topic, message.payload)))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._events.put(("puback", (mid, reason_code)))

    # -- worker -------------------------------------------------------------

    @property
    def client_id(self) -> str:
        """Unique per broker: every site has its counter-01. (A broker with
        use_username_as_clientid uses the account's username instead.)"""
        return f"onetap-{self.site}-{self.terminal}"

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311 if self.mqtt_protocol == "3.1.1" else mqtt.MQTTv5,
            # MQTT 3.1.1 keeps the session this way; MQTT 5 with clean_start
            # False and a session expiry (see _run).
            clean_session=False if self.mqtt_protocol == "3.1.1" else None,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.max_inflight_messages_set(MAX_INFLIGHT)
        low, high = self.reconnect_delay
        # Jitter, so that a facility's kiosks do not all retry in step after
        # the broker restarts.
        client.reconnect_delay_set(
            min_delay=low * random.uniform(0.5, 1.5), max_delay=high * random.uniform(0.75, 1.25)
        )
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            client.tls_set(**(self.tls if isinstance(self.tls, dict) else {}))
        client.will_set(self.topics[protocol.STATUS], protocol.OFFLINE_STATUS, qos=1, retain=True)
        return client

    def _run(self) -> None:
        try:
            self._outbox = self._outbox_factory()
            self._client = self._make_client()
            if self.mqtt_protocol == "3.1.1":
                self._client.connect_async(self.host, self.port, keepalive=self.keepalive)
            else:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = self.session_expiry
                self._client.connect_async(
                    self.host, self.port, keepalive=self.keepalive, clean_start=False,
                    properties=props,
                )
            self._client.loop_start()
        except Exception as exc:  # noqa: BLE001 - reported through .failure and the log
            log.exception("uplink %s could not start", self.terminal)
            self.failure = exc
            return
        stop_timeout: float | None = None
        while stop_timeout is None:
            try:
                stop_timeout = self._step()
            except Exception:  # noqa: BLE001 - the uplink must outlive any one bad event
                log.exception("uplink %s: unexpected error; carrying on", self.terminal)
                time.sleep(0.5)
        self._shutdown(stop_timeout)

    def _step(self) -> float | None:
        wait = _TICK
        if self._outstanding:
            oldest = next(iter(self._outstanding.values()))
            wait = min(wait, max(0.0, oldest.sent_at + self._current_timeout - time.monotonic()))
        events = []
        try:
            events.append(self._events.get(timeout=wait))
            while len(events) < 1000:
                events.append(self._events.get_nowait())
        except queue.Empty:
            pass
        # The Acks that came meanwhile are taken first and marked in one commit
        # (each commit is an fsync, and a drain's window of batches is answered
        # together). Marking is idempotent and needs nothing the other events
        # bring, so taking them ahead of a status or even a reconnect is safe; a
        # batch sent meanwhile into a lost connection goes again on the next.
        ack_topic = self.topics[protocol.ACK]
        acks = [value[1] for kind, value in events if kind == "message" and value[0] == ack_topic]
        if acks:
            self._handle_acks(acks)
        for kind, value in events:
            if kind == "stop":
                return float(value)
            if not (kind == "message" and value[0] == ack_topic):
                self._handle(kind, value)
        self._check_ack_timeout()
        self._maybe_status()
        self._fill()
        self._maybe_prune()
        return None

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now < self._next_prune or self._outbox is None:
            return
        self._next_prune = now + PRUNE_INTERVAL
        try:
            self._outbox.prune()
        except OutboxError as exc:
            # Already logged at ERROR by the outbox; tried again next interval.
            log.debug("uplink %s: prune failed: %s", self.terminal, exc)

    def _handle(self, kind: str, value: Any) -> None:
        if kind == "connect":
            if value.is_failure:
                self._refuse("connect", f"the broker refused the connection: {value} "
                             f"(account {self.username!r})")
                return
            if self._refusal_kind == "connect":
                self._refuse(None, None)
            self._on_connected()
        elif kind == "disconnect":
            if self._connected:
                lasted = time.monotonic() - self._connected_at
                self._flaps = self._flaps + 1 if lasted < FLAP_S else 0
            if getattr(value, "value", None) == SESSION_TAKEN_OVER or self._flaps >= FLAPS:
                how = ("the broker says so" if getattr(value, "value", None) == SESSION_TAKEN_OVER
                       else f"dropped {self._flaps} times in a row within {FLAP_S:.0f}s of connecting")
                self._refuse("takeover", f"another connection took this terminal's session over ({how}): "
                             f"is a second kiosk or simulator running with client id {self.client_id!r} "
                             f"or, where the broker names clients by account, account {self.username!r}?")
            elif self._connected:
                log.warning("uplink %s: disconnected (%s)", self.terminal, value)
            self._connected = False
            self._reset_window()
            self._published.clear()
        elif kind == "puback":
            mid, reason = value
            topic = self._published.pop(mid, None)
            if topic is not None and getattr(reason, "is_failure", False):
                self._refuse("publish", f"the broker refused to take {topic}: {reason} (its ACL "
                             f"does not let account {self.username!r} speak for "
                             f"{self.site}/{self.terminal})")
            elif topic == self.topics[protocol.RATINGS] and self._refusal_kind == "publish":
                self._refuse(None, None)
        elif kind == "message":
            topic, payload = value
            # Acks never come here: _step marks them first, all together.
            if topic == self.topics[protocol.CONFIG]:
                self._handle_config(payload)
            else:
                log.warning("uplink %s: message on unexpected topic %s ignored", self.terminal, topic)
        elif kind == "notify":
            with self._cond:
                self._wake_queued = False
        elif kind == "status":
            self._publish_status()

    def _refuse(self, kind: str | None, reason: str | None) -> None:
        """Record why the broker refuses this terminal (logged once per new reason); None clears it."""
        if reason is not None and reason != self.refusal:
            log.error("uplink %s/%s: %s", self.site, self.terminal, reason)
        self._refusal_kind, self.refusal = kind, reason

    def _on_connected(self) -> None:
        assert self._client is not None
        log.info("uplink %s: connected to %s:%s", self.terminal, self.host, self.port)
        self.counters["connects"] += 1
        self._connected = True
        self._connected_at = time.monotonic()
        self._client.subscribe(
            [(self.topics[protocol.ACK], 1), (self.topics[protocol.CONFIG], 1)]
        )
        self._reset_window()
        self._publish_status()

    def _reset_window(self) -> None:
        """Forget what is in flight: the next fill replays every unacked row from SQLite."""
        self._outstanding.clear()
        self._inflight.clear()
        self._watch.clear()
        self._cursor = 0

    def _handle_acks(self, payloads: list[bytes]) -> None:
        acks = []
        for payload in payloads:
            try:
                acks.append(Ack.decode(payload))
            except ProtocolError as exc:
                self.counters["malformed_acks"] += 1
                log.warning("uplink %s: malformed Ack ignored: %s (%r)", self.terminal, exc, payload[:200])
        if not acks:
            return
        ack = acks[0] if len(acks) == 1 else Ack(
            tuple(i for a in acks for i in a.accepted), tuple(i for a in acks for i in a.duplicate),
            tuple(r for a in acks for r in a.rejected))
        assert self._outbox is not None
        rowids = {}
        for rating_id in ack.ids:
            entry = self._inflight.pop(rating_id, None)
            if entry is not None:
                rowids[rating_id], batch = entry
                batch.remaining -= 1
                if batch.remaining == 0:
                    self._outstanding.pop(batch.key, None)
        if rowids:
            self._current_window = self.window
            self._current_timeout = self.ack_timeout
            # The next batches go out before the marks are written: the server
            # then has work while this thread writes them (in a drain it waited
            # for it a fifth of the time, docs/benchmarks.md). The acked rows lie
            # behind the cursor, so none of them is sent again.
            self._fill(settle=False)
        try:
            newly = self._outbox.mark_acked(ack, rowids)
        except OutboxError:
            # Not marked: everything unacked goes again from the outbox, and the
            # server's "duplicate" Ack gives another chance to record it.
            self._reset_window()
            return
        self.counters["acked"] += newly

    def _handle_config(self, payload: bytes) -> None:
        if self.on_config is None:
            return
        try:
            self.on_config(payload)
        except Exception:  # noqa: BLE001 - a bad survey config must not stop the uplink
            log.exception("uplink %s: the config handler failed", self.terminal)

    def _check_ack_timeout(self) -> None:
        if not self._outstanding:
            return
        oldest = next(iter(self._outstanding.values()))
        if time.monotonic() - oldest.sent_at < self._current_timeout:
            return
        self.counters["ack_timeouts"] += 1
        log.warning(
            "uplink %s: no Ack within %.0fs for %d batch(es); resending from the outbox",
            self.terminal, self._current_timeout, len(self._outstanding),
        )
        self._reset_window()
        # Probe with one batch until the server answers again.
        self._current_window = 1
        self._current_timeout = min(self._current_timeout * 2, max(self.ack_timeout, MAX_ACK_TIMEOUT))

    def _fill(self, settle: bool = True) -> None:
        """Send unacked rows while the window has room. *settle*: once nothing is
        left to send or to be Acked, say so (status, wait_idle); not before the
        last Acks are marked."""
        with self._cond:
            gen = self._notify_gen
        if not self._connected or self._client is None or not self._client.is_connected():
            return
        assert self._outbox is not None
        if self._watch:
            # Follow-ups released after the cursor passed them.
            still = set(self._outbox.held_rowids()) & self._watch
            released = sorted(self._watch - still)
            self._watch = still
            rows = [r for r in self._outbox.rows(released) if r[1] not in self._inflight]
            for start in range(0, len(rows), protocol.MAX_BATCH_RATINGS):
                if not self._send(rows[start:start + protocol.MAX_BATCH_RATINGS]):
                    return
        drained = False
        while len(self._outstanding) < self._current_window:
            # Held rows first: one released between the two queries is sent
            # (maybe twice, which the server's dedup absorbs), never skipped.
            held = self._outbox.held_rowids(self._cursor)
            rows = self._outbox.pending(
                limit=protocol.MAX_BATCH_RATINGS, max_bytes=self._max_bytes, after_rowid=self._cursor
            )
            if not rows:
                drained = True
                break
            last = rows[-1][0]
            self._watch.update(h for h in held if h < last)
            self._cursor = last
            rows = [r for r in rows if r[1] not in self._inflight]
            if rows and not self._send(rows):
                return
        if settle and drained and not self._outstanding:
            if self._last_status_backlog:
                self._publish_status()  # drained: tell the board at once
            with self._cond:
                self._idle_gen = max(self._idle_gen, gen)
                self._cond.notify_all()

    def _send(self, rows: list[tuple[int, str, str]]) -> bool:
        assert self._client is not None
        head_sig = None
        if self.signing_key is not None:
            # Rows come in seq order: the last one is the batch's head.
            chain = payload_chain(rows[-1][2])
            if chain is not None:
                head_sig = base64.b64encode(self.signing_key.sign(protocol.head_message(chain))).decode("ascii")
        payload = protocol.encode_batch(self.site, self.terminal, [r[2] for r in rows], head_sig)
        info = self._client.publish(self.topics[protocol.RATINGS], payload, qos=1)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._published[info.mid] = self.topics[protocol.RATINGS]
        else:
            # Lost the connection meanwhile: the disconnect event resets the
            # window and the next connect replays from SQLite.
            log.warning("uplink %s: publish failed (%s)", self.terminal, mqtt.error_string(info.rc))
            self._connected = False
            self._reset_window()
            return False
        self._batch_keys += 1
        batch = _Batch(self._batch_keys, len(rows), time.monotonic())
        self._outstanding[batch.key] = batch
        inflight = self._inflight
        for rowid, rating_id, _ in rows:
            inflight[rating_id] = (rowid, batch)
        self.counters["batches_sent"] += 1
        self.counters["ratings_sent"] += len(rows)
        return True

    # -- status -------------------------------------------------------------

    def status_fields(self) -> dict[str, Any]:
        """The online Status fields (worker thread: it reads the worker's outbox)."""
        assert self._outbox is not None
        stats = self._outbox.stats()
        fields: dict[str, Any] = {
            "at": protocol.format_timestamp(clock.local_now()),
            "version": self.version,
            "backlog": stats.backlog,
            "oldest_pending_at": stats.oldest_pending_at,
            "last_tap_at": stats.last_tap_at,
            "last_ack_at": stats.last_ack_at,
            "seq": stats.last_seq,
            "clock_synced": clock.clock_synced(),
            "uptime_s": round(time.monotonic() - self._started_at, 1),
            "disk_free_mb": self._disk_free_mb(),
            "config_version": None,
        }
        if stats.error:
            fields["error"] = stats.error
        if self.status_extra is not None:
            try:
                extra = self.status_extra()
                if extra.get("error") and fields.get("error"):
                    # Both are shown: the outbox's problem first, it loses ratings.
                    extra = {**extra, "error": f"{fields['error']}; {extra['error']}"}
                fields.update(extra)
            except Exception:  # noqa: BLE001 - status must go out even if the extra fails
                log.exception("uplink %s: status_extra failed", self.terminal)
        return fields

    def _disk_free_mb(self) -> float | None:
        path = self._outbox.path if self._outbox is not None else None
        if path is None:
            return None
        try:
            return round(shutil.disk_usage(path.parent).free / 2**20, 1)
        except OSError:
            return None

    def _publish_status(self) -> None:
        if not self._connected or self._client is None:
            return
        try:
            fields = self.status_fields()
        except Exception:  # noqa: BLE001 - a failing disk must not stop the sender
            log.exception("uplink %s: cannot read the outbox for status", self.terminal)
            return
        info = self._client.publish(
            self.topics[protocol.STATUS], Status("online", fields).encode(), qos=1, retain=True
        )
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._published[info.mid] = self.topics[protocol.STATUS]
            self._last_status_backlog = fields["backlog"]
            self._next_status = time.monotonic() + self.status_interval

    def _maybe_status(self) -> None:
        if self._connected and time.monotonic() >= self._next_status:
            self._publish_status()

    def _shutdown(self, timeout: float) -> None:
        client = self._client
        assert client is not None
        if self._connected:
            info = client.publish(
                self.topics[protocol.STATUS], protocol.OFFLINE_STATUS, qos=1, retain=True
            )
            try:
                info.wait_for_publish(timeout=max(0.1, timeout / 2))
            except (RuntimeError, ValueError) as exc:
                log.warning("uplink %s: offline status not confirmed: %s", self.terminal, exc)
        self._connected = False
        client.disconnect()
        client.loop_stop()
        if self._outbox is not None:
            self._outbox.close()
