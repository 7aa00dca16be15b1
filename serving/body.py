"""A request's body as a replica reads it: within a size limit (413) and a deadline (408), and the plain ASGI
answers the app's Guard gives before FastAPI sees a request."""
import asyncio
import json

from serving.schema import Problem, RequestError, body_too_large

_TIMEOUTS = (TimeoutError, asyncio.TimeoutError)      # one class from Python 3.11, two before


async def read_body(request, limit: int, timeout_s: float) -> bytes:
    """The body, refusing (413) as soon as it passes `limit`: a chunked upload has no Content-Length to check
    up front, and reading a huge one whole would be the thing the limit is there to prevent. One not whole
    `timeout_s` after its headers gets 408: a client stalling mid-body held a request slot while its connection
    lived, and a few hundred of them froze the app (HAProxy's timeout covers only bodies within its buffer)."""
    chunks, size = [], [0]
    stream = request.stream()

    async def read() -> bool:           # True: past the limit
        async for chunk in stream:
            size[0] += len(chunk)
            if size[0] > limit:
                return True
            chunks.append(chunk)
        return False

    try:
        too_large = await _within(read(), timeout_s)
    except _TIMEOUTS:
        raise _closing(RequestError(408, [Problem(
            f"the request's body did not arrive within {timeout_s:g} s of its headers ({size[0]:,} byte(s) came; "
            "serve.body_timeout_s): send it at once")])) from None
    if too_large:
        # Read on and thrown away (see drain_limit), under a deadline of its own: a 413, however it ends.
        drained = [0]
        try:
            await _within(_discard(stream, drain_limit(limit) - size[0], drained), timeout_s)
            whole = drained[0] <= drain_limit(limit) - size[0]
        except _TIMEOUTS:
            whole = False
        error = RequestError(413, [Problem(body_too_large(size[0] + drained[0], limit, partial=True))])
        raise (error if whole else _closing(error))
    return b"".join(chunks)


async def _within(coroutine, timeout_s: float):
    """`coroutine`'s result, or TimeoutError after `timeout_s` (asyncio.timeout from Python 3.11; before it
    asyncio.wait_for, a task of its own)."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(timeout_s):
            return await coroutine
    return await asyncio.wait_for(coroutine, timeout_s)


def _closing(error: RequestError) -> RequestError:
    """`error` answered with `Connection: close`: the rest of its body is not read, and the connection is not
    left to a keep-alive timeout (HAProxy held a stalled client's for as long as it waited)."""
    error.close_connection = True
    return error


def drain_limit(limit: int) -> int:
    """How much of an oversized body is read and thrown away before answering 413. A client that sends its
    whole body before reading the answer (most do, without `Expect: 100-continue`) sees a connection reset
    instead of the 413 when the server stops reading early; past this much, a reset is the lesser evil."""
    return 2 * limit + 16 * 2**20


async def _discard(stream, budget: int, seen: list) -> None:
    async for chunk in stream:
        seen[0] += len(chunk)
        if seen[0] > budget:
            break


async def drain(receive) -> bool:
    """Read the rest of a body from ASGI `receive`: True once whole, False when the client went away."""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return False          # the client went away
        if not message.get("more_body"):
            return True


async def send_json(send, status: int, body: dict, headers: list = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})
