"""The providers, by `channels.provider`."""

from app.channels.providers.base import ChannelProvider
from app.channels.providers.meta_cloud import MetaCloudProvider
from app.channels.providers.whapi import WhapiProvider

PROVIDERS: dict[str, ChannelProvider] = {
    "meta_cloud": MetaCloudProvider(),
    "whapi": WhapiProvider(),
}
