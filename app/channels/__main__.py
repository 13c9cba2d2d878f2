"""Channel secrets maintenance: `python -m app.channels rotate-keys`.

Re-encrypts every channel's token and app secret with the first CHANNEL_SECRETS_KEY. To rotate
the key: put a new key first in CHANNEL_SECRETS_KEY (keeping the old one after it), restart,
run this, then drop the old key. Prints how many channels were re-encrypted.
"""

from __future__ import annotations

import argparse
import asyncio

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.channels.secrets import SecretBox
from app.core.config import get_settings
from app.core.db import create_engine, create_sessionmaker
from app.models import Channel


async def rotate_keys(maker: async_sessionmaker[AsyncSession], box: SecretBox) -> int:
    """Re-encrypt every channel's secrets with the first key; how many channels."""
    count = 0
    async with maker() as db, db.begin():
        for channel in (await db.scalars(select(Channel).with_for_update())).all():
            channel.access_token_enc = box.rotate(channel.access_token_enc)
            if channel.app_secret_enc:
                channel.app_secret_enc = box.rotate(channel.app_secret_enc)
            count += 1
    return count


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.channels", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("rotate-keys", help="re-encrypt channel secrets with the first key")
    parser.parse_args(argv)
    settings = get_settings()
    engine = create_engine(settings)
    try:
        count = await rotate_keys(
            create_sessionmaker(engine), SecretBox(settings.CHANNEL_SECRETS_KEY)
        )
    finally:
        await engine.dispose()
    print(f"re-encrypted the secrets of {count} channels")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
