"""The seed's admin commands, sent from WhatsApp by the channel's admin numbers (`WHAPI_ADMINS`
for the seed's channel): `assign <user>`, `unassign <user>`, `reply <user> <message>`,
`pause <user>`, `resume <user>`, `status <user>`. Each is answered with a one-line
confirmation; none reaches the bot."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.channels.outbound import queue_direct, store_reply
from app.channels.providers.base import InboundMessage
from app.conversations.transitions import Action, Actor, apply
from app.core.errors import AppError
from app.models import Author, Channel, Conversation, Mode

COMMAND = re.compile(
    r"^\s*(?P<verb>assign|unassign|reply|pause|resume|status)\s+(?P<user>\+?[\w-]+)"
    r"(?:\s+(?P<text>.+))?\s*$",
    re.IGNORECASE | re.DOTALL,
)
ACTIONS = {
    "assign": Action.ASSIGN,
    "unassign": Action.RELEASE,
    "pause": Action.PAUSE,
    "resume": Action.RESUME,
}


@dataclass(frozen=True)
class Command:
    verb: str
    user: str
    text: str | None


def normalize(number: str, country_code: str) -> str:
    """A number as conversations know it: no '+', spaces or dashes, no WhatsApp suffix, and
    a leading 0 replaced by the default country code."""
    value = re.sub(r"[\s+\-()]", "", number.split("@", 1)[0])
    return country_code + value[1:] if value.startswith("0") else value


def is_admin(channel: Channel, sender: str, country_code: str) -> bool:
    admins = {normalize(n, country_code) for n in channel.admin_numbers or []}
    return normalize(sender, country_code) in admins


def parse(text: str) -> Command | None:
    found = COMMAND.match(text)
    if found is None:
        return None
    verb = found.group("verb").lower()
    if verb == "reply" and not (found.group("text") or "").strip():
        return None
    return Command(verb, found.group("user"), (found.group("text") or "").strip() or None)


async def run(
    db: AsyncSession, channel: Channel, message: InboundMessage, country_code: str
) -> None:
    command = parse(message.text)
    assert command is not None  # noqa: S101 - the caller parsed it
    actor = Actor("admin_command", label=normalize(message.contact_id, country_code))
    target = normalize(command.user, country_code)
    conversation = await db.scalar(
        select(Conversation)
        .where(Conversation.channel_id == channel.id, Conversation.contact_id == target)
        .with_for_update()
    )
    if conversation is None:
        answer = f"{target}: no conversation with this number on this channel."
    else:
        try:
            answer = await _execute(db, conversation, command, actor)
        except AppError as error:
            answer = f"{target}: {error.message}"
    await queue_direct(db, channel, message.contact_id, answer)


async def _execute(
    db: AsyncSession, conversation: Conversation, command: Command, actor: Actor
) -> str:
    who = conversation.contact_id
    if command.verb == "status":
        assignee = "assigned" if conversation.assignee_user_id else "unassigned"
        return f"{who}: mode {conversation.mode}, {conversation.status}, {assignee}."
    if command.verb == "reply":
        assert command.text is not None  # noqa: S101 - parse() requires it
        if conversation.mode == Mode.BOT:
            await apply(db, conversation, Action.TAKEOVER, actor, reason="admin_command")
        await store_reply(db, conversation, command.text, author=Author.OPERATOR)
        return f"{who}: reply queued; the bot stays silent until unassign {who}."
    await apply(db, conversation, ACTIONS[command.verb], actor, reason="admin_command")
    return f"{who}: mode {conversation.mode} ({command.verb} done)."
