import asyncio
import json
import logging
import unittest
import uuid
import base64
import hmac
import hashlib
from typing import List

import centrifuge.client
from centrifuge import (
    Client,
    ClientState,
    DeltaType,
    SubscriptionState,
    PublicationContext,
    SubscribedContext,
    DisconnectedContext,
    ConnectingContext,
    UnsubscribedContext,
    SubscribingContext,
    JoinContext,
    LeaveContext,
    ConnectedContext,
    ServerSubscribedContext,
    ServerPublicationContext,
    ServerJoinContext,
    DuplicateSubscriptionError,
    CentrifugeError,
    UnauthorizedError,
    StreamPosition,
)
from websockets.protocol import State

import centrifuge.protocol.client_pb2 as protocol_pb2

from tests.centrifugo import require_centrifugo
from tests.fake_server import FakeCentrifugoServer

logging.basicConfig(
    level=logging.INFO,
    format="%(asctime)s - %(message)s",
)
cf_logger = logging.getLogger("centrifuge")
cf_logger.setLevel(logging.DEBUG)


def setUpModule():
    # Most tests here talk to the Centrifugo from docker-compose.yml and wait
    # on futures without a timeout, so a missing server means a hang. Fail here
    # instead, with a message saying what to start.
    require_centrifugo()


def base64url_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def generate_jwt(user, channel=""):
    """Note, in tests we generate token on client-side - this is INSECURE
    and should not be used in production. Tokens must be generated on server-side."""
    hmac_secret = "secret"  # noqa: S105 - this is just a secret used in tests.
    header = {"typ": "JWT", "alg": "HS256"}
    payload = {"sub": user}
    if channel:
        payload["channel"] = channel
    encoded_header = base64url_encode(json.dumps(header).encode("utf-8"))
    encoded_payload = base64url_encode(json.dumps(payload).encode("utf-8"))
    signature_base = encoded_header + b"." + encoded_payload
    signature = hmac.new(hmac_secret.encode("utf-8"), signature_base, hashlib.sha256).digest()
    encoded_signature = base64url_encode(signature)
    jwt_token = encoded_header + b"." + encoded_payload + b"." + encoded_signature
    return jwt_token.decode("utf-8")


async def test_get_client_token() -> str:
    return generate_jwt("42")


async def test_get_subscription_token(channel) -> str:
    return generate_jwt("42", channel)


class TestClientConstruction(unittest.TestCase):
    """Deliberately not an async test case - there is no running loop here."""

    def test_client_can_be_created_outside_running_loop(self) -> None:
        # The common pattern is to create a Client at import time or in a sync
        # main() and only then call asyncio.run(). Since Python 3.14 asyncio
        # raises RuntimeError instead of implicitly creating a loop, the
        # constructor must not need one.
        client = Client("ws://localhost:8000/connection/websocket")
        self.assertEqual(client.state, ClientState.DISCONNECTED)

        async def use_it() -> None:
            self.assertIs(client._loop, asyncio.get_running_loop())
            self.assertFalse(client._connected_future.done())

        asyncio.run(use_it())


class TestClient(unittest.IsolatedAsyncioTestCase):
    async def test_client_connects_disconnects(self) -> None:
        for use_protobuf in (False, True):
            with self.subTest(use_protobuf=use_protobuf):
                client = Client(
                    "ws://localhost:8000/connection/websocket",
                    use_protobuf=use_protobuf,
                    get_token=test_get_client_token,
                )
                await client.connect()
                await client.ready()
                self.assertTrue(client.state == ClientState.CONNECTED)
                await client.disconnect()
                self.assertTrue(client.state == ClientState.DISCONNECTED)


class TestConnectDisconnectLoop(unittest.IsolatedAsyncioTestCase):
    async def test_connect_disconnect_loop(self) -> None:
        for use_protobuf in (False, True):
            with self.subTest(use_protobuf=use_protobuf):
                client = Client(
                    "ws://localhost:8000/connection/websocket",
                    use_protobuf=use_protobuf,
                    get_token=test_get_client_token,
                )
                for _ in range(3):
                    await client.connect()
                    await client.ready()
                    self.assertEqual(client.state, ClientState.CONNECTED)
                    await client.disconnect()
                    self.assertEqual(client.state, ClientState.DISCONNECTED)


class TestSubscription(unittest.IsolatedAsyncioTestCase):
    async def test_client_subscribe_unsubscribes(self) -> None:
        for use_protobuf in (False, True):
            with self.subTest(use_protobuf=use_protobuf):
                client = Client(
                    "ws://localhost:8000/connection/websocket",
                    use_protobuf=use_protobuf,
                    get_token=test_get_client_token,
                )
                sub = client.new_subscription("channel", get_token=test_get_subscription_token)
                await client.connect()
                await sub.subscribe()
                await sub.ready()
                self.assertTrue(sub.state == SubscriptionState.SUBSCRIBED)
                await sub.unsubscribe()
                self.assertTrue(sub.state == SubscriptionState.UNSUBSCRIBED)
                await client.disconnect()


class TestSubscribeUnsubscribeLoop(unittest.IsolatedAsyncioTestCase):
    async def test_subscribe_unsubscribe_loop(self) -> None:
        for use_protobuf in (False, True):
            with self.subTest(use_protobuf=use_protobuf):
                client = Client(
                    "ws://localhost:8000/connection/websocket",
                    use_protobuf=use_protobuf,
                    get_token=test_get_client_token,
                )
                channel = "sub_unsub_loop_channel" + uuid.uuid4().hex
                sub = client.new_subscription(channel, get_token=test_get_subscription_token)
                await client.connect()
                for _ in range(3):
                    await sub.subscribe()
                    await sub.ready()
                    self.assertEqual(sub.state, SubscriptionState.SUBSCRIBED)
                    await sub.unsubscribe()
                    self.assertEqual(sub.state, SubscriptionState.UNSUBSCRIBED)
                await client.disconnect()


class TestMultipleSubscriptions(unittest.IsolatedAsyncioTestCase):
    async def test_multiple_subscriptions(self) -> None:
        for use_protobuf in (False, True):
            with self.subTest(use_protobuf=use_protobuf):
                client = Client(
                    "ws://localhost:8000/connection/websocket",
                    use_protobuf=use_protobuf,
                    get_token=test_get_client_token,
                )
                subs = []
                for i in range(5):
                    channel = f"multi_sub_{i}_" + uuid.uuid4().hex
                    sub = client.new_subscription(channel, get_token=test_get_subscription_token)
                    subs.append(sub)

                await client.connect()
                for sub in subs:
                    await sub.subscribe()
                for sub in subs:
                    await sub.ready()
                    self.assertEqual(sub.state, SubscriptionState.SUBSCRIBED)

                self.assertEqual(len(client.subscriptions()), 5)

                for sub in subs:
                    await sub.unsubscribe()
                await client.disconnect()


class TestSubscriptionManagement(unittest.IsolatedAsyncioTestCase):
    async def test_get_subscription(self) -> None:
        client = Client(
            "ws://localhost:8000/connection/websocket",
            get_token=test_get_client_token,
        )
        channel = "get_sub_channel" + uuid.uuid4().hex
        sub = client.new_subscription(channel, get_token=test_get_subscription_token)
        self.assertIs(client.get_subscription(channel), sub)
        self.assertIsNone(client.get_subscription("nonexistent"))
        await client.disconnect()

    async def test_remove_subscription(self) -> None:
        client = Client(
            "ws://localhost:8000/connection/websocket",
            get_token=test_get_client_token,
        )
        channel = "remove_sub_channel" + uuid.uuid4().hex
        sub = client.new_subscription(channel, get_token=test_get_subscription_token)
        self.assertIsNotNone(client.get_subscription(channel))
        client.remove_subscription(sub)
        self.assertIsNone(client.get_subscription(channel))
        await client.disconnect()

    async def test_duplicate_subscription_raises(self) -> None:
        client = Client(
            "ws://localhost:8000/connection/websocket",
            get_token=test_get_client_token,
        )
        channel = "dup_sub_channel" + uuid.uuid4().hex
        client.new_subscription(channel, get_token=test_get_subscription_token)
        raised = False
        try:
            client.new_subscription(channel, get_token=test_get_subscription_token)
        except DuplicateSubscriptionError:
            raised = True
        self.assertTrue(raised)
        await client.disconnect()

    async def test_remove_subscribed_subscription_raises(self) -> None:
        client = Client(
            "ws://localhost:8000/connection/websocket",
            get_token=test_get_client_token,
        )
        channel = "remove_active_sub_" + uuid.uuid4().hex
        sub = client.new_subscription(channel, get_token=test_get_subscription_token)
        await client.connect()
        await sub.subscribe()
        await sub.ready()
        raised = False
        try:
            client.remove_subscription(sub)
        except CentrifugeError:
            raised = True
        self.assertTrue(raised)
        await sub.unsubscribe()
        client.remove_subscription(sub)
        self.assertIsNone(client.get_subscription(channel))
        await client.disconnect()


class TestSubscriptionOperations(unittest.IsolatedAsyncioTestCase):
    async def test_subscription_operations(self) -> None:
        for use_protobuf in (False, True):
            with self.subTest(use_protobuf=use_protobuf):
                client = Client(
                    "ws://localhost:8000/connection/websocket",
                    use_protobuf=use_protobuf,
                    get_token=test_get_client_token,
                )
                sub = client.new_subscription(
                    "channel" + uuid.uuid4().hex, get_token=test_get_subscription_token
                )
                await client.connect()
                await sub.subscribe()
                payload = {"input": "test"}
                if use_protobuf:
                    payload = json.dumps(payload).encode()
                await sub.publish(data=payload)
                result = await sub.history(limit=-1)
                self.assertTrue(result.offset > 0)
                self.assertTrue(result.epoch)
                self.assertTrue(len(result.publications) == 1)
                result = await sub.presence()
                self.assertTrue(len(result.clients) == 1)
                result = await sub.presence_stats()
                self.assertTrue(result.num_clients == 1)
                self.assertTrue(result.num_users == 1)
                await client.disconnect()


class TestClientLevelOperations(unittest.IsolatedAsyncioTestCase):
    async def test_client_publish_history_presence(self) -> None:
        for use_protobuf in (False, True):
            with self.subTest(use_protobuf=use_protobuf):
                client = Client(
                    "ws://localhost:8000/connection/websocket",
                    use_protobuf=use_protobuf,
                    get_token=test_get_client_token,
                )
                channel = "client_ops_channel" + uuid.uuid4().hex
                sub = client.new_subscription(channel, get_token=test_get_subscription_token)
                await client.connect()
                await sub.subscribe()
                await sub.ready()

                payload = {"input": "client level test"}
                if use_protobuf:
                    payload = json.dumps(payload).encode()

                await client.publish(channel, payload)

                result = await client.history(channel, limit=-1)
                self.assertEqual(len(result.publications), 1)
                self.assertEqual(result.publications[0].data, payload)
                self.assertTrue(result.offset > 0)
                self.assertTrue(result.epoch)

                result = await client.presence(channel)
                self.assertEqual(len(result.clients), 1)

                result = await client.presence_stats(channel)
                self.assertEqual(result.num_clients, 1)
                self.assertEqual(result.num_users, 1)

                await client.disconnect()


class TestHistoryPagination(unittest.IsolatedAsyncioTestCase):
    async def test_history_since_and_reverse(self) -> None:
        for use_protobuf in (False, True):
            with self.subTest(use_protobuf=use_protobuf):
                client = Client(
                    "ws://localhost:8000/connection/websocket",
                    use_protobuf=use_protobuf,
                    get_token=test_get_client_token,
                )
                channel = "history_pagination_" + uuid.uuid4().hex
                sub = client.new_subscription(channel, get_token=test_get_subscription_token)
                await client.connect()
                await sub.subscribe()

                num_messages = 5
                for i in range(num_messages):
                    payload = {"msg": i}
                    if use_protobuf:
                        payload = json.dumps(payload).encode()
                    await sub.publish(data=payload)

                # Get all history.
                result = await sub.history(limit=-1)
                self.assertEqual(len(result.publications), num_messages)

                # Get history with limit.
                result = await sub.history(limit=2)
                self.assertEqual(len(result.publications), 2)

                # Get history with since (pagination).
                first_page = await sub.history(limit=2)
                self.assertEqual(len(first_page.publications), 2)
                since = StreamPosition(
                    offset=first_page.publications[-1].offset,
                    epoch=first_page.epoch,
                )
                second_page = await sub.history(limit=2, since=since)
                self.assertEqual(len(second_page.publications), 2)
                # Ensure pages don't overlap.
                first_offsets = {p.offset for p in first_page.publications}
                second_offsets = {p.offset for p in second_page.publications}
                self.assertTrue(first_offsets.isdisjoint(second_offsets))

                # Get history in reverse order.
                result = await sub.history(limit=-1, reverse=True)
                self.assertEqual(len(result.publications), num_messages)
                offsets = [p.offset for p in result.publications]
                self.assertEqual(offsets, sorted(offsets, reverse=True))

                await client.disconnect()


class TestPubSub(unittest.IsolatedAsyncioTestCase):
    async def test_pub_sub(self) -> None:
        for use_protobuf in (False, True):
            for delta in (None, centrifuge.DeltaType.FOSSIL):
                with self.subTest(use_protobuf=use_protobuf, delta=delta):
                    await self._test_pub_sub(use_protobuf=use_protobuf, delta=delta)

    async def _test_pub_sub(self, use_protobuf=False, delta=None) -> None:
        client = Client(
            "ws://localhost:8000/connection/websocket",
            use_protobuf=use_protobuf,
            get_token=test_get_client_token,
        )

        future1 = asyncio.Future()
        future2 = asyncio.Future()
        future3 = asyncio.Future()

        async def on_publication(ctx: PublicationContext) -> None:
            if not future1.done():
                future1.set_result(ctx.pub.data)
            elif not future2.done():
                future2.set_result(ctx.pub.data)
            else:
                future3.set_result(ctx.pub.data)

        sub = client.new_subscription(
            "pub_sub_channel" + uuid.uuid4().hex,
            get_token=test_get_subscription_token,
            delta=delta,
        )
        sub.events.on_publication = on_publication

        await client.connect()
        await sub.subscribe()
        payload1 = {
            "input": "test message which is long enough for fossil "
            "delta to be applied on the server side."
        }
        if use_protobuf:
            payload1 = json.dumps(payload1).encode()

        await sub.publish(data=payload1)
        result = await future1
        self.assertEqual(result, payload1)

        # let's test fossil delta publishing the same.
        payload2 = payload1
        await sub.publish(data=payload2)
        result = await future2
        self.assertEqual(result, payload2)

        another_payload = {"input": "hello"}
        if use_protobuf:
            another_payload = json.dumps(another_payload).encode()

        await sub.publish(data=another_payload)
        result = await future3
        self.assertEqual(result, another_payload)

        await client.disconnect()


class TestJoinLeave(unittest.IsolatedAsyncioTestCase):
    async def test_join_leave(self) -> None:
        for use_protobuf in (False, True):
            with self.subTest(use_protobuf=use_protobuf):
                await self._test_join_leave(use_protobuf=use_protobuf)

    async def _test_join_leave(self, use_protobuf=False) -> None:
        client1 = Client(
            "ws://localhost:8000/connection/websocket",
            use_protobuf=use_protobuf,
            get_token=test_get_client_token,
        )

        client2 = Client(
            "ws://localhost:8000/connection/websocket",
            use_protobuf=use_protobuf,
            get_token=test_get_client_token,
        )

        join_future = asyncio.Future()
        leave_future = asyncio.Future()

        client_id = ""

        async def on_connected(ctx: ConnectedContext) -> None:
            nonlocal client_id
            client_id = ctx.client

        client1.events.on_connected = on_connected

        async def on_join(ctx: JoinContext) -> None:
            if ctx.info.client == client_id:
                # Ignore self join event.
                return
            join_future.set_result(ctx.info.client)

        async def on_leave(ctx: LeaveContext) -> None:
            leave_future.set_result(ctx.info.client)

        channel = "join_leave_channel" + uuid.uuid4().hex
        sub1 = client1.new_subscription(channel, get_token=test_get_subscription_token)
        sub2 = client2.new_subscription(channel, get_token=test_get_subscription_token)
        sub1.events.on_join = on_join
        sub1.events.on_leave = on_leave

        await client1.connect()
        await sub1.subscribe()
        await client2.connect()
        await sub2.subscribe()
        self.assertTrue(client_id)
        await join_future
        await sub2.unsubscribe()
        await leave_future
        await client1.disconnect()
        await client2.disconnect()


class TestPresenceTwoClients(unittest.IsolatedAsyncioTestCase):
    async def test_presence_two_clients(self) -> None:
        for use_protobuf in (False, True):
            with self.subTest(use_protobuf=use_protobuf):
                await self._test(use_protobuf=use_protobuf)

    async def _test(self, use_protobuf=False) -> None:
        client1 = Client(
            "ws://localhost:8000/connection/websocket",
            use_protobuf=use_protobuf,
            get_token=test_get_client_token,
        )
        client2 = Client(
            "ws://localhost:8000/connection/websocket",
            use_protobuf=use_protobuf,
            get_token=test_get_client_token,
        )

        client1_id = ""

        async def on_connected(ctx: ConnectedContext) -> None:
            nonlocal client1_id
            client1_id = ctx.client

        client1.events.on_connected = on_connected

        channel = "presence_two_" + uuid.uuid4().hex
        sub1 = client1.new_subscription(channel, get_token=test_get_subscription_token)
        sub2 = client2.new_subscription(channel, get_token=test_get_subscription_token)

        join_future = asyncio.Future()

        async def on_join(ctx: JoinContext) -> None:
            if ctx.info.client == client1_id:
                return
            if not join_future.done():
                join_future.set_result(True)

        sub1.events.on_join = on_join

        await client1.connect()
        await sub1.subscribe()
        await client2.connect()
        await sub2.subscribe()
        await join_future

        result = await sub1.presence()
        self.assertEqual(len(result.clients), 2)
        result = await sub1.presence_stats()
        self.assertEqual(result.num_clients, 2)

        await client1.disconnect()
        await client2.disconnect()


class TestAutoRecovery(unittest.IsolatedAsyncioTestCase):
    async def test_auto_recovery(self) -> None:
        for use_protobuf in (False, True):
            for delta in (None, DeltaType.FOSSIL):
                with self.subTest(use_protobuf=use_protobuf, delta=delta):
                    await self._test_auto_recovery(use_protobuf=use_protobuf, delta=delta)

    async def _test_auto_recovery(self, use_protobuf=False, delta=None) -> None:
        client1 = Client(
            "ws://localhost:8000/connection/websocket",
            use_protobuf=use_protobuf,
            get_token=test_get_client_token,
        )

        client2 = Client(
            "ws://localhost:8000/connection/websocket",
            use_protobuf=use_protobuf,
            get_token=test_get_client_token,
        )

        # First subscribe both clients to the same channel.
        channel = "recovery_channel" + uuid.uuid4().hex
        sub1 = client1.new_subscription(
            channel, get_token=test_get_subscription_token, delta=delta
        )
        sub2 = client2.new_subscription(
            channel, get_token=test_get_subscription_token, delta=delta
        )

        num_messages = 10

        futures: List[asyncio.Future] = [asyncio.Future() for _ in range(num_messages)]

        async def on_publication(ctx: PublicationContext) -> None:
            futures[ctx.pub.offset - 1].set_result(ctx.pub.data)

        async def on_subscribed(ctx: SubscribedContext) -> None:
            self.assertFalse(ctx.recovered)
            self.assertFalse(ctx.was_recovering)

        sub1.events.on_publication = on_publication
        sub1.events.on_subscribed = on_subscribed

        await client1.connect()
        await sub1.subscribe()
        await client2.connect()
        await sub2.subscribe()

        # Now disconnect client1 and publish some messages using client2.
        await client1.disconnect()

        payloads = []
        for i in range(num_messages):
            if i % 2 == 0:
                payload = {"input": "I just subscribed to channel " + str(i)}
            else:
                payload = {"input": "Hi from Java " + str(i)}
            if use_protobuf:
                payload = json.dumps(payload).encode()
            payloads.append(payload)
            await sub2.publish(data=payload)

        async def on_subscribed_after_recovery(ctx: SubscribedContext) -> None:
            self.assertTrue(ctx.recovered)
            self.assertTrue(ctx.was_recovering)

        sub1.events.on_subscribed = on_subscribed_after_recovery

        # Now reconnect client1 and check that it receives all missed messages.
        await client1.connect()
        results = await asyncio.gather(*futures)
        self.assertEqual(len(results), num_messages)
        for i, result in enumerate(results):
            self.assertEqual(result, payloads[i])
        await client1.disconnect()
        await client2.disconnect()


class TestRecoveryAfterUnsubscribeResubscribe(unittest.IsolatedAsyncioTestCase):
    async def test_recovery_after_unsub_resub(self) -> None:
        for use_protobuf in (False, True):
            with self.subTest(use_protobuf=use_protobuf):
                await self._test(use_protobuf=use_protobuf)

    async def _test(self, use_protobuf=False) -> None:
        client1 = Client(
            "ws://localhost:8000/connection/websocket",
            use_protobuf=use_protobuf,
            get_token=test_get_client_token,
        )
        client2 = Client(
            "ws://localhost:8000/connection/websocket",
            use_protobuf=use_protobuf,
            get_token=test_get_client_token,
        )

        channel = "recovery_unsub_" + uuid.uuid4().hex
        sub1 = client1.new_subscription(channel, get_token=test_get_subscription_token)
        sub2 = client2.new_subscription(channel, get_token=test_get_subscription_token)

        publications_received: List = []

        async def on_publication(ctx: PublicationContext) -> None:
            publications_received.append(ctx.pub.data)

        sub1.events.on_publication = on_publication

        await client1.connect()
        await sub1.subscribe()
        await sub1.ready()
        await client2.connect()
        await sub2.subscribe()

        # Publish first message.
        payload1 = {"msg": "before_unsub"}
        if use_protobuf:
            payload1 = json.dumps(payload1).encode()
        await sub2.publish(data=payload1)
        await asyncio.sleep(0.2)

        # Unsubscribe sub1, publish more messages, then resubscribe.
        await sub1.unsubscribe()
        payload2 = {"msg": "during_unsub"}
        if use_protobuf:
            payload2 = json.dumps(payload2).encode()
        await sub2.publish(data=payload2)

        recovered_future = asyncio.Future()

        async def on_subscribed(ctx: SubscribedContext) -> None:
            recovered_future.set_result(ctx.recovered)

        sub1.events.on_subscribed = on_subscribed

        await sub1.subscribe()
        recovered = await recovered_future
        self.assertTrue(recovered)
        # Wait a bit for recovered publications to be delivered.
        await asyncio.sleep(0.3)
        # Should have received the message published during unsubscribe.
        found = False
        for pub_data in publications_received:
            if pub_data == payload2:
                found = True
                break
        self.assertTrue(found, "Did not receive publication sent during unsubscribe")

        await client1.disconnect()
        await client2.disconnect()


class TestClientTokenInvalid(unittest.IsolatedAsyncioTestCase):
    async def test_client_token(self) -> None:
        for use_protobuf in (False, True):
            with self.subTest(use_protobuf=use_protobuf):
                await self._test_client_token(use_protobuf=use_protobuf)

    async def _test_client_token(self, use_protobuf=False) -> None:
        future = asyncio.Future()

        async def invalid_get_client_token() -> str:
            return "invalid_token"

        client = Client(
            "ws://localhost:8000/connection/websocket",
            use_protobuf=use_protobuf,
            get_token=invalid_get_client_token,
        )

        async def on_disconnected(ctx: DisconnectedContext) -> None:
            future.set_result(ctx.code)

        client.events.on_disconnected = on_disconnected

        await client.connect()
        res = await future
        self.assertTrue(res == 3500)
        self.assertTrue(client.state == ClientState.DISCONNECTED)
        await client.disconnect()


class TestClientTokenUnauthorized(unittest.IsolatedAsyncioTestCase):
    async def test_unauthorized_token(self) -> None:
        for use_protobuf in (False, True):
            with self.subTest(use_protobuf=use_protobuf):
                await self._test(use_protobuf=use_protobuf)

    async def _test(self, use_protobuf=False) -> None:
        future = asyncio.Future()

        async def unauthorized_get_token() -> str:
            raise UnauthorizedError

        client = Client(
            "ws://localhost:8000/connection/websocket",
            use_protobuf=use_protobuf,
            get_token=unauthorized_get_token,
        )

        async def on_disconnected(ctx: DisconnectedContext) -> None:
            if not future.done():
                future.set_result(ctx.code)

        client.events.on_disconnected = on_disconnected

        await client.connect()
        res = await future
        self.assertEqual(res, 1)
        self.assertEqual(client.state, ClientState.DISCONNECTED)
        await client.disconnect()


class TestSubscriptionTokenInvalid(unittest.IsolatedAsyncioTestCase):
    async def test_client_token(self) -> None:
        for use_protobuf in (False, True):
            with self.subTest(use_protobuf=use_protobuf):
                await self._test_subscription_token(use_protobuf=use_protobuf)

    async def _test_subscription_token(self, use_protobuf=False) -> None:
        future = asyncio.Future()

        async def invalid_get_subscription_token(channel: str) -> str:
            self.assertEqual(channel, "channel")
            return "invalid_token"

        client = Client(
            "ws://localhost:8000/connection/websocket",
            use_protobuf=use_protobuf,
            get_token=test_get_client_token,
        )

        sub = client.new_subscription("channel", get_token=invalid_get_subscription_token)

        async def on_unsubscribed(ctx: UnsubscribedContext) -> None:
            future.set_result(ctx.code)

        sub.events.on_unsubscribed = on_unsubscribed

        await client.connect()
        await sub.subscribe()
        res = await future
        self.assertTrue(res == 103, res)
        self.assertTrue(client.state == ClientState.CONNECTED)
        await client.disconnect()


class TestSubscriptionTokenUnauthorized(unittest.IsolatedAsyncioTestCase):
    async def test_unauthorized_subscription_token(self) -> None:
        for use_protobuf in (False, True):
            with self.subTest(use_protobuf=use_protobuf):
                await self._test(use_protobuf=use_protobuf)

    async def _test(self, use_protobuf=False) -> None:
        future = asyncio.Future()

        async def unauthorized_get_token(_channel: str) -> str:
            raise UnauthorizedError

        client = Client(
            "ws://localhost:8000/connection/websocket",
            use_protobuf=use_protobuf,
            get_token=test_get_client_token,
        )

        sub = client.new_subscription(
            "channel_unauth_" + uuid.uuid4().hex,
            get_token=unauthorized_get_token,
        )

        async def on_unsubscribed(ctx: UnsubscribedContext) -> None:
            if not future.done():
                future.set_result(ctx.code)

        sub.events.on_unsubscribed = on_unsubscribed

        await client.connect()
        await sub.subscribe()
        res = await future
        self.assertEqual(res, 1)
        self.assertEqual(sub.state, SubscriptionState.UNSUBSCRIBED)
        self.assertEqual(client.state, ClientState.CONNECTED)
        await client.disconnect()


class TestServerSideSubscriptions(unittest.IsolatedAsyncioTestCase):
    async def test_server_side_subs(self) -> None:
        for use_protobuf in (False, True):
            with self.subTest(use_protobuf=use_protobuf):
                await self._test_server_side_subs(use_protobuf=use_protobuf)

    async def _test_server_side_subs(self, use_protobuf=False) -> None:
        client = Client(
            "ws://localhost:8000/connection/websocket",
            use_protobuf=use_protobuf,
            get_token=test_get_client_token,
        )

        channel = "#42"

        payload = {"input": "test"}
        if use_protobuf:
            payload = json.dumps(payload).encode()

        subscribed_future = asyncio.Future()
        join_future = asyncio.Future()
        publication_future = asyncio.Future()

        async def on_subscribed(ctx: ServerSubscribedContext) -> None:
            subscribed_future.set_result(ctx.channel)

        async def on_join(ctx: ServerJoinContext) -> None:
            self.assertTrue(ctx.info.client)
            join_future.set_result(True)

        async def on_publication(ctx: ServerPublicationContext) -> None:
            self.assertTrue(ctx.pub.data == payload)
            publication_future.set_result(True)

        client.events.on_subscribed = on_subscribed
        client.events.on_join = on_join
        client.events.on_publication = on_publication

        await client.connect()
        ch = await subscribed_future
        self.assertEqual(ch, channel)
        await join_future
        await client.publish(channel, payload)
        await publication_future
        await client.disconnect()


class TestConnectedContext(unittest.IsolatedAsyncioTestCase):
    async def test_connected_context_has_client_and_version(self) -> None:
        for use_protobuf in (False, True):
            with self.subTest(use_protobuf=use_protobuf):
                await self._test(use_protobuf=use_protobuf)

    async def _test(self, use_protobuf=False) -> None:
        connected_future = asyncio.Future()

        client = Client(
            "ws://localhost:8000/connection/websocket",
            use_protobuf=use_protobuf,
            get_token=test_get_client_token,
        )

        async def on_connected(ctx: ConnectedContext) -> None:
            connected_future.set_result(ctx)

        client.events.on_connected = on_connected
        await client.connect()
        ctx = await connected_future
        self.assertTrue(ctx.client)
        self.assertTrue(ctx.version)
        await client.disconnect()


class TestConnectingDisconnectedCallbacks(unittest.IsolatedAsyncioTestCase):
    async def test_connecting_and_disconnected_callbacks(self) -> None:
        for use_protobuf in (False, True):
            with self.subTest(use_protobuf=use_protobuf):
                await self._test(use_protobuf=use_protobuf)

    async def _test(self, use_protobuf=False) -> None:
        connecting_future = asyncio.Future()
        disconnected_future = asyncio.Future()

        client = Client(
            "ws://localhost:8000/connection/websocket",
            use_protobuf=use_protobuf,
            get_token=test_get_client_token,
        )

        async def on_connecting(ctx: ConnectingContext) -> None:
            if not connecting_future.done():
                connecting_future.set_result(ctx)

        async def on_disconnected(ctx: DisconnectedContext) -> None:
            if not disconnected_future.done():
                disconnected_future.set_result(ctx)

        client.events.on_connecting = on_connecting
        client.events.on_disconnected = on_disconnected

        await client.connect()
        ctx = await connecting_future
        self.assertIsInstance(ctx.code, int)
        self.assertTrue(ctx.reason)

        await client.ready()
        await client.disconnect()
        ctx = await disconnected_future
        self.assertIsInstance(ctx.code, int)
        self.assertTrue(ctx.reason)


class TestSubscribingSubscribedCallbacks(unittest.IsolatedAsyncioTestCase):
    async def test_subscribing_and_subscribed_callbacks(self) -> None:
        for use_protobuf in (False, True):
            with self.subTest(use_protobuf=use_protobuf):
                await self._test(use_protobuf=use_protobuf)

    async def _test(self, use_protobuf=False) -> None:
        subscribing_future = asyncio.Future()
        subscribed_future = asyncio.Future()

        client = Client(
            "ws://localhost:8000/connection/websocket",
            use_protobuf=use_protobuf,
            get_token=test_get_client_token,
        )
        channel = "callbacks_" + uuid.uuid4().hex
        sub = client.new_subscription(channel, get_token=test_get_subscription_token)

        async def on_subscribing(ctx: SubscribingContext) -> None:
            if not subscribing_future.done():
                subscribing_future.set_result(ctx)

        async def on_subscribed(ctx: SubscribedContext) -> None:
            if not subscribed_future.done():
                subscribed_future.set_result(ctx)

        sub.events.on_subscribing = on_subscribing
        sub.events.on_subscribed = on_subscribed

        await client.connect()
        await sub.subscribe()

        ctx = await subscribing_future
        self.assertIsInstance(ctx.code, int)
        self.assertTrue(ctx.reason)

        ctx = await subscribed_future
        self.assertEqual(ctx.channel, channel)

        await client.disconnect()


class TestConnectionLeak(unittest.IsolatedAsyncioTestCase):
    async def test_concurrent_create_connection_leak(self) -> None:
        """Test that concurrent _create_connection() calls create multiple WebSocket connections.

        This test demonstrates the connection leak issue where _create_connection()
        can be called multiple times concurrently (e.g., from reconnect timers),
        resulting in multiple WebSocket connections without closing previous ones.
        """
        client = Client(
            "ws://localhost:8000/connection/websocket",
            get_token=test_get_client_token,
        )

        # Track all connection objects created
        original_connect = centrifuge.client.websockets.connect
        connections_created = []

        async def tracking_connect(*args, **kwargs):
            conn = await original_connect(*args, **kwargs)
            connections_created.append(conn)
            return conn

        # Monkey patch to track connections
        centrifuge.client.websockets.connect = tracking_connect

        try:
            # Set state to CONNECTING to bypass connect() protection
            client.state = centrifuge.client.ClientState.CONNECTING

            # Call _create_connection() multiple times concurrently
            # This simulates the race condition from multiple reconnect attempts
            await asyncio.gather(
                client._create_connection(),
                client._create_connection(),
                client._create_connection(),
            )

            # Wait a bit to ensure all connections are established
            await asyncio.sleep(0.5)

            # Count how many connections are still OPEN
            open_connections = [c for c in connections_created if c.state == State.OPEN]

            # There should only be ONE open connection, but the bug causes multiple
            # This SHOULD FAIL with the current code showing the leak
            self.assertEqual(
                len(open_connections),
                1,
                f"CONNECTION LEAK DETECTED: Expected 1 open connection but found "
                f"{len(open_connections)}. Total connections created: "
                f"{len(connections_created)}",
            )

            await client.disconnect()
        finally:
            # Restore original
            centrifuge.client.websockets.connect = original_connect

    async def test_create_connection_overwrites_without_closing(self) -> None:
        """Test that _create_connection() overwrites self._conn without closing the old one.

        This test directly demonstrates that calling _create_connection() twice
        will leak the first connection object.
        """
        client = Client(
            "ws://localhost:8000/connection/websocket",
            get_token=test_get_client_token,
        )

        # Track connections
        original_connect = centrifuge.client.websockets.connect
        connections_created = []

        async def tracking_connect(*args, **kwargs):
            conn = await original_connect(*args, **kwargs)
            connections_created.append(conn)
            return conn

        centrifuge.client.websockets.connect = tracking_connect

        try:
            # First connection via normal connect
            await client.connect()
            await client.ready()
            first_conn = client._conn

            # Verify first connection is open
            self.assertEqual(first_conn.state, State.OPEN)

            # Now force a second connection creation without disconnect
            # Simulate what happens in race condition scenarios
            client.state = centrifuge.client.ClientState.CONNECTING
            client._connected_future = asyncio.Future()  # Reset the future

            await client._create_connection()
            second_conn = client._conn

            # Verify we created 2 different connections
            self.assertIsNot(
                first_conn, second_conn, "Should have created two different connection objects"
            )

            # The bug: first connection is still OPEN because it was never closed
            # This assertion SHOULD FAIL, proving the leak
            self.assertNotEqual(
                first_conn.state,
                State.OPEN,
                "CONNECTION LEAK: First connection is still OPEN after being replaced! "
                "It should have been closed before creating the second connection.",
            )

            await client.disconnect()
        finally:
            centrifuge.client.websockets.connect = original_connect

    async def test_multiple_schedule_reconnect_timer_leak(self) -> None:
        """Test that multiple _schedule_reconnect() calls don't create orphaned timers.

        This test demonstrates the timer leak issue where calling _schedule_reconnect()
        multiple times before the timer fires creates orphaned timers that can trigger
        multiple reconnection attempts.
        """
        client = Client(
            "ws://localhost:8000/connection/websocket",
            get_token=test_get_client_token,
            min_reconnect_delay=1.0,  # Long delay to prevent timers from firing during test
        )

        # Track all timers created
        original_call_later = client._loop.call_later
        timers_created = []

        def tracking_call_later(delay, callback, *args):
            timer = original_call_later(delay, callback, *args)
            timers_created.append(timer)
            return timer

        client._loop.call_later = tracking_call_later

        try:
            # Set up client state to allow reconnect scheduling: only a connecting
            # client reconnects.
            client.state = centrifuge.client.ClientState.CONNECTING

            # Call _schedule_reconnect() multiple times rapidly
            await client._schedule_reconnect()
            await client._schedule_reconnect()
            await client._schedule_reconnect()

            # Count how many timers were created
            reconnect_timers = [t for t in timers_created if not t.cancelled()]

            # There should only be ONE active timer, but the bug creates multiple
            # This assertion SHOULD FAIL, proving the timer leak
            self.assertEqual(
                len(reconnect_timers),
                1,
                f"TIMER LEAK DETECTED: Expected 1 active reconnect timer but found "
                f"{len(reconnect_timers)}. Multiple _schedule_reconnect() calls created "
                f"orphaned timers that can cause concurrent reconnection attempts.",
            )

            # Clean up: cancel all timers
            for timer in timers_created:
                if not timer.cancelled():
                    timer.cancel()

        finally:
            client._loop.call_later = original_call_later

    async def test_refresh_timer_leak(self) -> None:
        """Test that setting _refresh_timer multiple times doesn't leak old timers.

        This test demonstrates the timer leak issue where creating a new refresh timer
        without canceling the old one causes orphaned timers.
        """
        client = Client(
            "ws://localhost:8000/connection/websocket",
            get_token=test_get_client_token,
        )

        # Track all timers created
        original_call_later = client._loop.call_later
        timers_created = []

        def tracking_call_later(delay, callback, *args):
            timer = original_call_later(delay, callback, *args)
            timers_created.append(timer)
            return timer

        client._loop.call_later = tracking_call_later

        try:
            await client.connect()
            await client.ready()

            # Count timers created during initial connection (may include ping timer)
            initial_timer_count = len(timers_created)

            # Simulate multiple refresh timer creations using the same pattern as the code
            # This mimics what happens if server sends multiple refresh responses
            for _ in range(3):
                # Cancel existing refresh timer to prevent timer leaks (this is the fix)
                if client._refresh_timer:
                    client._refresh_timer.cancel()
                client._refresh_timer = client._loop.call_later(
                    10.0,
                    lambda: asyncio.ensure_future(client._refresh(), loop=client._loop),
                )

            # Count new refresh timers created
            new_timers = [t for t in timers_created[initial_timer_count:] if not t.cancelled()]

            # There should only be ONE active refresh timer
            # This assertion SHOULD FAIL, proving the timer leak
            self.assertEqual(
                len(new_timers),
                1,
                f"REFRESH TIMER LEAK DETECTED: Expected 1 active refresh timer but found "
                f"{len(new_timers)}. Multiple refresh timer assignments created orphaned "
                f"timers.",
            )

            # Clean up
            for timer in timers_created:
                if not timer.cancelled():
                    timer.cancel()

            await client.disconnect()
        finally:
            client._loop.call_later = original_call_later

    async def test_background_tasks_tracked(self) -> None:
        """Test that _listen and _process_messages tasks are properly tracked and canceled.

        This test verifies that background tasks created during connection are stored
        and can be canceled when needed, preventing task leaks during reconnection.
        """
        client = Client(
            "ws://localhost:8000/connection/websocket",
            get_token=test_get_client_token,
        )

        try:
            await client.connect()
            await client.ready()

            # After connection, should have background tasks
            self.assertIsNotNone(
                getattr(client, "_listen_task", None), "Client should track _listen_task"
            )
            self.assertIsNotNone(
                getattr(client, "_process_messages_task", None),
                "Client should track _process_messages_task",
            )

            # Tasks should not be done yet
            if hasattr(client, "_listen_task"):
                self.assertFalse(
                    client._listen_task.done(), "_listen_task should still be running"
                )
            if hasattr(client, "_process_messages_task"):
                self.assertFalse(
                    client._process_messages_task.done(),
                    "_process_messages_task should still be running",
                )

            await client.disconnect()

            # After disconnect, tasks should be done or canceled
            if hasattr(client, "_listen_task") and client._listen_task:
                await asyncio.sleep(0.1)  # Give tasks time to finish
                self.assertTrue(
                    client._listen_task.done() or client._listen_task.cancelled(),
                    "_listen_task should be done or canceled after disconnect",
                )

        finally:
            if client.state != centrifuge.client.ClientState.DISCONNECTED:
                await client.disconnect()

    async def test_subscription_resubscribe_timer_leak(self) -> None:
        """Test that multiple _schedule_resubscribe() calls don't create orphaned timers.

        This test demonstrates the timer leak issue where calling _schedule_resubscribe()
        multiple times before the timer fires creates orphaned timers.
        """
        client = Client(
            "ws://localhost:8000/connection/websocket",
            get_token=test_get_client_token,
        )

        sub = client.new_subscription(
            "test_channel",
            get_token=test_get_subscription_token,
            min_resubscribe_delay=1.0,  # Long delay to prevent timers from firing
        )

        # Track all timers created
        original_call_later = client._loop.call_later
        timers_created = []

        def tracking_call_later(delay, callback, *args):
            timer = original_call_later(delay, callback, *args)
            timers_created.append(timer)
            return timer

        client._loop.call_later = tracking_call_later

        try:
            await client.connect()
            await sub.subscribe()

            # Set subscription to subscribing state
            sub.state = centrifuge.SubscriptionState.SUBSCRIBING

            # Track initial timer count
            initial_count = len(timers_created)

            # Call _schedule_resubscribe() multiple times
            await sub._schedule_resubscribe()
            await sub._schedule_resubscribe()
            await sub._schedule_resubscribe()

            # Count new timers
            new_timers = [t for t in timers_created[initial_count:] if not t.cancelled()]

            # Should only have ONE active resubscribe timer
            self.assertEqual(
                len(new_timers),
                1,
                f"RESUBSCRIBE TIMER LEAK DETECTED: Expected 1 active resubscribe timer but "
                f"found {len(new_timers)}. Multiple _schedule_resubscribe() calls created "
                f"orphaned timers.",
            )

            # Clean up
            for timer in timers_created:
                if not timer.cancelled():
                    timer.cancel()

            await client.disconnect()
        finally:
            client._loop.call_later = original_call_later


class TestProcessDisconnectReconnectFlag(unittest.IsolatedAsyncioTestCase):  # noqa: PLR0904
    """Unit tests for the reconnect flag logic in Client._process_disconnect.

    Centrifugo protocol reconnect rules:
    - Codes 3000-3499  -> reconnect
    - Codes 3500-3999  -> do NOT reconnect
    - Codes 4000-4499  -> reconnect
    - Codes 4500-4999  -> do NOT reconnect
    - Codes < 3000     -> reconnect
    - Codes >= 5000    -> reconnect
    """

    @classmethod
    def _make_client(cls):
        return Client(
            "ws://localhost:8000/connection/websocket",
            get_token=test_get_client_token,
        )

    async def _call_process_disconnect(self, code: int):
        """Call _process_disconnect with a given code, intercepting the _disconnect call.

        Returns the reconnect flag value that was passed to _disconnect.
        """
        client = self._make_client()
        captured = {}

        async def fake_disconnect(c, reason, reconnect):  # noqa: ARG001
            captured["code"] = c
            captured["reconnect"] = reconnect

        client._disconnect = fake_disconnect
        await client._process_disconnect({"code": code, "reason": "test"})
        return captured["reconnect"]

    # --- No-reconnect codes (3500-3999) ---

    async def test_code_3500_does_not_reconnect(self):
        reconnect = await self._call_process_disconnect(3500)
        self.assertFalse(reconnect, "code 3500 should NOT trigger reconnect")

    async def test_code_3999_does_not_reconnect(self):
        reconnect = await self._call_process_disconnect(3999)
        self.assertFalse(reconnect, "code 3999 should NOT trigger reconnect")

    async def test_code_3750_does_not_reconnect(self):
        reconnect = await self._call_process_disconnect(3750)
        self.assertFalse(
            reconnect, "code 3750 (mid no-reconnect range) should NOT trigger reconnect"
        )

    # --- No-reconnect codes (4500-4999) ---

    async def test_code_4500_does_not_reconnect(self):
        reconnect = await self._call_process_disconnect(4500)
        self.assertFalse(reconnect, "code 4500 should NOT trigger reconnect")

    async def test_code_4999_does_not_reconnect(self):
        reconnect = await self._call_process_disconnect(4999)
        self.assertFalse(reconnect, "code 4999 should NOT trigger reconnect")

    async def test_code_4750_does_not_reconnect(self):
        reconnect = await self._call_process_disconnect(4750)
        self.assertFalse(
            reconnect, "code 4750 (mid no-reconnect range) should NOT trigger reconnect"
        )

    # --- Reconnect codes (3000-3499) ---

    async def test_code_3000_reconnects(self):
        reconnect = await self._call_process_disconnect(3000)
        self.assertTrue(reconnect, "code 3000 should trigger reconnect")

    async def test_code_3499_reconnects(self):
        reconnect = await self._call_process_disconnect(3499)
        self.assertTrue(reconnect, "code 3499 should trigger reconnect")

    async def test_code_3250_reconnects(self):
        reconnect = await self._call_process_disconnect(3250)
        self.assertTrue(reconnect, "code 3250 (mid reconnect range) should trigger reconnect")

    # --- Reconnect codes (4000-4499) ---

    async def test_code_4000_reconnects(self):
        reconnect = await self._call_process_disconnect(4000)
        self.assertTrue(reconnect, "code 4000 should trigger reconnect")

    async def test_code_4499_reconnects(self):
        reconnect = await self._call_process_disconnect(4499)
        self.assertTrue(reconnect, "code 4499 should trigger reconnect")

    async def test_code_4250_reconnects(self):
        reconnect = await self._call_process_disconnect(4250)
        self.assertTrue(reconnect, "code 4250 (mid reconnect range) should trigger reconnect")

    # --- Reconnect codes >= 5000 ---

    async def test_code_5000_reconnects(self):
        reconnect = await self._call_process_disconnect(5000)
        self.assertTrue(reconnect, "code 5000 should trigger reconnect")

    async def test_code_9999_reconnects(self):
        reconnect = await self._call_process_disconnect(9999)
        self.assertTrue(reconnect, "code 9999 (well above 5000) should trigger reconnect")

    # --- Reconnect codes < 3000 ---

    async def test_code_1000_reconnects(self):
        reconnect = await self._call_process_disconnect(1000)
        self.assertTrue(reconnect, "code 1000 (< 3000) should trigger reconnect")

    async def test_code_0_reconnects(self):
        reconnect = await self._call_process_disconnect(0)
        self.assertTrue(reconnect, "code 0 (< 3000) should trigger reconnect")

    async def test_code_2999_reconnects(self):
        reconnect = await self._call_process_disconnect(2999)
        self.assertTrue(reconnect, "code 2999 (just below 3000 boundary) should trigger reconnect")

    # --- Boundary values ---

    async def test_boundary_3499_reconnects_3500_does_not(self):
        """3499 is the last reconnect code; 3500 is the first no-reconnect code."""
        reconnect_3499 = await self._call_process_disconnect(3499)
        reconnect_3500 = await self._call_process_disconnect(3500)
        self.assertTrue(reconnect_3499, "code 3499 should trigger reconnect")
        self.assertFalse(reconnect_3500, "code 3500 should NOT trigger reconnect")

    async def test_boundary_3999_does_not_4000_reconnects(self):
        """3999 is the last no-reconnect code; 4000 is the first reconnect code in that gap."""
        reconnect_3999 = await self._call_process_disconnect(3999)
        reconnect_4000 = await self._call_process_disconnect(4000)
        self.assertFalse(reconnect_3999, "code 3999 should NOT trigger reconnect")
        self.assertTrue(reconnect_4000, "code 4000 should trigger reconnect")

    async def test_boundary_4499_reconnects_4500_does_not(self):
        """4499 is the last reconnect code; 4500 is the first no-reconnect code in that range."""
        reconnect_4499 = await self._call_process_disconnect(4499)
        reconnect_4500 = await self._call_process_disconnect(4500)
        self.assertTrue(reconnect_4499, "code 4499 should trigger reconnect")
        self.assertFalse(reconnect_4500, "code 4500 should NOT trigger reconnect")

    async def test_boundary_4999_does_not_5000_reconnects(self):
        """
        4999 is the last no-reconnect code; 5000 is the first reconnect code above that range.
        """
        reconnect_4999 = await self._call_process_disconnect(4999)
        reconnect_5000 = await self._call_process_disconnect(5000)
        self.assertFalse(reconnect_4999, "code 4999 should NOT trigger reconnect")
        self.assertTrue(reconnect_5000, "code 5000 should trigger reconnect")


class TestGetState(unittest.IsolatedAsyncioTestCase):
    """Tests for the get_state callback (stream state loading with recovery).

    These mirror the getState tests in centrifuge-js / -dart / -go / -java and
    require the docker-compose Centrifugo (>= 6.8.0) running on localhost:8000.
    """

    @staticmethod
    def _new_client(use_protobuf=False) -> Client:
        return Client(
            "ws://localhost:8000/connection/websocket",
            use_protobuf=use_protobuf,
            get_token=test_get_client_token,
        )

    @staticmethod
    def _payload(i, use_protobuf=False):
        payload = {"i": i}
        if use_protobuf:
            payload = json.dumps(payload).encode()
        return payload

    async def test_get_state_called_on_initial_subscribe(self) -> None:
        for use_protobuf in (False, True):
            with self.subTest(use_protobuf=use_protobuf):
                await self._test_get_state_called_on_initial_subscribe(use_protobuf)

    async def _test_get_state_called_on_initial_subscribe(self, use_protobuf) -> None:
        channel = "get_state_channel" + uuid.uuid4().hex

        # Publish 3 messages BEFORE subscribing (publisher must be subscribed
        # to be allowed to publish).
        publisher = self._new_client(use_protobuf=use_protobuf)
        publisher_sub = publisher.new_subscription(channel, get_token=test_get_subscription_token)
        await publisher.connect()
        await publisher_sub.subscribe()
        for i in range(1, 4):
            await publisher_sub.publish(data=self._payload(i, use_protobuf))

        client = self._new_client(use_protobuf=use_protobuf)

        get_state_calls = 0

        async def get_state(_channel: str) -> StreamPosition:
            nonlocal get_state_calls
            get_state_calls += 1
            # Zero position — recovery delivers all 3 publications.
            return StreamPosition(offset=0, epoch="")

        subscribed_future = asyncio.Future()
        pubs_queue = asyncio.Queue()

        async def on_subscribed(ctx: SubscribedContext) -> None:
            if not subscribed_future.done():
                subscribed_future.set_result(ctx)

        async def on_publication(ctx: PublicationContext) -> None:
            await pubs_queue.put(ctx.pub.data)

        sub = client.new_subscription(
            channel,
            get_token=test_get_subscription_token,
            get_state=get_state,
        )
        sub.events.on_subscribed = on_subscribed
        sub.events.on_publication = on_publication

        await client.connect()
        await sub.subscribe()
        await asyncio.wait_for(subscribed_future, timeout=5)

        for i in range(1, 4):
            data = await asyncio.wait_for(pubs_queue.get(), timeout=5)
            self.assertEqual(data, self._payload(i, use_protobuf))
        self.assertEqual(get_state_calls, 1)

        await client.disconnect()
        await publisher.disconnect()

    async def test_get_state_not_called_when_recovery_succeeds(self) -> None:
        channel = "get_state_channel" + uuid.uuid4().hex

        publisher = self._new_client()
        publisher_sub = publisher.new_subscription(channel, get_token=test_get_subscription_token)
        await publisher.connect()
        await publisher_sub.subscribe()

        client = self._new_client()

        get_state_calls = 0

        async def get_state(_channel: str) -> StreamPosition:
            nonlocal get_state_calls
            get_state_calls += 1
            return StreamPosition(offset=0, epoch="")

        subscribed_queue = asyncio.Queue()
        pubs_queue = asyncio.Queue()

        async def on_subscribed(ctx: SubscribedContext) -> None:
            await subscribed_queue.put(ctx)

        async def on_publication(ctx: PublicationContext) -> None:
            await pubs_queue.put(ctx.pub.data)

        sub = client.new_subscription(
            channel,
            get_token=test_get_subscription_token,
            get_state=get_state,
        )
        sub.events.on_subscribed = on_subscribed
        sub.events.on_publication = on_publication

        await client.connect()
        await sub.subscribe()
        await asyncio.wait_for(subscribed_queue.get(), timeout=5)
        self.assertEqual(get_state_calls, 1)

        # Disconnect, publish while away, reconnect — SDK has a saved position
        # and recovery succeeds, so get_state must NOT be called again.
        await client.disconnect()
        await publisher_sub.publish(data=self._payload(1))
        await publisher_sub.publish(data=self._payload(2))
        await client.connect()

        resub_ctx = await asyncio.wait_for(subscribed_queue.get(), timeout=5)
        self.assertTrue(resub_ctx.recovered)
        for i in range(1, 3):
            data = await asyncio.wait_for(pubs_queue.get(), timeout=5)
            self.assertEqual(data, self._payload(i))
        self.assertEqual(get_state_calls, 1)

        await client.disconnect()
        await publisher.disconnect()

    async def test_get_state_error_retried(self) -> None:
        channel = "get_state_channel" + uuid.uuid4().hex
        client = self._new_client()

        get_state_calls = 0

        async def get_state(_channel: str) -> StreamPosition:
            nonlocal get_state_calls
            get_state_calls += 1
            if get_state_calls == 1:
                raise Exception("simulated DB failure")
            return StreamPosition(offset=0, epoch="")

        subscribed_future = asyncio.Future()
        errors_queue = asyncio.Queue()

        async def on_subscribed(ctx: SubscribedContext) -> None:
            if not subscribed_future.done():
                subscribed_future.set_result(ctx)

        async def on_error(ctx) -> None:
            await errors_queue.put(ctx)

        sub = client.new_subscription(
            channel,
            get_token=test_get_subscription_token,
            get_state=get_state,
            min_resubscribe_delay=0.05,
            max_resubscribe_delay=0.05,
        )
        sub.events.on_subscribed = on_subscribed
        sub.events.on_error = on_error

        await client.connect()
        await sub.subscribe()

        # First get_state fails -> error emitted -> resubscribe scheduled with
        # backoff. Second get_state succeeds -> subscribe completes.
        await asyncio.wait_for(subscribed_future, timeout=5)
        self.assertGreaterEqual(get_state_calls, 2)

        err_ctx = await asyncio.wait_for(errors_queue.get(), timeout=5)
        self.assertEqual(
            err_ctx.code,
            centrifuge.codes._ErrorCode.SUBSCRIPTION_GET_STATE.value,
        )
        self.assertIn("simulated DB failure", str(err_ctx.error))

        await client.disconnect()

    async def test_get_state_persistent_failure_keeps_retrying(self) -> None:
        channel = "get_state_channel" + uuid.uuid4().hex
        client = self._new_client()

        get_state_calls = 0

        async def get_state(_channel: str) -> StreamPosition:
            nonlocal get_state_calls
            get_state_calls += 1
            raise Exception("always fails")

        sub = client.new_subscription(
            channel,
            get_token=test_get_subscription_token,
            get_state=get_state,
            min_resubscribe_delay=0.05,
            max_resubscribe_delay=0.05,
        )

        await client.connect()
        await sub.subscribe()

        # Wait for several retry cycles.
        await asyncio.sleep(0.5)

        # Should have retried multiple times while staying in subscribing state.
        self.assertGreater(get_state_calls, 2)
        self.assertEqual(sub.state, SubscriptionState.SUBSCRIBING)

        await sub.unsubscribe()
        await client.disconnect()

    async def test_get_state_called_again_on_unrecoverable_position(self) -> None:
        # Uses "smallhistory" namespace with history_size=2. After publishing
        # enough to evict old entries, reconnecting from an old position triggers
        # error 112 (unrecoverable position) because the subscribe request carries
        # the reject_unrecovered flag. The SDK must then call get_state again to
        # reload app state instead of delivering recovered=false on an active
        # subscription.
        channel = "smallhistory:get_state_" + uuid.uuid4().hex

        # Publisher stays subscribed: used both to publish and to read the
        # current stream top position via history (as the app's backend would).
        publisher = self._new_client()
        publisher_sub = publisher.new_subscription(channel, get_token=test_get_subscription_token)
        await publisher.connect()
        await publisher_sub.subscribe()

        client = self._new_client()

        get_state_calls = 0

        async def get_state(_channel: str) -> StreamPosition:
            nonlocal get_state_calls
            get_state_calls += 1
            result = await publisher_sub.history(limit=0)
            return StreamPosition(offset=result.offset, epoch=result.epoch)

        subscribed_queue = asyncio.Queue()
        pubs_queue = asyncio.Queue()

        async def on_subscribed(ctx: SubscribedContext) -> None:
            await subscribed_queue.put(ctx)

        async def on_publication(ctx: PublicationContext) -> None:
            await pubs_queue.put(ctx.pub.data)

        sub = client.new_subscription(
            channel,
            get_token=test_get_subscription_token,
            get_state=get_state,
            min_resubscribe_delay=0.05,
            max_resubscribe_delay=0.05,
        )
        sub.events.on_subscribed = on_subscribed
        sub.events.on_publication = on_publication

        await client.connect()
        await sub.subscribe()
        await asyncio.wait_for(subscribed_queue.get(), timeout=5)
        self.assertEqual(get_state_calls, 1)

        # Disconnect, then publish enough messages to push the stream beyond
        # recovery (history_size=2, so 5 messages evict old entries).
        await client.disconnect()
        for i in range(1, 6):
            await publisher_sub.publish(data=self._payload(i))

        # Reconnect — SDK tries to recover from the old position, server returns
        # error 112, SDK resets position and calls get_state again.
        await client.connect()
        await asyncio.wait_for(subscribed_queue.get(), timeout=5)
        self.assertEqual(get_state_calls, 2)

        # Verify live delivery works after the re-sync.
        await publisher_sub.publish(data={"live": True})
        data = await asyncio.wait_for(pubs_queue.get(), timeout=5)
        self.assertEqual(data, {"live": True})

        await client.disconnect()
        await publisher.disconnect()


class TestChannelCompaction(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.channel_id = 42
        self.server = FakeCentrifugoServer()
        # Negotiate channel compaction: assign a numeric channel id whenever the
        # client offers the channelCompaction flag (bit 1).
        self.server.on_subscribe = lambda _channel, req: protocol_pb2.SubscribeResult(
            id=self.channel_id if req.flag & 1 else 0
        )
        await self.server.start()

    async def asyncTearDown(self):
        await self.server.stop()

    def _make_client(self):
        return Client(
            self.server.url,
            use_protobuf=True,
            min_reconnect_delay=0.05,
            max_reconnect_delay=0.2,
        )

    async def test_flag_offered_and_pushes_routed_by_id(self):
        client = self._make_client()
        subscribed = asyncio.Future()
        pubs = asyncio.Queue()
        joins = asyncio.Queue()
        leaves = asyncio.Queue()
        sub = client.new_subscription("compacted")

        async def on_subscribed(ctx):
            if not subscribed.done():
                subscribed.set_result(ctx)

        sub.events.on_subscribed = on_subscribed
        sub.events.on_publication = lambda ctx: pubs.put(ctx.pub.data)
        sub.events.on_join = lambda ctx: joins.put(ctx.info.client)
        sub.events.on_leave = lambda ctx: leaves.put(ctx.info.client)

        await client.connect()
        await sub.subscribe()
        await asyncio.wait_for(subscribed, timeout=5)

        self.assertEqual(self.server.last_subscribe().flag & 1, 1)

        await self.server.publish(b'{"compacted":true}', channel_id=42)
        self.assertEqual(await asyncio.wait_for(pubs.get(), timeout=5), b'{"compacted":true}')

        await self.server.join("joiner", channel_id=42)
        self.assertEqual(await asyncio.wait_for(joins.get(), timeout=5), "joiner")

        await self.server.leave("leaver", channel_id=42)
        self.assertEqual(await asyncio.wait_for(leaves.get(), timeout=5), "leaver")

        await client.disconnect()

    async def test_unknown_id_dropped(self):
        client = self._make_client()
        subscribed = asyncio.Future()
        pubs = asyncio.Queue()
        sub = client.new_subscription("compacted")

        async def on_subscribed(ctx):
            if not subscribed.done():
                subscribed.set_result(ctx)

        sub.events.on_subscribed = on_subscribed
        sub.events.on_publication = lambda ctx: pubs.put(ctx.pub.data)

        await client.connect()
        await sub.subscribe()
        await asyncio.wait_for(subscribed, timeout=5)

        await self.server.publish(b'{"stray":true}', channel_id=99)  # unknown id, dropped
        await self.server.publish(b'{"ok":true}', channel_id=42)  # known id

        self.assertEqual(await asyncio.wait_for(pubs.get(), timeout=5), b'{"ok":true}')
        self.assertTrue(pubs.empty())

        await client.disconnect()

    async def test_id_dropped_on_unsubscribe_refreshed_on_resubscribe(self):
        client = self._make_client()
        subscribed_queue = asyncio.Queue()
        unsub_queue = asyncio.Queue()
        pubs = asyncio.Queue()
        sub = client.new_subscription("compacted")
        sub.events.on_subscribed = subscribed_queue.put
        sub.events.on_unsubscribed = unsub_queue.put
        sub.events.on_publication = lambda ctx: pubs.put(ctx.pub.data)

        await client.connect()
        await sub.subscribe()
        await asyncio.wait_for(subscribed_queue.get(), timeout=5)

        await sub.unsubscribe()
        await asyncio.wait_for(unsub_queue.get(), timeout=5)

        # Old ID must no longer route to the unsubscribed subscription.
        await self.server.publish(b'{"stale":true}', channel_id=42)

        # Resubscribe — the server assigns a fresh ID.
        self.channel_id = 43
        await sub.subscribe()
        await asyncio.wait_for(subscribed_queue.get(), timeout=5)

        await self.server.publish(b'{"fresh":true}', channel_id=43)
        self.assertEqual(await asyncio.wait_for(pubs.get(), timeout=5), b'{"fresh":true}')
        self.assertTrue(pubs.empty())

        await client.disconnect()

    async def test_same_id_re_registered_after_reconnect(self):
        # Regression guard (found in the dart port): the client drops the ID
        # registry on teardown (IDs are server-session-scoped), and on reconnect
        # the server commonly assigns the SAME ID again. The subscription must
        # re-register it even though its own remembered ID is unchanged.
        client = self._make_client()
        subscribed_queue = asyncio.Queue()
        pubs = asyncio.Queue()
        sub = client.new_subscription("compacted")
        sub.events.on_subscribed = subscribed_queue.put
        sub.events.on_publication = lambda ctx: pubs.put(ctx.pub.data)

        await client.connect()
        await sub.subscribe()
        await asyncio.wait_for(subscribed_queue.get(), timeout=5)

        await client.disconnect()
        await client.connect()
        # Subscription auto-resubscribes on reconnect — same ID 42 as before.
        await asyncio.wait_for(subscribed_queue.get(), timeout=5)

        await self.server.publish(b'{"after_reconnect":true}', channel_id=42)
        result = await asyncio.wait_for(pubs.get(), timeout=5)
        self.assertEqual(result, b'{"after_reconnect":true}')

        await client.disconnect()
