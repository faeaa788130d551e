"""Schemathesis hooks (loaded through SCHEMATHESIS_HOOKS): tus PATCH bodies are raw bytes."""
import schemathesis


@schemathesis.serializer("application/offset+octet-stream")
def raw_bytes(ctx, value):
    return value if isinstance(value, bytes) else str(value).encode()
