"""Presence in Redis (docs/PROTOCOL.md section 4): rt:presence:user:{user}:{room}
holds "1" with a TTL of at most PRESENCE_TTL while the user has a connection
in the room on any node; the node refreshes it at least every PRESENCE_TTL/2;
it is deleted when the user's last connection in the room, on any node,
closes, and a crashed node's entries expire within PRESENCE_TTL.

Time is the behaviour under test here (TTLs, refresh periods, "within a
second"), so some cases watch the clock on purpose; every other wait polls
with a deadline."""

import asyncio
import time

from rtws_harness import *

DELETE_WITHIN = 1.0     # "closing both removes it within a second" (the issue)


async def _join(node, room, user):
    return await connect(node.port, room, token=mint(user))


async def _present(r, user, room, what, timeout=3.0):
    key = presence_key(user, room)
    ok, _ = await poll_until(lambda: r.exists(key), timeout)
    require(ok, f"{what}: {key} is set within {timeout} s of the connection opening")


async def _gone_within(r, user, room, timeout):
    """Seconds until the key disappeared, or None if it outlived timeout."""
    key = presence_key(user, room)
    t0 = time.monotonic()
    ok, _ = await poll_until(lambda: not r.exists(key), timeout, interval=0.01)
    return time.monotonic() - t0 if ok else None


class _KeyWatch:
    """Keyspace notifications for one key: sees a DEL or an expiry even when a
    refresh re-creates the key between two polls."""

    def __init__(self, r, key):
        r.config_set("notify-keyspace-events", "KA")
        self.p = r.pubsub(ignore_subscribe_messages=True)
        self.p.subscribe(f"__keyspace@0__:{key}")
        self.p.get_message(timeout=1.0)     # the subscribe confirmation
        self.events = []

    def drain(self):
        while True:
            m = self.p.get_message(timeout=0)
            if m is None:
                return self.events
            if m.get("type") == "message":
                self.events.append(m["data"])

    def removals(self):
        return [e for e in self.drain() if e in ("del", "expired", "unlink", "evicted")]

    def close(self):
        self.p.close()


async def _stays(r, user, room, seconds, ttl, watch=None):
    """Watches the key for `seconds` (the clock is the behaviour); returns a
    list of problems: absent at a poll, a TTL above PRESENCE_TTL, no TTL at
    all, a DEL/expiry notification."""
    key = presence_key(user, room)
    problems = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pttl = r.pttl(key)
        if pttl == -2:
            problems.append(f"absent at t+{seconds - (end - time.monotonic()):.2f} s")
        elif pttl == -1:
            problems.append("the key has no TTL")
        elif pttl > ttl * 1000:
            problems.append(f"PTTL {pttl} ms > PRESENCE_TTL {ttl} s")
        if watch and watch.removals():
            problems.append("a DEL/expiry notification for the key")
        if problems:
            return problems
        await asyncio.sleep(0.02)   # sampling a key over time is the test
    return problems


async def test_key_value_ttl_and_rooms():
    ttl = 10
    with RedisServer() as redis:
        r = redis.client()
        with Cluster(redis.url, 1, {"PRESENCE_TTL": str(ttl)}) as (a,):
            lobby = await _join(a, "lobby", "alice")
            kitchen = await _join(a, "kitchen", "alice")
            num = await _join(a, "lobby", 12345)
            await _present(r, "alice", "lobby", "alice joins lobby")
            await _present(r, "alice", "kitchen", "alice joins kitchen too")
            await _present(r, "12345", "lobby", "a numeric sub is the user id of the key")
            key = presence_key("alice", "lobby")
            check_eq(r.get(key), "1", f"{key} holds the string \"1\" (seed-compatible)")
            pttl = r.pttl(key)
            check(0 < pttl <= ttl * 1000, f"{key} has a TTL of at most PRESENCE_TTL={ttl} s",
                  f"PTTL {pttl} ms")

            # A second tab of alice on the same node; closing one keeps the key.
            tab2 = await _join(a, "lobby", "alice")
            await expect_silence_then(tab2, "tab2-up", "alice's second tab is served")
            watch = _KeyWatch(r, key)
            await lobby.close()
            problems = await _stays(r, "alice", "lobby", DELETE_WITHIN + 0.5, ttl, watch)
            check(not problems, "closing one of two tabs of a user on one node keeps the "
                                "presence key", "; ".join(problems))
            watch.close()

            await tab2.close()
            took = await _gone_within(r, "alice", "lobby", DELETE_WITHIN)
            check(took is not None, f"closing the user's last connection in a room deletes "
                                    f"its presence key within {DELETE_WITHIN} s",
                  f"{key} still there")
            check(r.exists(presence_key("alice", "kitchen")),
                  "leaving lobby does not touch alice's presence in kitchen")
            check(r.exists(presence_key("12345", "lobby")),
                  "alice leaving lobby does not touch another user's presence in lobby")
            for ws in (kitchen, num):
                await ws.close()
            for user, room in (("alice", "kitchen"), ("12345", "lobby")):
                took = await _gone_within(r, user, room, DELETE_WITHIN)
                check(took is not None, f"{presence_key(user, room)} is deleted within "
                                        f"{DELETE_WITHIN} s of its last connection closing")


async def test_two_tabs_on_two_nodes():
    ttl = 10
    with RedisServer() as redis:
        r = redis.client()
        with Cluster(redis.url, 2, {"PRESENCE_TTL": str(ttl)}) as (a, b):
            tab_a = await _join(a, "lobby", "alice")
            tab_b = await _join(b, "lobby", "alice")
            bob = await _join(a, "lobby", "bob")
            await _present(r, "alice", "lobby", "alice with a tab on each node")
            await _present(r, "bob", "lobby", "bob on node A")
            key = presence_key("alice", "lobby")
            check_eq(r.get(key), "1", "two tabs on two nodes share one key holding \"1\"")

            watch = _KeyWatch(r, key)
            await tab_a.close()
            problems = await _stays(r, "alice", "lobby", DELETE_WITHIN + 0.5, ttl, watch)
            check(not problems, "closing alice's tab on node A keeps her presence key while "
                                "her tab on node B lives (last connection on ANY node)",
                  "; ".join(problems))
            # And it is still kept alive by node B, not just left to expire.
            pttl = r.pttl(key)
            check(0 < pttl <= ttl * 1000, "the key keeps a TTL of at most PRESENCE_TTL after "
                                          "one tab closed", f"PTTL {pttl}")
            watch.close()

            await tab_b.close()
            took = await _gone_within(r, "alice", "lobby", DELETE_WITHIN)
            check(took is not None, f"closing alice's last tab (node B) deletes the key within "
                                    f"{DELETE_WITHIN} s although her first tab was on node A",
                  f"{key} still there, PTTL {r.pttl(key)}")
            check(r.exists(presence_key("bob", "lobby")),
                  "another user's presence in the room is untouched")

            # The other order: the tab that closes last is on the node that
            # saw the first connection.
            tab_b = await _join(b, "lobby", "alice")
            await _present(r, "alice", "lobby", "alice rejoins on node B")
            tab_a = await _join(a, "lobby", "alice")
            await expect_silence_then(tab_a, "a-up", "alice's tab on node A is served")
            await tab_b.close()
            problems = await _stays(r, "alice", "lobby", DELETE_WITHIN + 0.5, ttl)
            check(not problems, "closing the first tab (node B) keeps the key while the "
                                "later tab on node A lives", "; ".join(problems))
            await tab_a.close()
            took = await _gone_within(r, "alice", "lobby", DELETE_WITHIN)
            check(took is not None, f"closing the remaining tab on node A deletes the key "
                                    f"within {DELETE_WITHIN} s")
            await bob.close()


async def test_crashed_node_entries_expire():
    ttl = 2
    with RedisServer() as redis:
        r = redis.client()
        with Cluster(redis.url, 2, {"PRESENCE_TTL": str(ttl)}) as (a, b):
            alice = await _join(a, "lobby", "alice")
            bob = await _join(b, "lobby", "bob")
            await _present(r, "alice", "lobby", "alice on node A")
            await _present(r, "bob", "lobby", "bob on node B")
            pttl = r.pttl(presence_key("alice", "lobby"))
            check(0 < pttl <= ttl * 1000, f"the key's TTL is at most PRESENCE_TTL={ttl} s",
                  f"PTTL {pttl}")
            a.kill()
            t_kill = time.monotonic()
            took = await _gone_within(r, "alice", "lobby", ttl + 1.0)
            check(took is not None and took <= ttl + 0.3,
                  f"the presence key of a user whose only connection was on a SIGKILLed node "
                  f"expires within PRESENCE_TTL={ttl} s",
                  "still there after 3 s" if took is None else f"took {took:.2f} s")
            if took is not None:
                print(f"    (the crashed node's key expired {took:.2f} s after SIGKILL)")
            # Bob's node is alive and keeps refreshing: his key outlives the
            # crash by more than a TTL.
            left = ttl + 0.8 - (time.monotonic() - t_kill)
            problems = await _stays(r, "bob", "lobby", max(left, 0.5), ttl)
            check(not problems, "a live node keeps refreshing its users' keys while another "
                                "node's entries expire", "; ".join(problems))
            await expect_silence_then(bob, "bob-ok", "node B still serves after node A died")
            await alice.close()
            await bob.close()


async def test_silent_client_stays_present():
    ttl = 2
    watch_for = 2.5 * ttl
    env = {"PRESENCE_TTL": str(ttl), "HEARTBEAT_INTERVAL": "1", "IDLE_TIMEOUT": "60"}
    with RedisServer() as redis:
        r = redis.client()
        with Cluster(redis.url, 1, env) as (a,):
            # The client never sends a data frame and ignores the server's JSON
            # system.ping frames; python-websockets only answers protocol pings.
            ws = await _join(a, "quiet", "silent")
            await _present(r, "silent", "quiet", "a silent client connects")
            key = presence_key("silent", "quiet")
            seen = []
            end = time.monotonic() + watch_for
            while time.monotonic() < end:
                seen.append(r.pttl(key))
                await asyncio.sleep(0.02)   # sampling over 2.5 TTLs is the test
            absent = sum(1 for p in seen if p < 0)
            check(absent == 0, f"a connected client that sends nothing stays present past "
                               f"PRESENCE_TTL={ttl} s (the node refreshes the key every "
                               f"PRESENCE_TTL/2)", f"absent or without TTL in {absent} of "
                                                   f"{len(seen)} samples over {watch_for} s")
            check(max(seen) <= ttl * 1000, "a refreshed key never has a TTL above "
                                           "PRESENCE_TTL", f"max PTTL {max(seen)} ms")
            rises = sum(1 for x, y in zip(seen, seen[1:]) if y > x + 100)
            check(rises >= 2, "the TTL is renewed repeatedly while the connection lives",
                  f"{rises} renewals in {watch_for} s")
            code, reason, _ = await expect_close(ws, 0.01)
            check(code is None, "the silent client was not disconnected (IDLE_TIMEOUT=60)",
                  f"closed {code} {reason!r}")
            await ws.close()
            took = await _gone_within(r, "silent", "quiet", DELETE_WITHIN)
            check(took is not None, "the silent client's key is deleted when it closes")


if __name__ == "__main__":
    main([test_key_value_ttl_and_rooms, test_two_tabs_on_two_nodes,
          test_crashed_node_entries_expire, test_silent_client_stays_present],
         per_test_timeout=30, watchdog=58)
