"""THE Redis key schema of a gaggle: every key and channel, in one place.

Every key starts with ``goose:{gaggle}:`` so several gaggles share one Redis
(and an ACL user can be limited to ``~goose:*`` / ``&goose:*``). The table in
docs/redis-keys.md documents each key for ``redis-cli`` users; keep both in step.

| key                     | type    | writer  | TTL        | meaning                                           |
|-------------------------|---------|---------|------------|---------------------------------------------------|
| run                     | hash    | manager | 1 h        | run id, state, config, start time, stop reason    |
| shape                   | string  | manager | 1 h        | the load shape: users over time, slots, throttle  |
| manager                 | string  | manager | 5 s        | manager heartbeat (JSON with run id and time)     |
| workers                 | hash    | workers | none       | worker id -> registration JSON                    |
| worker:{id}             | hash    | worker  | 1 h        | state, index, users, requests, failures, hb time  |
| hb:{id}                 | string  | worker  | 5 s        | worker heartbeat: gone when the worker is         |
| assign:{id}             | string  | manager | 1 h        | the worker's assignment or refusal (JSON)         |
| ready                   | set     | workers | 1 h        | the start barrier: ids of workers ready to go     |
| stop                    | string  | anyone  | 1 h        | a stop request (JSON: who, why); first one wins   |
| metrics                 | stream  | workers | 1 h        | metric deltas, one per worker per interval        |
| acks                    | hash    | manager | 1 h        | worker id -> last metrics seq merged              |
| checkpoint              | hash    | manager | 1 h        | the manager's state, for a restarted manager      |
| control                 | channel | anyone  | -          | wake-ups: register, assign, start, shape, command, exit |
| commands                | stream  | anyone  | 1 h        | control commands for the Manager (one JSON each)  |
| reply:{id}              | string  | manager | 60 s       | the Manager's answer to command {id} (JSON)       |
| events                  | list    | manager | 1 h        | control commands the Manager applied (JSON each)  |
| snapshot                | string  | manager | 30 s; 1 h  | the live merged view for dashboards (bounded)     |
| report                  | string  | manager | 1 h        | the final JSON report, once the run is done       |

Every key of a run has a TTL that the live Manager keeps pushing forward, so a
crashed Manager leaves nothing behind for longer than ``LONG_TTL_S``.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "goose"

# Timing of the protocol (seconds).
HEARTBEAT_S = 1.0
HEARTBEAT_TTL_S = 5
WORKER_LOST_AFTER_S = 5.0
LONG_TTL_S = 3600
METRICS_INTERVAL_S = 2.0
# Row sketches (the bulk of a delta at high rates) go with every SKETCH_EVERY-th delta, the
# counts with every one: a Worker's Redis bytes stay flat in the request rate.
SKETCH_EVERY = 5
# ... but with every delta while the rows' sketches hold at most this many occupied bins
# (a few hundred bins compress to about 1 kB: at low rates live percentiles stay fresh).
SKETCH_BINS_EVERY_DELTA = 400
STREAM_MAXLEN = 100_000
POLL_S = 0.5
# A blocking stream read stays well below the socket timeout.
XREAD_BLOCK_MS = 1000
SOCKET_TIMEOUT_S = 5.0

# Run states, in order.
WAITING, RUNNING, STOPPING, DONE = "waiting", "running", "stopping", "done"
STATES = (WAITING, RUNNING, STOPPING, DONE)

# Control-channel words (pub/sub is a wake-up only: every decision lives in keys).
WAKE_REGISTER, WAKE_ASSIGN, WAKE_START, WAKE_EXIT = b"register", b"assign", b"start", b"exit"
WAKE_SHAPE = b"shape"
WAKE_COMMAND = b"command"

# Control commands (``goose-redis control``, the dashboard): how long a sender waits for
# the reply, how long a reply stays, how old a command may be when the Manager reads it
# (an older one was given up on by its sender: applying it late would surprise).
REPLY_TTL_S = 60
COMMAND_MAX_AGE_S = 30.0
COMMANDS_MAXLEN = 1000
MAX_EVENTS = 1000
# The dashboard's snapshot: rewritten every metrics interval, so a short TTL says "no live
# Manager" soon after one crashes; a finished run's final snapshot stays as long as its keys.
SNAPSHOT_TTL_S = 30
MAX_REPORT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Keys:
    gaggle: str

    @property
    def base(self) -> str:
        return f"{PREFIX}:{self.gaggle}:"

    @property
    def run(self) -> str:
        return self.base + "run"

    @property
    def manager(self) -> str:
        return self.base + "manager"

    @property
    def workers(self) -> str:
        return self.base + "workers"

    def worker(self, worker_id: str) -> str:
        return f"{self.base}worker:{worker_id}"

    def heartbeat(self, worker_id: str) -> str:
        return f"{self.base}hb:{worker_id}"

    def assign(self, worker_id: str) -> str:
        return f"{self.base}assign:{worker_id}"

    @property
    def shape(self) -> str:
        return self.base + "shape"

    @property
    def ready(self) -> str:
        return self.base + "ready"

    @property
    def stop(self) -> str:
        return self.base + "stop"

    @property
    def metrics(self) -> str:
        return self.base + "metrics"

    @property
    def acks(self) -> str:
        return self.base + "acks"

    @property
    def checkpoint(self) -> str:
        return self.base + "checkpoint"

    @property
    def control(self) -> str:
        return self.base + "control"

    @property
    def commands(self) -> str:
        return self.base + "commands"

    def reply(self, command_id: str) -> str:
        return f"{self.base}reply:{command_id}"

    @property
    def events(self) -> str:
        return self.base + "events"

    @property
    def snapshot(self) -> str:
        return self.base + "snapshot"

    @property
    def report(self) -> str:
        return self.base + "report"

    def run_scoped(self) -> list[str]:
        """Keys a new Manager clears; ``workers`` stays, so early Workers are kept."""
        return [self.run, self.shape, self.ready, self.stop, self.metrics, self.acks, self.commands, self.events,
                self.checkpoint]  # fmt: skip

    def view_scoped(self) -> list[str]:
        """What dashboards read: a new Manager clears them too, but they keep their own TTLs."""
        return [self.snapshot, self.report]
