"""The floor of websocket fan-out in Python: a bare `websockets` broadcaster, no Django, no channel layer.

    python bench/bare.py PORT [--uvloop]

Every client is in one group; a text frame `{"message": m}` from any client goes to all of them as the
app's frame `{"type": "message", "service", "message", "seq", "ts", "source"}`, encoded once per message
(the app numbers `seq` per connection and encodes per connection; the floor does the least work that
delivers the same bytes' worth). No compression (the generator does not offer it), pings every 20 s
like daphne's. Listens on 127.0.0.1 only.
"""

import asyncio
import json
import sys
from datetime import datetime, timezone

from websockets.asyncio.server import broadcast, serve

CLIENTS = set()


async def handler(websocket):
    CLIENTS.add(websocket)
    seq = 0
    try:
        async for text in websocket:
            seq += 1
            message = json.loads(text)["message"]
            frame = {
                "type": "message",
                "service": "bench",
                "message": message,
                "seq": seq,
                "ts": datetime.now(timezone.utc).isoformat(),
                "source": "client",
            }
            broadcast(CLIENTS, json.dumps(frame))
    finally:
        CLIENTS.discard(websocket)


async def main(port):
    async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=20, ping_timeout=30):
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    if "--uvloop" in sys.argv:
        import uvloop

        uvloop.install()
    asyncio.run(main(int(sys.argv[1])))
