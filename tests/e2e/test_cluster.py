"""Several rtwsd nodes on one Redis (the Redis engine, docs/PROTOCOL.md
sections 3 and 4): a chat.delivery reaches every connection of the room on
every node exactly once, in publish order per publisher; a backend's PUBLISH
room:{room} of a JSON object reaches every client verbatim, anything else is
dropped; each node subscribes to room:{room} exactly while it has local
members.

A node subscribes to a room when its first local member joins, which takes a
round trip to Redis after the upgrade. The contract does not say a joiner
hears messages published elsewhere in that instant, so every case waits until
PUBSUB NUMSUB shows each node with members subscribed before it publishes."""

import asyncio
import json
import time

from rtws_harness import *

FIELDS = {"type", "room", "user", "text", "id", "ts"}


async def _join(node, room, user):
    return await connect(node.port, room, token=mint(user))


async def _settled(r, room, n, what):
    ok, got = await wait_numsub(r, room, n, timeout=5.0)
    require(ok, f"{what}: PUBSUB NUMSUB room:{room} reaches {n} (one subscription per "
                f"node with members)", f"last value {got}")


def _ids(frames):
    return [m.get("id") for m in frames if isinstance(m, dict)]


async def test_two_nodes_fanout_exactly_once():
    with RedisServer() as redis:
        r = redis.client()
        with Cluster(redis.url, 2) as (a, b):
            lobby = {"alice@A": await _join(a, "lobby", "alice"),
                     "bob@A": await _join(a, "lobby", "bob"),
                     "carol@B": await _join(b, "lobby", "carol"),
                     "dave@B": await _join(b, "lobby", "dave")}
            xa = await _join(a, "other", "xavier")
            yb = await _join(b, "other", "yvonne")
            await _settled(r, "lobby", 2, "two nodes with lobby members")
            await _settled(r, "other", 2, "two nodes with members of another room")

            t0 = time.time()
            await lobby["alice@A"].send(json.dumps(
                {"type": "chat.message", "text": "from node A", "id": "m-a"}))
            await lobby["carol@B"].send(json.dumps(
                {"type": "chat.message", "text": "from node B", "id": "m-b"}))
            for name, ws in lobby.items():
                got = await recv_until(ws, lambda f: {"m-a", "m-b"} <= set(_ids(f)), 5,
                                       f"{name}'s deliveries of m-a and m-b")
                check_eq(sorted(_ids(got)), ["m-a", "m-b"],
                         f"{name} receives each node's message exactly once and nothing "
                         f"else (cross-node fan-out, sender included)")
                for msg in got:
                    check_eq(set(msg), FIELDS, f"a cross-node chat.delivery to {name} has "
                                               f"exactly type, room, user, text, id, ts")
                    want = {"m-a": ("alice", "from node A"), "m-b": ("carol", "from node B")}
                    user, text = want.get(msg.get("id"), (None, None))
                    check_eq((msg.get("type"), msg.get("room"), msg.get("user"),
                              msg.get("text")), ("chat.delivery", "lobby", user, text),
                             f"{name}: a delivery relayed through Redis keeps room, "
                             f"sender's user id and text")
                    ts = msg.get("ts")
                    check(isinstance(ts, float) and t0 - 2 <= ts <= time.time() + 2,
                          f"{name}: ts is Unix seconds with a fraction", repr(ts))

            # A second round from the same publishers: the next frames are exactly
            # these, so no late duplicate of the first round was queued behind.
            await lobby["alice@A"].send('{"type":"chat.message","text":"2","id":"m-a2"}')
            await lobby["carol@B"].send('{"type":"chat.message","text":"2","id":"m-b2"}')
            for name, ws in lobby.items():
                got = await recv_until(ws, lambda f: len(f) >= 2, 5,
                                       f"{name}'s second round")
                check_eq(sorted(_ids(got)), ["m-a2", "m-b2"],
                         f"{name} gets no duplicate of an earlier cross-node delivery")

            # The other room heard nothing of the lobby: xavier's own message is
            # the first frame both of its members see. Node A published the lobby
            # messages before it, on the same connection to Redis.
            await xa.send('{"type":"chat.message","text":"other","id":"o-1"}')
            for name, ws in (("xavier@A", xa), ("yvonne@B", yb)):
                msg = await recv_json(ws, 5, f"{name}'s delivery in room other")
                check_eq((msg.get("id"), msg.get("room")), ("o-1", "other"),
                         f"lobby messages do not leak into another room ({name})")
            for ws in list(lobby.values()) + [xa, yb]:
                await ws.close()


async def test_three_nodes_order_per_publisher():
    n = 100
    with RedisServer() as redis:
        r = redis.client()
        with Cluster(redis.url, 3) as nodes:
            clients = {}       # name -> ws; the first client on each node publishes
            for i, node in enumerate(nodes):
                for j in range(2):
                    name = f"u{i}{j}@{'ABC'[i]}"
                    clients[name] = await _join(node, "order", f"u{i}{j}")
            await _settled(r, "order", 3, "three nodes with members")
            publishers = [name for name in clients if name[2] == "0"]

            async def burst(name):
                ws = clients[name]
                for k in range(n):
                    await ws.send(json.dumps({"type": "chat.message", "text": f"{k}",
                                              "id": f"{name}-{k}"}))
            await asyncio.gather(*(burst(p) for p in publishers))

            for name, ws in clients.items():
                got = await recv_until(ws, lambda f: len(f) >= 3 * n, 15,
                                       f"{name}'s {3 * n} deliveries")
                check(all(m.get("type") == "chat.delivery" for m in got),
                      f"{name} receives only chat.delivery frames during three bursts",
                      repr([m for m in got if m.get("type") != "chat.delivery"][:3]))
                for p in publishers:
                    seq = [m.get("id") for m in got if m.get("user") == p.split("@")[0]]
                    check_eq(seq, [f"{p}-{k}" for k in range(n)],
                             f"{name} receives the {n} messages of publisher {p} exactly "
                             f"once and in publish order, across nodes")
            # Nothing after the bursts but the next message: no late duplicates.
            await clients[publishers[1]].send(
                '{"type":"chat.message","text":"fin","id":"fin"}')
            for name, ws in clients.items():
                msg = await recv_json(ws, 5, f"{name}'s final delivery")
                check_eq(msg.get("id"), "fin",
                         f"{name}: the frame after all bursts is the next message "
                         f"(no duplicate delivered late)")
            for ws in clients.values():
                await ws.close()


# Formatting a server would not produce (spaces, key order, "1.50", escapes,
# non-ASCII), so a payload that was parsed and re-serialised is caught.
EXTERNAL = ('{"type":"backend.notice", "n": 1.50, "text":"h\u00e9llo \u2713 \\u00e9 \U0001F600",'
            ' "esc":"a\\"b\\\\c\\n", "nested":{"z":[1,2,{"b":null}],"a":true}}')


async def test_external_publish_verbatim():
    with RedisServer() as redis:
        r = redis.client()
        with Cluster(redis.url, 3) as (a, b, c):
            news = {"a1@A": await _join(a, "news", "a1"), "a2@A": await _join(a, "news", "a2"),
                    "b1@B": await _join(b, "news", "b1"), "c1@C": await _join(c, "news", "c1")}
            sports = await _join(b, "sports", "s1")
            await _settled(r, "news", 3, "three nodes with news members")
            await _settled(r, "sports", 1, "one node with a sports member")

            receivers = r.publish("room:news", EXTERNAL)
            check_eq(receivers, 3, "a backend PUBLISH reaches one subscription per node "
                                   "(PUBLISH's receiver count)")
            for name, ws in news.items():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 5)
                except asyncio.TimeoutError:
                    raw = None
                check_eq(raw, EXTERNAL, f"{name} receives a backend's PUBLISH room:news "
                                        f"verbatim (same text, not re-serialised)")

            # A burst from the backend arrives in order, once; sports hears none.
            payloads = [json.dumps({"type": "backend.tick", "seq": k}) for k in range(30)]
            for p in payloads:
                r.publish("room:news", p)
            r.publish("room:sports", '{"type":"backend.score","v":1}')
            for name, ws in news.items():
                got = []
                for _ in payloads:
                    try:
                        got.append(await asyncio.wait_for(ws.recv(), 5))
                    except asyncio.TimeoutError:
                        break
                check_eq(got, payloads, f"{name} receives a backend's 30 publishes in "
                                        f"order, exactly once")
            msg = await recv_json(sports, 5, "sports member's first frame")
            check_eq(msg, {"type": "backend.score", "v": 1},
                     "a backend publish to room:news does not reach room sports; its own "
                     "publish does")
            # A client's chat.message and the backend share one stream per room.
            await news["c1@C"].send('{"type":"chat.message","text":"hi","id":"after"}')
            for name, ws in news.items():
                msg = await recv_json(ws, 5, f"{name}'s next frame")
                check_eq(msg.get("id"), "after", f"{name}: after the backend frames, the "
                                                  f"next frame is the next chat.delivery")
            for ws in list(news.values()) + [sports]:
                await ws.close()


# Payloads that are not one JSON object; none may reach a client.
NOT_OBJECTS = [
    b"not json", b"", b"[1,2,3]", b'"a string"', b"42", b"null", b"true",
    b'{"type":"cut"', b'{"type":"x"} trailing', b'{"type":"a"}{"type":"b"}',
    b"\xff\xfe", b'{"type":"bad utf8","t":"\xff"}',
]


async def test_non_json_publish_ignored():
    with RedisServer() as redis:
        r = redis.client(decode_responses=False)
        with Cluster(redis.url, 2) as (a, b):
            members = {"a1@A": await _join(a, "feed", "a1"),
                       "b1@B": await _join(b, "feed", "b1"),
                       "b2@B": await _join(b, "feed", "b2")}
            await _settled(redis.client(), "feed", 2, "two nodes with feed members")
            for bad in NOT_OBJECTS:
                r.publish("room:feed", bad)
            marker = '{"type":"backend.marker","after":"garbage"}'
            r.publish("room:feed", marker)
            for name, ws in members.items():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 5)
                except asyncio.TimeoutError:
                    raw = "<nothing within 5 s>"
                except websockets.exceptions.ConnectionClosed as e:
                    raw = f"<closed {e.code} {e.reason!r}>"
                check_eq(raw, marker, f"{name}: payloads that are not a JSON object "
                                      f"(text, arrays, scalars, cut or trailing text, "
                                      f"invalid UTF-8) are not forwarded; the valid object "
                                      f"published after them is the first frame")
            for name, node in (("A", a), ("B", b)):
                check(node.alive(), f"node {name} survives non-JSON payloads on a room "
                                    f"channel")
                line = await node.wait_log(r"(warn|error).*json", timeout=2)
                check(line is not None, f"node {name} logs (warn or error, naming JSON) that "
                                        f"it dropped payloads that are not a JSON object")
            for name, ws in members.items():
                await expect_silence_then(ws, f"after-{name}",
                                          f"{name} is still served after the garbage")
            for ws in members.values():
                await ws.close()


async def test_numsub_follows_membership_churn():
    with RedisServer() as redis:
        r = redis.client()
        with Cluster(redis.url, 3) as nodes:
            conns = {0: [], 1: [], 2: []}       # node index -> open websockets
            seq = [0]

            async def open_on(i, k):
                async def one():
                    seq[0] += 1
                    return await _join(nodes[i], "churn", f"c{seq[0]}")
                conns[i].extend(await asyncio.gather(*(one() for _ in range(k))))

            async def close_on(i, k):
                gone, conns[i][:] = conns[i][:k], conns[i][k:]
                await asyncio.gather(*(ws.close() for ws in gone))

            async def settled(step):
                want = sum(1 for i in conns if conns[i])
                # First every node with members must be subscribed: a probe
                # from one member reaches a member on every such node. A node
                # that just got its first member may miss a probe published
                # before its SUBSCRIBE reached Redis (and NUMSUB can pass
                # through the expected count while one node leaves and
                # another joins), so probes repeat until each has one.
                live = [(i, ws) for i in conns for ws in conns[i][:1]]
                pending = {i for i, _ in live}
                deadline = time.monotonic() + 5.0
                k = 0
                while pending and time.monotonic() < deadline:
                    k += 1
                    ref = f"probe-{step}-{k}"
                    await live[0][1].send(json.dumps({"type": "chat.message", "text": step,
                                                      "id": ref}))
                    for i, ws in live:
                        if i in pending:
                            try:
                                await recv_until(ws, lambda f: ref in _ids(f), 0.5, "probe")
                                pending.discard(i)
                            except Failure:
                                pass
                require(not pending, f"{step}: a member's message reaches every node with "
                                     f"members (each of them subscribed) within 5 s",
                        f"never reached node(s) {sorted('ABC'[i] for i in pending)}")
                # Then no node without members may keep its subscription.
                ok, got = await wait_numsub(r, "churn", want, timeout=5.0)
                check(ok, f"{step}: PUBSUB NUMSUB room:churn equals the number of nodes "
                          f"with members ({want}) once churn settles",
                      f"still {got} after 5 s; members per node "
                      f"{[len(conns[i]) for i in conns]}")

            check_eq(numsub(r, "churn"), 0, "no node subscribes to a room nobody joined")
            await open_on(0, 1)
            await settled("first member on A")
            await asyncio.gather(open_on(0, 4), open_on(1, 3))
            await settled("A and B with members")
            await asyncio.gather(close_on(0, 5), open_on(2, 2))
            await settled("A emptied while C joined")
            await close_on(1, 2)
            await settled("B down to one member (still subscribed)")

            # Rapid join/leave on A while B and C keep members: A must end up
            # unsubscribed whatever order SUBSCRIBE and UNSUBSCRIBE raced in.
            for k in range(15):
                await open_on(0, 1 + k % 3)
                await close_on(0, len(conns[0]))
            await settled("after 15 join/leave flaps on A")
            # Overlapping joins and leaves on all three nodes at once.
            await asyncio.gather(open_on(0, 3), close_on(1, 1), close_on(2, 1),
                                 open_on(1, 2))
            await asyncio.gather(close_on(0, 3), close_on(2, 1), open_on(0, 1))
            await settled("after overlapping joins and leaves on three nodes")

            for i in conns:
                await close_on(i, len(conns[i]))
            await settled("everyone left")
            chans = r.pubsub_channels("room:*")
            check_eq(chans, [], "after every member left, no node keeps any room:* "
                                "subscription")


if __name__ == "__main__":
    main([test_two_nodes_fanout_exactly_once, test_three_nodes_order_per_publisher,
          test_external_publish_verbatim, test_non_json_publish_ignored,
          test_numsub_follows_membership_churn],
         per_test_timeout=40, watchdog=58)
