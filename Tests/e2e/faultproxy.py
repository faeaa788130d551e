"""A TCP proxy on loopback that injects faults: it cuts each connection after a random number of bytes
and/or throttles it to a rate. It counts the bytes it forwards each way (`bytes_up`: client to server,
`bytes_down`). Runs its own asyncio loop in a background thread."""
import asyncio
import random
import socket
import threading


class FaultProxy:
    def __init__(self, target_port: int, cut_every: tuple[int, int] | None = None, rate: float | None = None,
                 seed: int = 1, max_cuts: int | None = None):
        self.target_port = target_port
        # After this many cuts, connections pass untouched (None: cut every connection that reaches its budget).
        self.max_cuts = max_cuts
        self.cut_every = cut_every
        self.rate = rate
        self.random = random.Random(seed)
        self.cuts = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.loop = asyncio.new_event_loop()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.ready = threading.Event()

    def __enter__(self):
        self.thread.start()
        self.ready.wait(5)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self.ready.set()
        try:
            self.loop.run_forever()
        finally:
            server.close()
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()

    async def _handle(self, client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        budget = [self.random.randint(*self.cut_every) if self.cut_every else None]
        done = asyncio.Event()

        async def pump(reader, writer, upstream: bool):
            try:
                while not done.is_set():
                    data = await reader.read(65536)
                    if not data:
                        break
                    if budget[0] is not None and (self.max_cuts is None or self.cuts < self.max_cuts):
                        budget[0] -= len(data)
                        if budget[0] <= 0:
                            self.cuts += 1
                            break
                    writer.write(data)
                    await writer.drain()
                    if upstream:
                        self.bytes_up += len(data)
                    else:
                        self.bytes_down += len(data)
                    if self.rate:
                        await asyncio.sleep(len(data) / self.rate)
            except (ConnectionError, OSError):
                pass
            finally:
                done.set()

        await asyncio.wait([asyncio.create_task(pump(client_reader, upstream_writer, True)),
                            asyncio.create_task(pump(upstream_reader, client_writer, False))],
                           return_when=asyncio.FIRST_COMPLETED)
        done.set()
        for writer in (client_writer, upstream_writer):
            try:
                writer.transport.abort()
            except Exception:
                pass
